"""The root supervisor: fork, watch, restart and stop the component processes.

This is the parent process's only job; it holds no business logic. Semantics are OTP's:

* strategies ``one_for_one`` / ``one_for_all`` / ``rest_for_one``; restart types
  ``permanent`` / ``transient`` / ``temporary``;
* restart intensity: more than ``max_restarts`` restarts within ``max_seconds`` escalates —
  the tree stops in order and :meth:`Supervisor.run` returns non-zero, naming the child;
* ordered start (each child reports ready before the next starts) and reverse-ordered stop
  with SIGTERM, a per-child timeout, then SIGKILL.

The one decision: the loop never blocks on a child. Starting and stopping are steps of the
one wait loop (gunicorn's arbiter: child pidfds, child pipes, registered readers and the
signal wakeup fd), each child has a state (:class:`ChildState`) and its start timeout or
SIGKILL deadline is a timer; an operation's continuation is a callback. So ``status``, other
commands and other children's deaths are served while a slow child starts or stops.
"""

from __future__ import annotations

import multiprocessing
import os
import selectors
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterable
from multiprocessing.process import BaseProcess
from typing import Any

from loguru import logger

from osup_mp.lowlevel.proc import (
    become_subreaper,
    describe_exit,
    kill_descendants,
    readable,
    set_parent_death_signal,
    set_title,
)
from osup_mp.runtime.calls import CallMux, ReplyCallback
from osup_mp.runtime.channel import Channel, channel_pair
from osup_mp.runtime.children import (
    Child,
    ChildSpec,
    ChildState,
    Intensity,
    Restart,
    Started,
    StartError,
    Stopped,
    Strategy,
)
from osup_mp.runtime.loop import ComponentLoop
from osup_mp.runtime.messages import Connect, WhichChildren
from osup_mp.runtime.timers import Timers

__all__ = ["Child", "ChildSpec", "ChildState", "Restart", "StartError", "Strategy", "Supervisor"]

_FORK = multiprocessing.get_context("fork")
_HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


Reader = Callable[[], None]
Reply = Callable[[bool, Any], None]
#: Serves a child's call to the tree, answering through ``reply`` at once or later (starting
#: a shadow takes seconds, and the loop must not wait for it).
CallHandler = Callable[[Child, Any, Reply], None]


class Supervisor:
    """Owns the children and the parent's event loop."""

    def __init__(
        self,
        specs: Iterable[ChildSpec],
        *,
        strategy: str = Strategy.ONE_FOR_ONE,
        max_restarts: int = 3,
        max_seconds: float = 5.0,
        child_setup: Callable[[str], None] | None = None,
    ) -> None:
        self.children: list[Child] = [Child(spec) for spec in specs]
        self.strategy = Strategy(strategy)
        self.intensity = Intensity(max_restarts, max_seconds)
        self.pid = os.getpid()
        self.started_at = time.monotonic()
        self.selector = selectors.EpollSelector()  # never select(): fds above 1023
        self.timers = Timers()
        #: Request type -> handler, for calls children make to the tree (e.g. a fatal error).
        self.call_handlers: dict[type, CallHandler] = {}
        self.start_failure: str | None = None  # why the tree's ordered start failed
        self._child_setup = child_setup
        self._closables: list[Callable[[], None]] = []  # what each child closes after fork
        self._exit_readers: list[tuple[int, Reader]] = []
        self.after_events: list[Callable[[], None]] = []  # run once per loop wake-up
        # Seconds until a hook wants a wake-up (None: no wish), e.g. the control server's sweep.
        self.deadlines: list[Callable[[], float | None]] = []
        self._stopping = False
        self._up = False  # the ordered start has completed
        self._finished = False
        self._exit_code = 0
        self._wakeup_r, self._wakeup_w = socket.socketpair()
        self._wakeup_r.setblocking(False)
        self._wakeup_w.setblocking(False)
        self.selector.register(self._wakeup_r, selectors.EVENT_READ, self._on_wakeup)
        self._closables += [self._wakeup_r.close, self._wakeup_w.close, self.selector.close]

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

    # -- the loop ----------------------------------------------------------------------------

    @property
    def phase(self) -> str:
        """The tree's own state: "starting" until the ordered start is done, then "running",
        "stopping" once a stop began."""
        if self._stopping:
            return "stopping"
        return "running" if self._up else "starting"

    def install_signals(self) -> None:
        """Route SIGTERM/SIGINT/SIGHUP into the loop. Handlers do nothing themselves."""
        signal.set_wakeup_fd(self._wakeup_w.fileno(), warn_on_full_buffer=False)
        for sig in _HANDLED_SIGNALS:
            signal.signal(sig, _noop_handler)

    def run(self, on_started: Callable[[], None] | None = None) -> int:
        """Start every child in order, serve until stopped, stop every child in reverse
        order; return the exit status. ``on_started()`` is called once all are ready; if the
        start fails, :attr:`start_failure` says why once this returns."""

        def started(ok: bool, detail: str) -> None:
            if ok:
                self._up = True
                if on_started is not None:
                    on_started()
            elif not self._stopping:
                self.start_failure = detail
                self.request_stop(1)

        # Orphans of a dead component (an agent whose manager was SIGKILLed) come to us.
        become_subreaper()
        try:
            self._start_in_order(list(self.children), started)
            while not self._finished:
                self._wait_once()
        except BaseException:
            # A bug in the loop: no child may outlive it (and multiprocessing's exit
            # handler would wait for them for ever).
            self._kill_all()
            raise
        return self._exit_code

    def _kill_all(self) -> None:
        for child in self.children:
            if child.process is not None and child.process.exitcode is None:
                _signal(child.process, signal.SIGKILL)
                child.process.join(5.0)

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
        self._flush_channels()
        for hook in self.after_events:
            hook()

    def request_stop(self, code: int = 0) -> None:
        """Stop the tree (last started first); the loop ends when every child is stopped."""
        self._exit_code = max(self._exit_code, code)
        if self._stopping:
            return
        self._stopping = True

        def finished() -> None:
            self._finished = True

        self._stop_in_reverse(list(self.children), finished)

    # -- operations on children: each ends in a callback, never in a wait ------------------

    def start_child(self, spec: ChildSpec, done: Started) -> None:
        """Add and start a dynamic child; a child that fails to start is forgotten."""
        if self.child(spec.name) is not None:
            done(False, f"{spec.name}: already exists")
            return
        child = Child(spec)
        self.children.append(child)

        def started(ok: bool, detail: str) -> None:
            if not ok and child in self.children and child.state is ChildState.STOPPED:
                self.children.remove(child)
            done(ok, detail)

        self._start(child, started)

    def terminate_child(self, name: str, done: Stopped) -> None:
        """Stop a child and forget it (OTP's terminate_child + delete_child)."""
        child = self.child(name)
        if child is None:
            raise KeyError(name)

        def stopped() -> None:
            if child in self.children:
                self.children.remove(child)
            done()

        self._stop(child, stopped)

    def restart_child(self, name: str, done: Started) -> None:
        """Operator restart: stop and start one child; not counted against intensity unless
        the new start fails."""
        child = self.child(name)
        if child is None:
            raise KeyError(name)

        def started(ok: bool, detail: str) -> None:
            if not ok:
                logger.error("{}", detail)
                self._restart_after_failure(child)
            done(ok, detail)

        self._stop(child, lambda: self._start(child, started))

    def call_child(
        self, name: str, request: Any, callback: ReplyCallback, timeout: float = 5.0
    ) -> bool:
        """Asynchronous call to a running child; False if it is not running."""
        child = self.child(name)
        if child is None or child.mux is None or child.state is not ChildState.RUNNING:
            return False
        child.mux.call_async(request, callback, timeout)
        return True

    def _start_in_order(self, group: list[Child], done: Started) -> None:
        """Start ``group`` one after the other; the first failure ends the sequence."""

        def step(index: int) -> None:
            if index == len(group):
                done(True, "")
                return
            self._start(group[index], lambda ok, why: step(index + 1) if ok else done(ok, why))

        step(0)

    def _stop_in_reverse(self, group: list[Child], done: Stopped) -> None:
        def step(index: int) -> None:
            if index < 0:
                done()
            else:
                self._stop(group[index], lambda: step(index - 1))

        step(len(group) - 1)

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
        self.selector.register(
            child.exit_fd, selectors.EVENT_READ, lambda: self._on_exit(child, proc)
        )
        self.selector.register(
            parent_end.fileno(), selectors.EVENT_READ, lambda: self._on_message(child, proc)
        )
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

    def _on_exit(self, child: Child, proc: BaseProcess) -> None:
        if child.process is not proc:
            return
        proc.join()  # at once: the pidfd says it has exited
        # Replies still in the pipe (e.g. an error for a call in flight) are delivered first.
        self._on_message(child, proc)
        for fd, drain in self._exit_readers:
            if readable(fd, 0):
                drain()
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
                # Those waiting for a dead child (see _broker) wait for its restart.
                child.on_started += waiting
                waiting = []
        for started in waiting:
            started(False, f"{child.name}: failed to start: {detail}")
        for done in stopped:
            done()

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
        killed = kill_descendants(spare={c.pid for c in self.children if c.pid}, grace=0.2)
        if killed:
            logger.warning(
                "{} left {} process(es) behind: killed pids {}",
                dead.name,
                len(killed),
                ", ".join(map(str, killed)),
            )

    # -- restarts ----------------------------------------------------------------------------

    def _on_unexpected_exit(
        self, child: Child, pid: int | None, code: int | None, why: str
    ) -> None:
        normal = code == 0
        (logger.info if normal else logger.error)("{} (pid {}) {}", child.name, pid, why)
        if self._stopping:
            return
        if child.spec.restart is Restart.PERMANENT or (
            child.spec.restart is Restart.TRANSIENT and not normal
        ):
            self._restart_after_failure(child)
        elif child.spec.restart is Restart.TEMPORARY:
            self.children.remove(child)

    def _restart_after_failure(self, failed: Child) -> None:
        """Apply the strategy for ``failed``; a start that fails counts as another failure."""
        if self._stopping:
            return
        if self.intensity.exceeded(time.monotonic()):
            logger.critical(
                "restart intensity exceeded: {} failed more than {} times in {:g}s; "
                "stopping the tree",
                failed.name,
                self.intensity.max_restarts,
                self.intensity.max_seconds,
            )
            self.request_stop(1)
            return
        group = self._strategy_group(failed)
        siblings = [c for c in group if c is not failed]

        def restart() -> None:
            for sibling in siblings:
                if sibling.spec.restart is Restart.TEMPORARY and sibling in self.children:
                    self.children.remove(sibling)  # OTP: temporary siblings are not restarted
                    group.remove(sibling)
            for c in group:
                if c.state is ChildState.STOPPED:
                    c.restarts += 1
            self._start_in_order(group, restarted)

        def restarted(ok: bool, detail: str) -> None:
            if not ok and not self._stopping:
                logger.error("{}", detail)
                self._restart_after_failure(failed)

        self._stop_in_reverse(siblings, restart)

    def _strategy_group(self, failed: Child) -> list[Child]:
        if self.strategy is Strategy.ONE_FOR_ONE:
            return [failed]
        if self.strategy is Strategy.ONE_FOR_ALL:
            return list(self.children)
        return self.children[self.children.index(failed) :]

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
            if other.exit_fd is not None:
                os.close(other.exit_fd)
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

    def _on_message(self, child: Child, proc: BaseProcess) -> None:
        """Serve what ``child`` sent: calls to the supervisor, and its ready / init_failed."""
        channel, mux = child.channel, child.mux
        if child.process is not proc or channel is None or mux is None:
            return
        for msg in mux.dispatch(channel.receive()):
            kind = msg[0]
            if kind == "call":
                self._answer(child, msg[1], msg[2])
            elif kind == "ready" and child.state is ChildState.STARTING:
                self._on_ready(child)
            elif kind == "init_failed":
                child.start_failure = str(msg[1])
        channel.flush()

    def _answer(self, child: Child, call_id: int, request: Any) -> None:
        assert child.channel is not None
        if isinstance(request, Connect):
            self._broker(child, call_id, request.name)
            return
        if isinstance(request, WhichChildren):
            value: Any = [(c.name, c.pid) for c in self.children if c.pid]
            child.channel.send(("reply", call_id, True, value))
            return
        handler = self.call_handlers.get(type(request))
        if handler is None:
            child.channel.send(("reply", call_id, False, f"supervisor: unknown call {request!r}"))
            return
        process = child.process

        def reply(ok: bool, value: Any) -> None:
            if child.process is process and child.channel is not None:
                child.channel.send(("reply", call_id, ok, value))

        try:
            handler(child, request, reply)
        except Exception as exc:  # a bad request must never take the parent down
            reply(False, f"{type(exc).__name__}: {exc}")

    def _broker(self, caller: Child, call_id: int, name: str) -> None:
        """Hand ``caller`` and component ``name`` the two ends of a fresh pipe; a target
        that is starting (being restarted, say) is waited for, not refused."""
        if caller.channel is None:
            return  # the caller died while the target was starting
        target = self.child(name)
        if target is not None and target.state is ChildState.STARTING:
            target.on_started.append(self._broker_once_started(caller, call_id, name))
            return
        if target is None or target.channel is None or target.state is not ChildState.RUNNING:
            caller.channel.send(("reply", call_id, False, f"{name}: not running"))
            return
        a, b = socket.socketpair()
        try:
            if not target.channel.send_with_fds(("peer", caller.name), [b.fileno()]):
                # It died and its exit is not served yet (the caller saw its end of their
                # old pipe close first): wait for its restart, as for a start in progress.
                target.on_started.append(self._broker_once_started(caller, call_id, name))
                return
            caller.channel.send_with_fds(("reply", call_id, True, name), [a.fileno()])
        finally:
            a.close()
            b.close()

    def _broker_once_started(self, caller: Child, call_id: int, name: str) -> Started:
        process = caller.process

        def started(ok: bool, _why: str) -> None:
            if caller.process is not process:
                return  # the caller died (or was replaced) meanwhile
            if ok:
                self._broker(caller, call_id, name)
            elif caller.channel is not None:
                caller.channel.send(("reply", call_id, False, f"{name}: failed to start"))

        return started

    def _next_timeout(self) -> float | None:
        timeout = self.timers.timeout(time.monotonic())
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

    def _flush_channels(self) -> None:
        for child in self.children:
            if child.channel is not None and child.channel.pending_output:
                child.channel.flush()


def _noop_handler(_signum: int, _frame: object) -> None:
    """Signals are read from the wakeup fd by the loop; the handler itself does nothing."""


def _signal(proc: BaseProcess, sig: int) -> None:
    if proc.pid is not None:
        try:
            os.kill(proc.pid, sig)
        except ProcessLookupError:
            pass
