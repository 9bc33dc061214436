"""The requests components serve, one frozen record each, grouped by the component that
serves them.

They live apart from the components so that a caller never imports the component it calls
(components are independent; they share only these shapes). ``kind`` is the name the
control socket's ``call`` door uses for the record (``[kind, *args]``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

# -- the WAL ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Append:
    """Make ``entries`` (each one MessagePack-encoded) durable; answers their LSNs."""

    entries: list[bytes]
    kind: ClassVar[str] = "append"


@dataclass(frozen=True, slots=True)
class ReadSpansAfter:
    """Where the records after ``lsn`` are: ``{"spans", "more"}`` plus a read-only
    descriptor per span's segment (at most ``limit`` records)."""

    lsn: int
    limit: int | None = None
    kind: ClassVar[str] = "read_spans_after"


@dataclass(frozen=True, slots=True)
class LastLsn:
    """The newest LSN handed out."""

    kind: ClassVar[str] = "last_lsn"


@dataclass(frozen=True, slots=True)
class SkipThrough:
    """A checkpoint covers LSNs through ``lsn``: the next entry gets a later one."""

    lsn: int
    kind: ClassVar[str] = "skip_through"


@dataclass(frozen=True, slots=True)
class TruncateThrough:
    """Release segments wholly at or below ``lsn`` (a checkpoint covers them)."""

    lsn: int
    kind: ClassVar[str] = "truncate_through"


@dataclass(frozen=True, slots=True)
class Follow:
    """Push me every entry after ``after_lsn`` as it is acknowledged (as
    :class:`WalEntries` casts on this connection); answers the newest acknowledged LSN."""

    after_lsn: int
    kind: ClassVar[str] = "follow"


@dataclass(frozen=True, slots=True)
class WalEntries:
    """A cast to a follower: acknowledged entries with consecutive LSNs from ``first_lsn``."""

    first_lsn: int
    payloads: list[bytes]
    kind: ClassVar[str] = "wal_entries"


@dataclass(frozen=True, slots=True)
class FollowLost:
    """A cast to a follower the WAL stopped following (it fell too far behind)."""

    reason: str
    kind: ClassVar[str] = "follow_lost"


@dataclass(frozen=True, slots=True)
class WalStats:
    """Segments, LSNs, fsync policy and counters."""

    kind: ClassVar[str] = "stats"


@dataclass(frozen=True, slots=True)
class WalTail:
    """The newest ``n`` entries, decoded."""

    n: int = 10
    kind: ClassVar[str] = "tail"


@dataclass(frozen=True, slots=True)
class WalVerify:
    """Check every record of every segment."""

    kind: ClassVar[str] = "verify"


# -- the vault -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SaveCheckpoint:
    """Store ``snapshot`` (a map, or its MessagePack bytes) as covering LSNs through ``lsn``."""

    snapshot: Any
    lsn: int
    kind: ClassVar[str] = "save"


@dataclass(frozen=True, slots=True)
class LatestCheckpoint:
    """The newest checkpoint that verifies, or None; ``raw`` answers the payload unopened."""

    raw: bool = False
    kind: ClassVar[str] = "latest"


@dataclass(frozen=True, slots=True)
class LoadCheckpoint:
    """Checkpoint ``id``; ``raw`` answers the payload unopened."""

    id: str
    raw: bool = False
    kind: ClassVar[str] = "load"


@dataclass(frozen=True, slots=True)
class ShowCheckpoint:
    """Checkpoint ``id``'s metadata, a summary, and the snapshot when it fits a reply."""

    id: str
    kind: ClassVar[str] = "show"


@dataclass(frozen=True, slots=True)
class ListCheckpoints:
    """The catalogue, newest first."""

    kind: ClassVar[str] = "list"


@dataclass(frozen=True, slots=True)
class DeleteCheckpoint:
    id: str
    kind: ClassVar[str] = "delete"


# -- telemetry -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Execute:
    """A cast: record one event (``:telemetry.execute/3``)."""

    event: tuple[str, ...]
    measurements: dict[str, Any]
    metadata: dict[str, Any] = field(default_factory=dict)
    kind: ClassVar[str] = "execute"


@dataclass(frozen=True, slots=True)
class Sample:
    """Sample every process now; answers the figures."""

    kind: ClassVar[str] = "sample"


@dataclass(frozen=True, slots=True)
class LatestSample:
    kind: ClassVar[str] = "latest"


@dataclass(frozen=True, slots=True)
class Events:
    """The counts of events seen, by name."""

    kind: ClassVar[str] = "events"


@dataclass(frozen=True, slots=True)
class Attach:
    """Call ``target`` (``"module:function"``) for every event under ``prefix``."""

    handler_id: str
    prefix: list[str]
    target: str
    kind: ClassVar[str] = "attach"


@dataclass(frozen=True, slots=True)
class Detach:
    handler_id: str
    kind: ClassVar[str] = "detach"


# -- agent managers --------------------------------------------------------------------------


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
    """From the watchdog: agent ``generation`` sent no heartbeat for ``age_ms``."""

    generation: int
    age_ms: float
    kind: ClassVar[str] = "heartbeat_timeout"


@dataclass(frozen=True, slots=True)
class LimitExceeded:
    """From the watchdog: agent ``generation`` broke a resource limit."""

    generation: int
    reason: str
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


# -- the traffic splitter --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Mirrored:
    """A cast from the main's manager, after its answer went to the caller: a request to
    mirror, the main's outcome, and the WAL position its answer reflects (None: unknown)."""

    data: Any
    ok: bool
    digest: str | None
    latency_ms: float
    lsn: int | None
    kind: ClassVar[str] = "mirrored"


@dataclass(frozen=True, slots=True)
class MirrorStart:
    """Mirror ``ratio`` of the main's read-only requests to the shadows ``arms``."""

    id: str
    arms: list[str]
    ratio: float
    kind: ClassVar[str] = "mirror_start"


@dataclass(frozen=True, slots=True)
class MirrorStop:
    id: str
    kind: ClassVar[str] = "mirror_stop"


@dataclass(frozen=True, slots=True)
class MirrorStatus:
    """Every mirror's figures per arm."""

    kind: ClassVar[str] = "mirror_status"


# -- the health monitor ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecordMetrics:
    """A cast: an agent instance's metrics report (string keys, as they came)."""

    instance_id: str
    metrics: dict[str, Any]
    kind: ClassVar[str] = "record_metrics"


@dataclass(frozen=True, slots=True)
class RecordTransition:
    """A cast: an agent instance changed state (``reason`` says why, when known)."""

    instance_id: str
    old: str
    new: str
    reason: str | None = None
    kind: ClassVar[str] = "record_transition"


@dataclass(frozen=True, slots=True)
class RecordSample:
    """A cast: one mirrored request as an arm of an experiment answered it; ``outcome`` is
    match, mismatch, stale (the arm had not applied the writes the main had) or error."""

    experiment: str
    arm: str
    latency_ms: float
    error: bool
    digest: str | None = None
    outcome: str = "match"
    kind: ClassVar[str] = "record_sample"


@dataclass(frozen=True, slots=True)
class GetMetrics:
    """Every instance's newest metrics (or one instance's), with their time."""

    instance_id: str | None = None
    kind: ClassVar[str] = "metrics"


@dataclass(frozen=True, slots=True)
class MetricsHistory:
    """One instance's kept records, oldest first, from the last ``seconds`` (all if None)."""

    instance_id: str
    seconds: float | None = None
    kind: ClassVar[str] = "history"


@dataclass(frozen=True, slots=True)
class CompareInstances:
    """Instance ``a`` against ``b`` over the last ``seconds``: per metric both means and the
    relative difference, positive when ``a`` is worse."""

    a: str
    b: str
    seconds: float = 60.0
    kind: ClassVar[str] = "compare"


@dataclass(frozen=True, slots=True)
class HealthEvents:
    """The newest ``n`` state transitions (all instances, or one)."""

    n: int = 50
    instance_id: str | None = None
    kind: ClassVar[str] = "events"


@dataclass(frozen=True, slots=True)
class ExperimentSamples:
    """The kept samples of an experiment, oldest first (``forget`` drops them after)."""

    experiment: str
    forget: bool = False
    kind: ClassVar[str] = "samples"


# -- the watchdog ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WatchdogKills:
    """The newest hundred agents the watchdog killed, and why."""

    kind: ClassVar[str] = "kills"


# -- to the tree -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fatal:
    """An error restarting cannot fix (e.g. a failed fsync): the tree stops."""

    reason: str
    kind: ClassVar[str] = "fatal"
