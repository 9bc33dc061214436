"""The life of each child process as the supervisor runs it: fork, ready or a start
timeout, SIGTERM then SIGKILL, its exit, and everything it held released; and, in the new
process, the parent's resources dropped before the component is built. The middle of the
supervisor, split by concern: :mod:`.reactor` below it waits, :mod:`.supervisor` above it
decides what a start, a stop or an exit means for the tree; the calls a child makes to the
tree go to :mod:`.brokering`.

Decision: the two primitives, :meth:`ChildLifecycle._start` and :meth:`ChildLifecycle._stop`,
are valid in every state (a start waits for a stop in progress, a stop of a stopped child is
done at once), so the tree's sequences compose them without looking at states; each ends in
a callback, and every wait in between is a pidfd, a pipe or a timer of the one loop.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable
from multiprocessing.process import BaseProcess

from loguru import logger

from osup_mp.lowlevel.proc import (
    REAP_RETRY,
    Strays,
    describe_exit,
    set_parent_death_signal,
    set_title,
)
from osup_mp.runtime.brokering import CallBroker, CallHandler
from osup_mp.runtime.calls import CallMux
from osup_mp.runtime.channel import Channel, channel_pair
from osup_mp.runtime.children import Child, ChildSpec, ChildState, Started, Stopped
from osup_mp.runtime.loop import ComponentLoop
from osup_mp.runtime.reactor import Reactor
from osup_mp.runtime.timers import Timer

__all__ = ["ChildLifecycle"]

_FORK = multiprocessing.get_context("fork")


class ChildLifecycle(Reactor):
    """The children and their processes; see the module docstring."""

    def __init__(
        self, specs: Iterable[ChildSpec], child_setup: Callable[[str], None] | None
    ) -> None:
        super().__init__()
        self.children: list[Child] = [Child(spec) for spec in specs]
        self.pid = os.getpid()
        #: Request type -> handler, for calls children make to the tree (e.g. a fatal error).
        self.call_handlers: dict[type, CallHandler] = {}
        self._calls = CallBroker(self.children, self.call_handlers)
        self._child_setup = child_setup
        self._closables: list[Callable[[], None]] = []  # what each child closes after fork
        self._stopping = False  # the tree is stopping: no start begins any more
        self._strays = Strays()  # what dead children left, killed, reaped as it dies
        self._reaping: Timer | None = None  # the next pass over them

    def close_in_children(self, close: Callable[[], None]) -> None:
        """``close()`` runs in every child right after fork (listening sockets, locks)."""
        self._closables.append(close)

    def child(self, name: str) -> Child | None:
        for c in self.children:
            if c.name == name:
                return c
        return None

    # -- the two primitives: valid in every state, so sequences compose ------------------

    def _start(self, child: Child, done: Started) -> None:
        if self._stopping:
            done(False, f"{child.name}: not started: the tree is stopping")
        elif child.state is ChildState.RUNNING:
            done(True, "")
        elif child.state is ChildState.STARTING:
            child.on_started.append(done)
        elif child.state is ChildState.STOPPING:
            child.on_stopped.append(lambda: self._start(child, done))
        else:
            child.on_started.append(done)
            self._fork(child)

    def _stop(self, child: Child, done: Stopped) -> None:
        if child.state is ChildState.STOPPED:
            done()
            return
        child.on_stopped.append(done)
        if child.state is ChildState.STOPPING:
            return
        child.move(ChildState.STOPPING)
        proc = child.process
        assert proc is not None
        _signal(proc, signal.SIGTERM)
        child.timer = self.timers.at(
            time.monotonic() + child.spec.shutdown_timeout, lambda: self._kill(child, proc)
        )

    def _kill(self, child: Child, proc: BaseProcess) -> None:
        if child.process is proc:
            logger.warning(
                "{} did not stop within {:g}s: SIGKILL", child.name, child.spec.shutdown_timeout
            )
            _signal(proc, signal.SIGKILL)

    def _kill_all(self) -> None:
        for child in self.children:
            if child.process is not None and child.process.exitcode is None:
                _signal(child.process, signal.SIGKILL)
                child.process.join(5.0)

    # -- a start: fork, then ready or a timeout ----------------------------------------------

    def _fork(self, child: Child) -> None:
        parent_end, child_end = channel_pair()
        child.move(ChildState.STARTING)
        child.start_failure = ""
        proc = _FORK.Process(
            target=self._child_main,
            args=(child, child_end, parent_end),
            name=child.name,
            daemon=False,
        )
        try:
            proc.start()
        except OSError as exc:  # out of processes or memory: a failed start, not a crash
            parent_end.close()
            child_end.close()
            child.move(ChildState.STOPPED)
            child.last_exit = child.start_failure = f"fork failed: {exc}"
            waiting, child.on_started = child.on_started, []
            for done in waiting:
                done(False, f"{child.name}: failed to start: fork failed: {exc}")
            return
        child_end.close()
        assert proc.pid is not None  # started
        child.process, child.channel, child.pid = proc, parent_end, proc.pid
        child.mux = CallMux(parent_end, child.name)
        # A pidfd, not the process's sentinel pipe: the pipe reads EOF as the process closes
        # its files, a step before it can be reaped, so the loop had to wait there; a pidfd
        # is readable once it can be. Nobody else reaps the child: its pid stays its own.
        child.exit_fd = os.pidfd_open(child.pid)
        # Callbacks bind the process too: a stale event must not hit a restarted child.
        self.add_reader(child.exit_fd, lambda: self._on_exit(child, proc))
        self.add_reader(parent_end.fileno(), lambda: self._on_message(child, proc))
        child.timer = self.timers.at(
            time.monotonic() + child.spec.start_timeout, lambda: self._start_timeout(child, proc)
        )

    def _start_timeout(self, child: Child, proc: BaseProcess) -> None:
        if child.process is proc and child.state is ChildState.STARTING:
            child.start_failure = f"not ready after {child.spec.start_timeout:g}s"
            self._stop(child, lambda: None)

    def _on_ready(self, child: Child) -> None:
        child.move(ChildState.RUNNING)
        child.started_at = time.monotonic()
        logger.info("started {} (pid {})", child.name, child.pid)
        waiting, child.on_started = child.on_started, []
        for done in waiting:
            done(True, "")

    def _on_message(self, child: Child, proc: BaseProcess) -> None:
        """Serve what ``child`` sent: calls to the supervisor, and its ready / init_failed."""
        channel, mux = child.channel, child.mux
        if child.process is not proc or channel is None or mux is None:
            return
        for msg in mux.dispatch(channel.receive()):
            kind = msg[0]
            if kind == "call":
                self._calls.answer(child, msg[1], msg[2], msg[3] if len(msg) > 3 else [])
            elif kind == "ready" and child.state is ChildState.STARTING:
                self._on_ready(child)
            elif kind == "init_failed":
                child.start_failure = str(msg[1])
        self._flush(child)

    # -- an exit -----------------------------------------------------------------------------

    def _on_exit(self, child: Child, proc: BaseProcess) -> None:
        if child.process is not proc:
            return
        proc.join()  # at once: the pidfd says it has exited
        # Replies still in the pipe (e.g. an error for a call in flight) are delivered first.
        self._on_message(child, proc)
        self._drain_exit_readers()
        was, pid, code = child.state, child.pid, proc.exitcode
        detail = child.start_failure or describe_exit(code)
        self._release(child)
        self._kill_strays(child)
        child.last_exit = detail
        waiting, child.on_started = child.on_started, []
        stopped, child.on_stopped = child.on_stopped, []
        if was is ChildState.STOPPING:
            logger.info("stopped {} (pid {}, {})", child.name, pid, detail)
        elif was is ChildState.RUNNING:
            self._on_unexpected_exit(child, pid, code, detail)
            if child.state is ChildState.STARTING:
                # Those waiting for a dead child (see .brokering) wait for its restart.
                child.on_started += waiting
                waiting = []
        for started in waiting:
            started(False, f"{child.name}: failed to start: {detail}")
        for done in stopped:
            done()

    def _on_unexpected_exit(
        self, child: Child, pid: int | None, code: int | None, why: str
    ) -> None:
        """A running child exited unasked: restart it, or not (:class:`.supervisor.Supervisor`)."""
        raise NotImplementedError

    def _release(self, child: Child) -> None:
        if child.exit_fd is not None:
            self.remove_reader(child.exit_fd)
            os.close(child.exit_fd)
            child.exit_fd = None
        if child.channel is not None:
            self.remove_reader(child.channel.fileno())
        if child.mux is not None:
            child.mux.fail_all(f"{child.name} exited")
        if child.channel is not None:
            child.channel.close()
        if child.process is not None and child.process.exitcode is not None:
            child.process.close()  # it raises for a process not reaped (by us)
        child.process = child.channel = child.mux = None
        child.pid = None
        child.move(ChildState.STOPPED)

    def _kill_strays(self, dead: Child) -> None:
        """Kill what ``dead`` left behind: as a subreaper the supervisor inherits it."""
        killed = self._strays.kill(spare={c.pid for c in self.children if c.pid}, grace=0.2)
        self._reap_strays()
        if killed:
            logger.warning(
                "{} left {} process(es) behind: killed pids {}",
                dead.name,
                len(killed),
                ", ".join(map(str, killed)),
            )

    def _reap_strays(self) -> None:
        if self._strays.reap() and (self._reaping is None or self._reaping.cancelled):
            self._reaping = self.timers.at(time.monotonic() + REAP_RETRY, self._reap_strays)

    # -- the children's pipes in the loop ----------------------------------------------------

    def _next_timeout(self) -> float | None:
        # Calls to children expire here, before each wait: each CallMux keeps its own heap
        # of deadlines, and a wait must not outlast the nearest.
        timeout = super()._next_timeout()
        for child in self.children:
            if child.mux is not None and child.mux.in_flight:
                nxt = child.mux.expire()
                if nxt is not None and (timeout is None or nxt < timeout):
                    timeout = max(0.0, nxt)
        return timeout

    def _end_batch(self) -> None:
        # Replies and casts a batch queued go out once per child, not once per message.
        for child in self.children:
            if child.channel is not None and child.channel.pending_output:
                self._flush(child)

    def _flush(self, child: Child) -> None:
        """Write what ``child``'s channel holds. What its full socket does not take (a large
        request, or a child that is not reading) leaves when the socket is writable again:
        waiting for the loop's next event instead stalled a large request for seconds."""
        channel, proc = child.channel, child.process
        if channel is None or proc is None or channel.flush():
            return
        fd = channel.fileno()
        if self.writer_of(fd) is not None:
            return

        def reader() -> None:
            self._on_message(child, proc)

        def writable() -> None:
            if channel.flush() and child.channel is channel and not channel.closed:
                self.set_watch(fd, reader, None)

        self.set_watch(fd, reader, writable)

    # -- inside the forked child -------------------------------------------------------------

    def _child_main(self, child: Child, channel: Channel, parent_end: Channel) -> None:
        set_parent_death_signal(signal.SIGTERM)
        if os.getppid() != self.pid:
            os._exit(1)  # the parent died between fork and prctl
        set_title(f"osup-mp: {child.name}")
        try:
            self._detach_from_parent(child, parent_end)
            component = child.spec.factory()
        except Exception as exc:
            channel.send_now(("init_failed", f"{type(exc).__name__}: {exc}"))
            sys.exit(1)
        sys.exit(ComponentLoop(component, child.name, channel).run())

    def _detach_from_parent(self, child: Child, parent_end: Channel) -> None:
        """In a new child: drop the parent's signal set-up and every parent-only resource."""
        self._leave_loop()
        parent_end.close()  # or EOF would never reach us when the parent dies
        for other in self.children:
            if other.channel is not None:
                other.channel.close()
            if other.process is not None:
                # multiprocessing cleared its finalizers in this child: closing is safe.
                os.close(other.process.sentinel)
            if other.exit_fd is not None:
                os.close(other.exit_fd)
        for close in self._closables:
            close()
        if self._child_setup is not None:
            self._child_setup(child.name)


def _signal(proc: BaseProcess, sig: int) -> None:
    if proc.pid is not None:
        try:
            os.kill(proc.pid, sig)
        except ProcessLookupError:
            pass
