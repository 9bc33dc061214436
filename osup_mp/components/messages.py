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


# -- the traffic splitter --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Mirrored:
    """A cast from the main's manager, after its answer went to the caller: a request to
    mirror, the main's outcome, and the WAL position its answer reflects (None: unknown).
    The answer itself comes only when a compare hook needs it; a digest always does."""

    data: Any
    ok: bool
    digest: str | None
    latency_ms: float
    lsn: int | None
    answer: Any = None
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


@dataclass(frozen=True, slots=True)
class TrafficRecord:
    """Keep ``share`` of the main's read-only requests, ``count`` at most, for ``seconds``
    at most, until a client takes them (:class:`TrafficTake`)."""

    id: str
    share: float
    count: int
    seconds: float
    kind: ClassVar[str] = "traffic_record"


@dataclass(frozen=True, slots=True)
class TrafficTake:
    """A page of what recording ``id`` kept since the last take, with its figures;
    ``stop`` ends the keeping (what is buffered can still be taken)."""

    id: str
    stop: bool = False
    kind: ClassVar[str] = "traffic_take"


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
class RecordSamples:
    """A cast: many :class:`RecordSample`, in the order they were made. The splitter sends
    its samples a few times a second, so the health monitor and telemetry wake once per
    batch rather than twice per mirrored request."""

    samples: tuple[RecordSample, ...]
    kind: ClassVar[str] = "record_samples"


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
    """The kept samples of an experiment, oldest first (``forget`` drops them after); with
    ``after``, only those recorded after sample number ``after`` (each carries its ``seq``)."""

    experiment: str
    forget: bool = False
    after: int = 0
    kind: ClassVar[str] = "samples"


# -- the watchdog ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WatchdogKills:
    """The newest hundred agents the watchdog killed, and why."""

    kind: ClassVar[str] = "kills"


# -- the evolution arbiter -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExperimentStart:
    """Try ``code`` for module ``target`` on mirrored traffic; answers the experiment's
    record once its shadows are starting. ``origin`` names who asked (``cli`` or an agent
    id), ``proposal`` the agent's ``evolution_intent`` id to answer when decided."""

    code: str
    target: str
    ratio: float | None = None
    duration: float | None = None
    reason: str = ""
    origin: str = "cli"
    proposal: Any = None
    kind: ClassVar[str] = "experiment_start"


@dataclass(frozen=True, slots=True)
class ExperimentStop:
    """Stop a running experiment: no verdict beyond ``inconclusive``, nothing promoted."""

    id: str
    kind: ClassVar[str] = "experiment_stop"


@dataclass(frozen=True, slots=True)
class ExperimentList:
    """The running experiments and the newest decided ones, as records without samples."""

    kind: ClassVar[str] = "experiment_list"


@dataclass(frozen=True, slots=True)
class ExperimentShow:
    id: str
    kind: ClassVar[str] = "experiment_show"


@dataclass(frozen=True, slots=True)
class ExperimentHistory:
    """The newest ``n`` decided experiments, newest first."""

    n: int = 100
    kind: ClassVar[str] = "experiment_history"


@dataclass(frozen=True, slots=True)
class Propose:
    """A cast from an agent's manager: the agent sent an ``evolution_intent``."""

    instance_id: str
    proposal: Any
    target: str
    code: str
    reason: str
    kind: ClassVar[str] = "propose"


# -- to the tree -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StartShadow:
    """Start shadow ``id`` as a dynamic child (as ``osup-mp shadow start`` does); answers
    once it is ready, or why it cannot start."""

    id: str
    kind: ClassVar[str] = "start_shadow"


@dataclass(frozen=True, slots=True)
class StopShadow:
    id: str
    kind: ClassVar[str] = "stop_shadow"


@dataclass(frozen=True, slots=True)
class ShadowCount:
    """How many shadows run, and how many may (``max_concurrent_shadows``)."""

    kind: ClassVar[str] = "shadow_count"


@dataclass(frozen=True, slots=True)
class Fatal:
    """An error restarting cannot fix (e.g. a failed fsync): the tree stops."""

    reason: str
    kind: ClassVar[str] = "fatal"
