"""What the supervisor knows about each child: its spec, its runtime record, restart limits.

A :class:`ChildSpec` is the static description (OTP's child spec: name, start function,
restart type, shutdown timeout); a :class:`Child` is the live record the supervisor keeps
for it; :class:`Intensity` is the sliding window behind OTP's restart intensity.
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


class Restart(enum.StrEnum):
    PERMANENT = "permanent"  # always restarted
    TRANSIENT = "transient"  # restarted only after an abnormal exit
    TEMPORARY = "temporary"  # never restarted


class ChildState(enum.StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


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
    started_at: float = 0.0  # monotonic
    restarts: int = 0
    last_exit: str = ""

    @property
    def name(self) -> str:
        return self.spec.name


class StartError(RuntimeError):
    """A child could not be started; the message names it and says why."""


class Escalation(RuntimeError):
    """Restart intensity was exceeded."""


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
