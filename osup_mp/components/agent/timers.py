"""The agent manager's timer messages. Each is a record the manager dispatches by its type
(:func:`~osup_mp.runtime.component.on_info`): a handler reads named fields, and a timer
armed for one agent generation carries that generation, so a late one is recognised."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Respawn:
    """The backoff after a failure is over: start the agent again."""


@dataclass(frozen=True, slots=True)
class ReadyDeadline:
    """The agent had ``[agent] ready_timeout`` to say ``ready``."""


@dataclass(frozen=True, slots=True)
class StopDeadline:
    """The agent had ``[agent] stop_timeout`` to exit after SIGTERM."""

    generation: int


@dataclass(frozen=True, slots=True)
class WallDeadline:
    """A limited agent's wall-clock time is up."""

    generation: int


@dataclass(frozen=True, slots=True)
class ReapStrays:
    """Time for another pass over the leftovers a dead agent left, killed but not reaped."""


@dataclass(frozen=True, slots=True)
class ExpireRequests:
    """The nearest request deadline has come."""


@dataclass(frozen=True, slots=True)
class CheckpointTick:
    """``[vault] checkpoint_interval`` has passed: ask the main agent for a checkpoint."""


@dataclass(frozen=True, slots=True)
class Promoted:
    """A standby took over; what is left to do once it has had its first work."""

    reason: str  # why the main died
    died: tuple[int, int]  # the dead main's pid and exit status
    pid: int  # the promoted agent's
    ms: float  # how long the promotion took
    lsn: int  # the newest entry passed on to the promoted agent
    resent: int  # unanswered requests sent again
    early: bool  # the death was noticed by the life lock, before the kernel reported it


@dataclass(frozen=True, slots=True)
class StandbySpawn:
    """Time to start a standby (after a promotion, or a backoff)."""


@dataclass(frozen=True, slots=True)
class StandbyReadyDeadline:
    """The standby of this generation had ``[agent] ready_timeout`` to say ``ready``."""

    generation: int
