"""What the health monitor serves: metrics, state transitions and per-request samples
recorded, and the history, comparisons and events read back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar


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
    match, mismatch, stale (the arm had not applied the writes the main had) or error.
    ``latency_ms`` is the agent's service time, less ``waited_ms`` of waits for a CPU; when
    the agent gives no figures (``waited_ms`` None), its manager's round trip."""

    experiment: str
    arm: str
    latency_ms: float
    error: bool
    digest: str | None = None
    outcome: str = "match"
    waited_ms: float | None = None
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
