"""The root supervisor: fork, watch, restart and stop the component processes.

This is the parent process's only job; it holds no business logic. Semantics are OTP's:

* strategies ``one_for_one`` / ``one_for_all`` / ``rest_for_one``; restart types
  ``permanent`` / ``transient`` / ``temporary``;
* restart intensity: more than ``max_restarts`` restarts within ``max_seconds`` escalates —
  the tree stops in order and :meth:`Supervisor.run` returns non-zero, naming the child;
* ordered start (each child must report ready before the next starts) and reverse-ordered
  stop with SIGTERM, a per-child timeout, then SIGKILL.

Design decisions (after gunicorn's arbiter): one wait loop over child sentinels, child pipes,
registered readers (control socket, log relay) and the signal wakeup fd, so a death is seen
the moment it happens, never on a polling tick. Signal handlers do nothing; the wakeup fd
carries the signal numbers into the loop. Children are forked with an explicit ``fork``
context before any thread exists, close what belongs to the parent, and ask the kernel for
SIGTERM when the parent dies (plus EOF on their parent pipe as a second line of defence).
"""

from __future__ import annotations

import multiprocessing
import os
import select
import selectors
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterable
from multiprocessing.process import BaseProcess
from typing import Any

from loguru import logger

from osup_mp.config import Strategy
from osup_mp.runtime.calls import CallMux, ReplyCallback
from osup_mp.runtime.channel import Channel, channel_pair
from osup_mp.runtime.children import (
    Child,
    ChildSpec,
    ChildState,
    Escalation,
    Intensity,
    Restart,
    StartError,
)
from osup_mp.runtime.component import ComponentLoop
from osup_mp.runtime.procutil import describe_exit, set_parent_death_signal

__all__ = ["Child", "ChildSpec", "ChildState", "Restart", "StartError", "Supervisor"]

_FORK = multiprocessing.get_context("fork")
_HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


Reader = Callable[[], None]
CallHandler = Callable[[Child, Any], Any]


class Supervisor:
    """Owns the children and the parent's event loop."""

    def __init__(
        self,
        specs: Iterable[ChildSpec],
        *,
        strategy: Strategy = Strategy.ONE_FOR_ONE,
        max_restarts: int = 3,
        max_seconds: float = 5.0,
        child_setup: Callable[[str], None] | None = None,
    ) -> None:
        self.children: list[Child] = [Child(spec) for spec in specs]
        self.strategy = strategy
        self.intensity = Intensity(max_restarts, max_seconds)
        self.pid = os.getpid()
        self.started_at = time.monotonic()
        self.selector = selectors.EpollSelector()  # never select(): fds above 1023
        self.call_handlers: dict[str, CallHandler] = {}
        self._child_setup = child_setup
        self._closables: list[Callable[[], None]] = []  # what each child closes after fork
        self._idle_readers: list[tuple[int, Reader]] = []
        self.after_events: list[Callable[[], None]] = []  # run once per loop wake-up
        # Seconds until a hook wants a wake-up (None: no wish), e.g. the control server's sweep.
        self.deadlines: list[Callable[[], float | None]] = []
        self._stopping = False
        self._exit_code = 0
        self._wakeup_r, self._wakeup_w = socket.socketpair()
        self._wakeup_r.setblocking(False)
        self._wakeup_w.setblocking(False)
        self.selector.register(self._wakeup_r, selectors.EVENT_READ, self._on_wakeup)
        self._closables += [self._wakeup_r.close, self._wakeup_w.close, self.selector.close]

    # -- registration ------------------------------------------------------------------------

    def add_reader(self, fileobj: Any, callback: Reader, *, during_waits: bool = False) -> None:
        """Call ``callback`` when ``fileobj`` is readable. ``during_waits`` readers (the log
        relay) are also serviced while the supervisor blocks on a child's start or stop."""
        self.selector.register(fileobj, selectors.EVENT_READ, callback)
        if during_waits:
            fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
            self._idle_readers.append((fd, callback))

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

    def remove_reader(self, fileobj: Any) -> None:
        try:
            self.selector.unregister(fileobj)
        except (KeyError, ValueError):
            pass

    def close_in_children(self, close: Callable[[], None]) -> None:
        """``close()`` runs in every child right after fork (listening sockets, locks)."""
        self._closables.append(close)

    def child(self, name: str) -> Child | None:
        for c in self.children:
            if c.name == name:
                return c
        return None

    # -- lifecycle ---------------------------------------------------------------------------

    def install_signals(self) -> None:
        """Route SIGTERM/SIGINT/SIGHUP into the loop. Handlers do nothing themselves."""
        signal.set_wakeup_fd(self._wakeup_w.fileno(), warn_on_full_buffer=False)
        for sig in _HANDLED_SIGNALS:
            signal.signal(sig, _noop_handler)

    def start(self) -> None:
        """Start every child in order; on failure stop those started and raise StartError."""
        for child in self.children:
            try:
                self._start_child(child)
            except StartError:
                self.stop_all()
                raise

    def request_stop(self, code: int = 0) -> None:
        """Leave the loop after the current wake-up and stop the tree."""
        self._stopping = True
        self._exit_code = max(self._exit_code, code)

    def run(self) -> int:
        """Serve until stopped; stop all children; return the exit status."""
        while not self._stopping:
            timeout = self._next_timeout()
            for key, events in self.selector.select(timeout):
                data = key.data
                if type(data) is tuple:  # from set_watch: (reader, writer)
                    reader, writer = data
                    if writer is not None and events & selectors.EVENT_WRITE:
                        writer()
                    if reader is not None and events & selectors.EVENT_READ:
                        reader()
                else:
                    data()
                if self._stopping:
                    break
            self._expire_and_flush()
            for hook in self.after_events:
                hook()
        self.stop_all()
        return self._exit_code

    def stop_all(self) -> None:
        """Stop every child, last started first."""
        self._stopping = True
        for child in reversed(self.children):
            self._stop_child(child)

    # -- dynamic children --------------------------------------------------------------------

    def start_child(self, spec: ChildSpec) -> Child:
        if self.child(spec.name) is not None:
            raise StartError(f"{spec.name}: already exists")
        child = Child(spec)
        self.children.append(child)
        try:
            self._start_child(child)
        except StartError:
            self.children.remove(child)
            raise
        return child

    def terminate_child(self, name: str) -> None:
        """Stop a child and forget it (OTP's terminate_child + delete_child)."""
        child = self.child(name)
        if child is None:
            raise KeyError(name)
        self._stop_child(child)
        self.children.remove(child)

    def restart_child(self, name: str) -> Child:
        """Operator restart: stop and start one child; not counted against intensity."""
        child = self.child(name)
        if child is None:
            raise KeyError(name)
        self._stop_child(child)
        try:
            self._start_child(child)
        except StartError as exc:
            logger.error("{}", exc)
            try:
                self._restart_after_failure(child)
            except Escalation as esc:
                logger.critical("{}", esc)
                self.request_stop(1)
            raise
        return child

    def call_child(
        self, name: str, request: Any, callback: ReplyCallback, timeout: float = 5.0
    ) -> bool:
        """Asynchronous call to a running child; False if it is not running."""
        child = self.child(name)
        if child is None or child.mux is None or child.state is not ChildState.RUNNING:
            return False
        child.mux.call_async(request, callback, timeout)
        return True

    # -- starting and stopping one child -----------------------------------------------------

    def _start_child(self, child: Child) -> None:
        parent_end, child_end = channel_pair()
        child.state = ChildState.STARTING
        proc = _FORK.Process(
            target=self._child_main,
            args=(child, child_end, parent_end),
            name=child.name,
            daemon=False,
        )
        proc.start()
        child_end.close()
        child.process, child.channel, child.pid = proc, parent_end, proc.pid
        child.mux = CallMux(parent_end, child.name)
        ok, detail = self._wait_ready(child)
        if not ok:
            self._stop_child(child)
            child.last_exit = detail
            raise StartError(f"{child.name}: failed to start: {detail}")
        child.state = ChildState.RUNNING
        child.started_at = time.monotonic()
        # Callbacks bind the process too: a stale event must not hit a restarted child.
        self.selector.register(
            proc.sentinel, selectors.EVENT_READ, lambda: self._on_exit(child, proc)
        )
        self.selector.register(
            parent_end.fileno(), selectors.EVENT_READ, lambda: self._on_message(child, proc)
        )
        logger.info("started {} (pid {})", child.name, child.pid)

    def _wait_ready(self, child: Child) -> tuple[bool, str]:
        assert child.process is not None and child.channel is not None
        deadline = time.monotonic() + child.spec.start_timeout
        sentinel = child.process.sentinel
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False, f"not ready after {child.spec.start_timeout:g}s"
            ready = self._wait_fds([child.channel.fileno(), sentinel], remaining)
            if child.channel.fileno() in ready:
                outcome = self._handle_messages(child, starting=True)
                if outcome is not None:
                    return outcome
            if sentinel in ready or child.channel.closed:
                child.process.join(1.0)
                return False, describe_exit(child.process.exitcode)

    def _wait_fds(self, fds: list[int], timeout: float) -> set[int]:
        """Wait for ``fds`` to be readable while servicing the during-waits readers (poll:
        descriptors above 1023 are fine)."""
        idle = {fd: cb for fd, cb in self._idle_readers}
        poller = select.poll()
        for fd in {*fds, *idle}:
            poller.register(fd, select.POLLIN)
        while True:
            try:
                ready = poller.poll(max(0.0, timeout) * 1000)
            except InterruptedError:
                continue
            hits = {fd for fd, _events in ready}
            for fd in hits & idle.keys():
                idle[fd]()
            return hits & set(fds)

    def _stop_child(self, child: Child) -> None:
        proc = child.process
        if proc is None:
            child.state = ChildState.STOPPED
            return
        child.state = ChildState.STOPPING
        self._forget_fds(child)
        if proc.exitcode is None:
            _signal(proc, signal.SIGTERM)
            deadline = time.monotonic() + child.spec.shutdown_timeout
            while proc.exitcode is None and time.monotonic() < deadline:
                self._wait_fds([proc.sentinel], deadline - time.monotonic())
                proc.join(0)
            if proc.exitcode is None:
                logger.warning(
                    "{} did not stop within {:g}s: SIGKILL", child.name, child.spec.shutdown_timeout
                )
                _signal(proc, signal.SIGKILL)
                proc.join(5.0)
        self._drain_idle()
        child.last_exit = describe_exit(proc.exitcode)
        logger.info("stopped {} (pid {}, {})", child.name, child.pid, child.last_exit)
        self._release(child)

    def _forget_fds(self, child: Child) -> None:
        if child.process is not None:
            self.remove_reader(child.process.sentinel)
        if child.channel is not None:
            self.remove_reader(child.channel.fileno())

    def _release(self, child: Child) -> None:
        if child.mux is not None:
            child.mux.fail_all(f"{child.name} exited")
        if child.channel is not None:
            child.channel.close()
        if child.process is not None:
            child.process.close()
        child.process = child.channel = child.mux = None
        child.pid = None
        child.state = ChildState.STOPPED

    def _drain_idle(self) -> None:
        for fd, callback in self._idle_readers:
            if readable_now(fd):
                callback()

    # -- inside the forked child -------------------------------------------------------------

    def _child_main(self, child: Child, channel: Channel, parent_end: Channel) -> None:
        set_parent_death_signal(signal.SIGTERM)
        if os.getppid() != self.pid:
            os._exit(1)  # the parent died between fork and prctl
        try:
            self._detach_from_parent(child, parent_end)
            component = child.spec.factory()
        except Exception as exc:
            channel.send_now(("init_failed", f"{type(exc).__name__}: {exc}"))
            sys.exit(1)
        sys.exit(ComponentLoop(component, child.name, channel).run())

    def _detach_from_parent(self, child: Child, parent_end: Channel) -> None:
        """In a new child: drop the parent's signal set-up and every parent-only resource."""
        for sig in _HANDLED_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)
        parent_end.close()  # or EOF would never reach us when the parent dies
        for other in self.children:
            if other.channel is not None:
                other.channel.close()
            if other.process is not None:
                # multiprocessing cleared its finalizers in this child: closing is safe.
                os.close(other.process.sentinel)
        for close in self._closables:
            close()
        if self._child_setup is not None:
            self._child_setup(child.name)

    # -- the loop's event handlers -----------------------------------------------------------

    def _on_wakeup(self) -> None:
        try:
            data = self._wakeup_r.recv(64)
        except BlockingIOError:
            return
        for signum in data:
            if signum in (signal.SIGTERM, signal.SIGINT):
                if not self._stopping:
                    logger.info("received {}: stopping", signal.Signals(signum).name)
                self.request_stop()
            elif signum == signal.SIGHUP:
                logger.info("received SIGHUP: ignored (restart the tree to reload config)")

    def _on_exit(self, child: Child, proc: BaseProcess) -> None:
        if child.process is not proc:
            return
        proc.join(0.5)
        # Replies still in the pipe (e.g. an error for a call in flight) are delivered first.
        self._on_message(child, proc)
        code = proc.exitcode
        detail = describe_exit(code)
        pid = child.pid
        self._forget_fds(child)
        self._release(child)
        child.last_exit = detail
        if self._stopping:
            return
        normal = code == 0
        restart = child.spec.restart is Restart.PERMANENT or (
            child.spec.restart is Restart.TRANSIENT and not normal
        )
        log = logger.info if normal else logger.error
        log("{} (pid {}) {}", child.name, pid, detail)
        if not restart:
            if child.spec.restart is Restart.TEMPORARY:
                self.children.remove(child)
            return
        try:
            self._restart_after_failure(child)
        except Escalation as exc:
            logger.critical("{}", exc)
            self.request_stop(1)

    def _restart_after_failure(self, failed: Child) -> None:
        while True:
            if self.intensity.exceeded(time.monotonic()):
                raise Escalation(
                    f"restart intensity exceeded: {failed.name} failed more than "
                    f"{self.intensity.max_restarts} times in {self.intensity.max_seconds:g}s; "
                    "stopping the tree"
                )
            try:
                self._apply_strategy(failed)
                return
            except StartError as exc:
                logger.error("{}", exc)

    def _apply_strategy(self, failed: Child) -> None:
        if self.strategy is Strategy.ONE_FOR_ONE:
            group = [failed]
        elif self.strategy is Strategy.ONE_FOR_ALL:
            group = list(self.children)
        else:
            group = self.children[self.children.index(failed) :]
        for child in reversed(group):
            if child is not failed:
                self._stop_child(child)
                if child.spec.restart is Restart.TEMPORARY:
                    self.children.remove(child)  # OTP: temporary siblings are not restarted
                    group.remove(child)
        for child in group:
            if child.state is ChildState.STOPPED:
                child.restarts += 1
                self._start_child(child)

    def _on_message(self, child: Child, proc: BaseProcess) -> None:
        if child.process is proc:
            self._handle_messages(child, starting=False)

    def _handle_messages(self, child: Child, *, starting: bool) -> tuple[bool, str] | None:
        """Serve what ``child`` sent; while starting, return its ready/failed outcome."""
        channel, mux = child.channel, child.mux
        if channel is None or mux is None:
            return None
        outcome: tuple[bool, str] | None = None
        for msg in mux.dispatch(channel.receive()):
            kind = msg[0]
            if kind == "call":
                self._answer(child, msg[1], msg[2])
            elif starting and kind == "ready":
                outcome = (True, "")
            elif starting and kind == "init_failed":
                outcome = (False, str(msg[1]))
        channel.flush()
        return outcome

    def _answer(self, child: Child, call_id: int, request: Any) -> None:
        assert child.channel is not None
        kind = request[0] if isinstance(request, tuple) and request else request
        if kind == "connect":
            self._broker(child, call_id, request[1])
            return
        if kind == "which_children":
            value: Any = [(c.name, c.pid) for c in self.children if c.pid]
            child.channel.send(("reply", call_id, True, value))
            return
        handler = self.call_handlers.get(str(kind))
        if handler is None:
            child.channel.send(("reply", call_id, False, f"supervisor: unknown call {kind!r}"))
            return
        try:
            value = handler(child, request)
        except Exception as exc:  # a bad request must never take the parent down
            child.channel.send(("reply", call_id, False, f"{type(exc).__name__}: {exc}"))
        else:
            child.channel.send(("reply", call_id, True, value))

    def _broker(self, caller: Child, call_id: int, name: str) -> None:
        """Hand ``caller`` and component ``name`` the two ends of a fresh pipe."""
        assert caller.channel is not None
        target = self.child(name)
        if target is None or target.channel is None or target.state is not ChildState.RUNNING:
            caller.channel.send(("reply", call_id, False, f"{name}: not running"))
            return
        a, b = socket.socketpair()
        try:
            target.channel.send_with_fds(("peer", caller.name), [b.fileno()])
            caller.channel.send_with_fds(("reply", call_id, True, name), [a.fileno()])
        finally:
            a.close()
            b.close()

    def _next_timeout(self) -> float | None:
        timeout: float | None = None
        for deadline in self.deadlines:
            nxt = deadline()
            if nxt is not None and (timeout is None or nxt < timeout):
                timeout = nxt
        for child in self.children:
            if child.mux is not None and child.mux.in_flight:
                nxt = child.mux.expire()
                if nxt is not None and (timeout is None or nxt < timeout):
                    timeout = max(0.0, nxt)
        return timeout

    def _expire_and_flush(self) -> None:
        for child in self.children:
            if child.channel is not None and child.channel.pending_output:
                child.channel.flush()


def readable_now(fd: int) -> bool:
    """``fd`` has input (or EOF) waiting; poll, so any descriptor number works."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


def _noop_handler(_signum: int, _frame: object) -> None:
    """Signals are read from the wakeup fd by the loop; the handler itself does nothing."""


def _signal(proc: BaseProcess, sig: int) -> None:
    if proc.pid is not None:
        try:
            os.kill(proc.pid, sig)
        except ProcessLookupError:
            pass
