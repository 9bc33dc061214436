"""What an agent manager serves: its status and requests, hot reloads and reverts, restarts,
checkpoints and restores, the watchdog's reports, mirroring settings, evolution results.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True, slots=True)
class AgentStatus:
    kind: ClassVar[str] = "status"


@dataclass(frozen=True, slots=True)
class AgentRequest:
    """Send ``data`` to the agent as a request; answers its answer (``timeout`` in s)."""

    data: Any
    timeout: float | None = None
    kind: ClassVar[str] = "request"


@dataclass(frozen=True, slots=True)
class HotReload:
    code: str
    module: str | None = None
    kind: ClassVar[str] = "hot_reload"


@dataclass(frozen=True, slots=True)
class RestartAgent:
    """Stop the agent and start it again (an operator's restart: no backoff)."""

    kind: ClassVar[str] = "restart_agent"


@dataclass(frozen=True, slots=True)
class CreateCheckpoint:
    """Ask the main agent for a snapshot and store it; answers the checkpoint."""

    kind: ClassVar[str] = "checkpoint"


@dataclass(frozen=True, slots=True)
class RestoreFrom:
    """Restart the main agent from checkpoint ``id`` and the WAL after it."""

    id: str
    kind: ClassVar[str] = "restore_from"


@dataclass(frozen=True, slots=True)
class HeartbeatTimeout:
    """From the watchdog: agent ``generation`` in ``slot`` sent no heartbeat for ``age_ms``
    (the slot tells a manager's main agent from its standby)."""

    generation: int
    age_ms: float
    slot: int
    kind: ClassVar[str] = "heartbeat_timeout"


@dataclass(frozen=True, slots=True)
class LimitExceeded:
    """From the watchdog: agent ``generation`` in ``slot`` broke a resource limit."""

    generation: int
    reason: str
    slot: int
    kind: ClassVar[str] = "limit_exceeded"


@dataclass(frozen=True, slots=True)
class MirrorRequest:
    """Like :class:`AgentRequest`, for a mirrored copy: answers ``{ok, value, latency_ms,
    lsn}``, ``lsn`` being the main's WAL position the agent had applied when it got it."""

    data: Any
    timeout: float | None = None
    kind: ClassVar[str] = "mirror_request"


@dataclass(frozen=True, slots=True)
class SetMirror:
    """A cast to the main agent's manager: hand this share of its read-only requests to the
    splitter (0: none)."""

    ratio: float
    kind: ClassVar[str] = "set_mirror"


@dataclass(frozen=True, slots=True)
class LoadedCode:
    """The modules hot-reloaded into the agent since it started and still active:
    ``{module: source}`` (what a control arm must load to run the main's current code)."""

    kind: ClassVar[str] = "loaded_code"


@dataclass(frozen=True, slots=True)
class Revert:
    """Undo the newest hot reload of ``module``: load the code it replaced, or, when it
    replaced the agent's own, forget it and restart the agent (state restored)."""

    module: str
    kind: ClassVar[str] = "revert"


@dataclass(frozen=True, slots=True)
class EvolutionResult:
    """A cast to an agent's manager: the answer to the agent's ``evolution_intent`` ``id``,
    passed on to the agent as an ``evolution_result`` frame."""

    id: Any
    success: bool
    verdict: str | None
    reason: str
    experiment: str | None = None
    kind: ClassVar[str] = "evolution_result"
