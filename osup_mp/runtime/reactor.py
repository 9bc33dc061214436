"""The supervisor's event loop plumbing: one ``epoll`` wait over registered readers and
watches, a timer heap, the wake-ups hooks ask for, and the signal wakeup fd. The base of
the supervisor, split by concern: :mod:`.lifecycle` runs each child's process on top of
it, :mod:`.supervisor` runs the tree.

Decision: whatever the loop reacts to is a readable fd or a timer, signals included. A
handler does nothing; the signal number reaches the loop through a socketpair
(``signal.set_wakeup_fd``) and is acted on between two steps, so no tree code ever runs
inside a signal handler, half-way through a step.
"""

from __future__ import annotations

import selectors
import signal
import socket
import time
from collections.abc import Callable
from typing import Any

from osup_mp.lowlevel.proc import readable
from osup_mp.runtime.timers import Timers

__all__ = ["Reactor", "Reader"]

_HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

Reader = Callable[[], None]


class Reactor:
    """One wait over readers, watches, timers and signals. A subclass says what a signal
    does (:meth:`_on_signal`) and may add its own work at the end of a batch
    (:meth:`_end_batch`) and its own deadlines (:meth:`_next_timeout`)."""

    def __init__(self) -> None:
        self.selector = selectors.EpollSelector()  # never select(): fds above 1023
        self.timers = Timers()
        self._exit_readers: list[tuple[int, Reader]] = []
        self.after_events: list[Callable[[], None]] = []  # run once per loop wake-up
        # Seconds until a hook wants a wake-up (None: no wish), e.g. the control server's sweep.
        self.deadlines: list[Callable[[], float | None]] = []
        self._wakeup_r, self._wakeup_w = socket.socketpair()
        self._wakeup_r.setblocking(False)
        self._wakeup_w.setblocking(False)
        self.selector.register(self._wakeup_r, selectors.EVENT_READ, self._on_wakeup)

    # -- registration ------------------------------------------------------------------------

    def add_reader(self, fileobj: Any, callback: Reader, *, drain_on_exit: bool = False) -> None:
        """Call ``callback`` when ``fileobj`` is readable. ``drain_on_exit`` readers (the log
        relay) are also drained when a child exits, so its last lines precede the news."""
        self.selector.register(fileobj, selectors.EVENT_READ, callback)
        if drain_on_exit:
            fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
            self._exit_readers.append((fd, callback))

    def set_watch(self, fileobj: Any, reader: Reader | None, writer: Reader | None) -> None:
        """Watch ``fileobj`` for reading and/or writing (None: not that side; both None:
        not at all). Used by the control server, whose clients may stop reading."""
        events = (selectors.EVENT_READ if reader else 0) | (selectors.EVENT_WRITE if writer else 0)
        try:
            self.selector.get_key(fileobj)
            known = True
        except (KeyError, ValueError):
            known = False
        if not events:
            if known:
                self.selector.unregister(fileobj)
        elif known:
            self.selector.modify(fileobj, events, (reader, writer))
        else:
            self.selector.register(fileobj, events, (reader, writer))

    def writer_of(self, fileobj: Any) -> Reader | None:
        """The writer :meth:`set_watch` gave ``fileobj``, if any."""
        try:
            data = self.selector.get_key(fileobj).data
        except (KeyError, ValueError):
            return None
        return data[1] if type(data) is tuple else None

    def remove_reader(self, fileobj: Any) -> None:
        try:
            self.selector.unregister(fileobj)
        except (KeyError, ValueError):
            pass

    def install_signals(self) -> None:
        """Route SIGTERM/SIGINT/SIGHUP into the loop. Handlers do nothing themselves."""
        signal.set_wakeup_fd(self._wakeup_w.fileno(), warn_on_full_buffer=False)
        for sig in _HANDLED_SIGNALS:
            signal.signal(sig, _noop_handler)

    # -- the wait ----------------------------------------------------------------------------

    def _wait_once(self) -> None:
        for key, events in self.selector.select(self._next_timeout()):
            data = key.data
            if type(data) is tuple:  # from set_watch: (reader, writer)
                reader, writer = data
                if writer is not None and events & selectors.EVENT_WRITE:
                    writer()
                if reader is not None and events & selectors.EVENT_READ:
                    reader()
            else:
                data()
        self.timers.run_due(time.monotonic())
        self._end_batch()
        for hook in self.after_events:
            hook()

    def _next_timeout(self) -> float | None:
        """Seconds the wait may last: until the next timer or the nearest hook's wish."""
        timeout = self.timers.timeout(time.monotonic())
        for deadline in self.deadlines:
            nxt = deadline()
            if nxt is not None and (timeout is None or nxt < timeout):
                timeout = nxt
        return timeout

    def _end_batch(self) -> None:
        """The subclass's own work once a batch's events and timers have run, before the
        :attr:`after_events` hooks."""

    def _drain_exit_readers(self) -> None:
        """Drain the ``drain_on_exit`` readers that have something (a child has exited)."""
        for fd, drain in self._exit_readers:
            if readable(fd, 0):
                drain()

    # -- signals -----------------------------------------------------------------------------

    def _on_wakeup(self) -> None:
        try:
            data = self._wakeup_r.recv(64)
        except BlockingIOError:
            return
        for signum in data:
            self._on_signal(signum)

    def _on_signal(self, signum: int) -> None:
        """A handled signal came, in the loop's own time (:class:`.supervisor.Supervisor`)."""
        raise NotImplementedError

    def _leave_loop(self) -> None:
        """In a forked child: default signal actions, and the parent's wait closed (the
        child runs a loop of its own; the epoll instance is the parent's, shared by fork)."""
        for sig in _HANDLED_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)
        self._wakeup_r.close()
        self._wakeup_w.close()
        self.selector.close()


def _noop_handler(_signum: int, _frame: object) -> None:
    """Signals are read from the wakeup fd by the loop; the handler itself does nothing."""
