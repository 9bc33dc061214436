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

Split by concern, each a module: :mod:`.reactor` (the wait, timers, signals),
:mod:`.lifecycle` (each child's process through its states), :mod:`.brokering` (the calls
children make to the tree); this one is the tree: its sequences, restarts and strategies.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterable
from typing import Any

from loguru import logger

from osup_mp.lowlevel.proc import become_subreaper
from osup_mp.runtime.brokering import CallHandler, Reply
from osup_mp.runtime.calls import ReplyCallback
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
from osup_mp.runtime.lifecycle import ChildLifecycle
from osup_mp.runtime.reactor import Reader

__all__ = [
    "CallHandler",
    "Child",
    "ChildSpec",
    "ChildState",
    "Reader",
    "Reply",
    "Restart",
    "StartError",
    "Strategy",
    "Supervisor",
]


class Supervisor(ChildLifecycle):
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
        super().__init__(specs, child_setup)
        self.strategy = Strategy(strategy)
        self.intensity = Intensity(max_restarts, max_seconds)
        self.started_at = time.monotonic()
        self.start_failure: str | None = None  # why the tree's ordered start failed
        self._up = False  # the ordered start has completed
        self._finished = False
        self._exit_code = 0

    # -- the loop ----------------------------------------------------------------------------

    @property
    def phase(self) -> str:
        """The tree's own state: "starting" until the ordered start is done, then "running",
        "stopping" once a stop began."""
        if self._stopping:
            return "stopping"
        return "running" if self._up else "starting"

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

    # -- signals -----------------------------------------------------------------------------

    def _on_signal(self, signum: int) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT):
            if not self._stopping:
                logger.info("received {}: stopping", signal.Signals(signum).name)
            self.request_stop()
        elif signum == signal.SIGHUP:
            logger.info("received SIGHUP: ignored (restart the tree to reload config)")
