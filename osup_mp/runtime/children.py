"""What the supervisor knows about each child: its spec, its runtime record, restart limits.

A :class:`ChildSpec` is the static description (OTP's child spec: name, start function,
restart type, shutdown timeout); a :class:`Child` is the live record the supervisor keeps
for it, with an explicit state machine whose transitions are checked (a start or stop is a
sequence of loop steps, so an impossible transition is a bug to catch at once);
:class:`Intensity` is the sliding window behind OTP's restart intensity.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess

from osup_mp.runtime.calls import CallMux
from osup_mp.runtime.channel import Channel
from osup_mp.runtime.component import Component
from osup_mp.runtime.timers import Timer


class Strategy(enum.StrEnum):
    """Which siblings restart with a failed child (OTP semantics). The config validates the
    same names (``[supervisor] strategy``); the runtime knows no config."""

    ONE_FOR_ONE = "one_for_one"  # the failed child alone
    ONE_FOR_ALL = "one_for_all"  # every child
    REST_FOR_ONE = "rest_for_one"  # the failed child and those started after it


class Restart(enum.StrEnum):
    PERMANENT = "permanent"  # always restarted
    TRANSIENT = "transient"  # restarted only after an abnormal exit
    TEMPORARY = "temporary"  # never restarted


class ChildState(enum.StrEnum):
    STOPPED = "stopped"  # no process
    STARTING = "starting"  # forked, not ready yet (a start timeout is pending)
    RUNNING = "running"  # reported ready
    STOPPING = "stopping"  # SIGTERM sent (a SIGKILL deadline is pending)


_MOVES: dict[ChildState, frozenset[ChildState]] = {
    ChildState.STOPPED: frozenset({ChildState.STARTING}),
    ChildState.STARTING: frozenset({ChildState.RUNNING, ChildState.STOPPING, ChildState.STOPPED}),
    ChildState.RUNNING: frozenset({ChildState.STOPPING, ChildState.STOPPED}),
    ChildState.STOPPING: frozenset({ChildState.STOPPED}),
}

Started = Callable[[bool, str], None]
"""Told once a start ends: (True, "") when the child is ready, else (False, reason)."""

Stopped = Callable[[], None]
"""Told once a child has no process any more."""


@dataclass(frozen=True, slots=True)
class ChildSpec:
    name: str
    factory: Callable[[], Component]
    restart: Restart = Restart.PERMANENT
    shutdown_timeout: float = 5.0
    start_timeout: float = 30.0


@dataclass(slots=True)
class Child:
    spec: ChildSpec
    state: ChildState = ChildState.STOPPED
    process: BaseProcess | None = None
    channel: Channel | None = None
    mux: CallMux | None = None
    pid: int | None = None
    exit_fd: int | None = None  # a pidfd: readable once the process can be reaped
    started_at: float = 0.0  # monotonic
    restarts: int = 0
    last_exit: str = ""
    timer: Timer | None = None  # the start timeout or the SIGKILL deadline
    start_failure: str = ""  # why the start in progress failed, once known
    on_started: list[Started] = field(default_factory=list)
    on_stopped: list[Stopped] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.spec.name

    def move(self, to: ChildState) -> None:
        """Change state; an impossible transition raises (a supervisor bug)."""
        if to not in _MOVES[self.state]:
            raise RuntimeError(f"{self.name}: cannot go from {self.state} to {to}")
        self.state = to
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class StartError(RuntimeError):
    """A child could not be started; the message names it and says why."""


@dataclass(slots=True)
class Intensity:
    max_restarts: int
    max_seconds: float
    stamps: deque[float] = field(default_factory=deque)

    def exceeded(self, now: float) -> bool:
        """Record one restart at ``now``; True when it breaks the limit."""
        self.stamps.append(now)
        while self.stamps and now - self.stamps[0] > self.max_seconds:
            self.stamps.popleft()
        return len(self.stamps) > self.max_restarts
