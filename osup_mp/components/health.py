"""The health monitor component: what each agent instance reported, and how it changed.

Agent managers cast every metrics report and state transition here; the traffic splitter
casts a sample per mirrored request of a running experiment. The monitor keeps the newest
metrics per instance, a history bounded by count and by age, the newest transitions and
the samples of each experiment, answers queries (``compare_instances`` among them), and
emits a telemetry event for every record. The one decision: every collection is bounded
and everything stale is pruned, so memory stays flat however long the tree runs and
however many shadows come and go.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from osup_mp.components.messages import (
    CompareInstances,
    Execute,
    ExperimentSamples,
    GetMetrics,
    HealthEvents,
    MetricsHistory,
    RecordMetrics,
    RecordSample,
    RecordSamples,
    RecordTransition,
)
from osup_mp.config import Config, HealthSection
from osup_mp.runtime.calls import CallError
from osup_mp.runtime.component import Caller, Component, on_call, on_cast, on_info

MAX_KEYS = 64  # metrics kept per report; an agent cannot grow the monitor with a huge map
MAX_TEXT = 256  # longest string value kept
#: Metrics where more is better; for every other one, less is (latency, errors, memory).
HIGHER_IS_BETTER = frozenset({"throughput", "requests"})
PRUNE_PERIOD = 60.0  # s between sweeps for instances and experiments gone quiet


@dataclass(frozen=True, slots=True)
class Report:
    at: float  # wall-clock time, s
    metrics: dict[str, Any]


class HealthBook:
    """The monitor's state and queries, with an injected clock (no process needed)."""

    def __init__(self, cfg: HealthSection, clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.clock = clock
        self.window = cfg.history_window / 1000
        self.history: dict[str, deque[Report]] = {}
        self.events: deque[dict[str, Any]] = deque(maxlen=cfg.max_events)
        self.samples: dict[str, deque[tuple[int, float, RecordSample]]] = {}
        self._sample_seq: dict[str, int] = {}  # samples ever recorded, per experiment
        self._sampled_at: dict[str, float] = {}
        self.dropped_keys = 0

    # -- records -----------------------------------------------------------------------------

    def record(self, instance_id: str, metrics: dict[str, Any]) -> Report:
        kept: dict[str, Any] = {}
        for key, value in metrics.items():
            if len(kept) < MAX_KEYS and isinstance(key, str) and len(key) <= 64 and _keep(value):
                kept[key] = value
            else:
                self.dropped_keys += 1
        report = Report(self.clock(), kept)
        reports = self.history.get(instance_id)
        if reports is None:
            reports = self.history[instance_id] = deque(maxlen=self.cfg.history_size)
        reports.append(report)
        self._expire(reports, report.at)
        return report

    def transition(
        self, instance_id: str, old: str, new: str, reason: str | None
    ) -> dict[str, Any]:
        event = {"at": self.clock(), "id": instance_id, "from": old, "to": new, "reason": reason}
        self.events.append(event)
        return event

    def sample(self, s: RecordSample) -> None:
        now = self.clock()
        kept = self.samples.get(s.experiment)
        if kept is None:
            kept = self.samples[s.experiment] = deque(maxlen=self.cfg.max_samples)
        seq = self._sample_seq[s.experiment] = self._sample_seq.get(s.experiment, 0) + 1
        kept.append((seq, now, s))
        self._sampled_at[s.experiment] = now

    def prune(self) -> None:
        """Forget instances and experiments with nothing newer than the history window."""
        now = self.clock()
        for instance_id, reports in list(self.history.items()):
            self._expire(reports, now)
            if not reports:
                del self.history[instance_id]
        for experiment, at in list(self._sampled_at.items()):
            if now - at > self.window:
                self.samples.pop(experiment, None)
                self._sample_seq.pop(experiment, None)
                del self._sampled_at[experiment]

    def _expire(self, reports: deque[Report], now: float) -> None:
        while reports and now - reports[0].at > self.window:
            reports.popleft()

    # -- queries -----------------------------------------------------------------------------

    def current(self, instance_id: str | None = None) -> dict[str, Any]:
        if instance_id is not None:
            reports = self.history.get(instance_id)
            if not reports:
                raise CallError(f"no metrics for {instance_id!r} (known: {self._known()})")
            return {"id": instance_id, "at": reports[-1].at, "metrics": reports[-1].metrics}
        return {i: {"at": r[-1].at, "metrics": r[-1].metrics} for i, r in self.history.items() if r}

    def recent(self, instance_id: str, seconds: float | None) -> list[Report]:
        reports = self.history.get(instance_id)
        if reports is None:
            raise CallError(f"no metrics for {instance_id!r} (known: {self._known()})")
        since = -math.inf if seconds is None else self.clock() - seconds
        return [r for r in reports if r.at >= since]

    def compare(self, a: str, b: str, seconds: float) -> dict[str, Any]:
        """Means over the last ``seconds`` of each numeric metric both reported, and the
        relative difference of ``a`` against ``b``: positive when ``a`` is worse."""
        mine, theirs = _means(self.recent(a, seconds)), _means(self.recent(b, seconds))
        metrics = {}
        for key in sorted(mine.keys() & theirs.keys()):
            (mean_a, n_a), (mean_b, n_b) = mine[key], theirs[key]
            diff = (mean_a - mean_b) / abs(mean_b) if mean_b else None
            if diff is not None and key in HIGHER_IS_BETTER:
                diff = 0.0 - diff  # not -diff: no "-0.0" for equal figures
            metrics[key] = {"a": mean_a, "b": mean_b, "n_a": n_a, "n_b": n_b, "diff": diff}
        return {"a": a, "b": b, "seconds": seconds, "metrics": metrics}

    def recent_events(self, n: int, instance_id: str | None) -> list[dict[str, Any]]:
        chosen = [e for e in self.events if instance_id is None or e["id"] == instance_id]
        return chosen[-n:] if n > 0 else []

    def experiment_samples(
        self, experiment: str, forget: bool, after: int = 0
    ) -> list[dict[str, Any]]:
        kept = self.samples.pop(experiment, deque()) if forget else self.samples.get(experiment)
        if forget:
            self._sampled_at.pop(experiment, None)
            self._sample_seq.pop(experiment, None)
        chosen = (item for item in (kept or ()) if item[0] > after)
        return [
            {"seq": seq, "at": at, "arm": s.arm, "latency_ms": s.latency_ms, "error": s.error}
            | {"digest": s.digest, "outcome": s.outcome, "waited_ms": s.waited_ms}
            for seq, at, s in chosen
        ]

    def _known(self) -> str:
        return ", ".join(sorted(self.history)) or "none"


def _keep(value: Any) -> bool:
    if isinstance(value, str):
        return len(value) <= MAX_TEXT
    return value is None or isinstance(value, bool | int | float)


def _means(reports: list[Report]) -> dict[str, tuple[float, int]]:
    sums: dict[str, tuple[float, int]] = {}
    for report in reports:
        for key, value in report.metrics.items():
            if (
                isinstance(value, int | float)
                and not isinstance(value, bool)
                and math.isfinite(value)
            ):
                total, n = sums.get(key, (0.0, 0))
                sums[key] = (total + value, n + 1)
    return {key: (total / n, n) for key, (total, n) in sums.items()}


@dataclass(frozen=True, slots=True)
class _Prune:
    """Time to drop history older than its retention."""


class HealthMonitor(Component):
    def __init__(self, cfg: Config) -> None:
        self.book = HealthBook(cfg.health)

    def init(self) -> None:
        self.send_after(PRUNE_PERIOD, _Prune())

    @on_info(_Prune)
    def _on_prune(self, msg: _Prune) -> None:
        self.book.prune()
        self.send_after(PRUNE_PERIOD, _Prune())

    def _emit(self, what: str, measurements: dict[str, Any], metadata: dict[str, Any]) -> None:
        self.peer("telemetry").cast(Execute(("osup", "health", what), measurements, metadata))

    @on_cast(RecordMetrics)
    def _on_metrics(self, request: RecordMetrics) -> None:
        report = self.book.record(request.instance_id, request.metrics)
        numbers = {k: v for k, v in report.metrics.items() if isinstance(v, int | float)}
        self._emit("metrics", numbers, {"id": request.instance_id})

    @on_cast(RecordTransition)
    def _on_transition(self, request: RecordTransition) -> None:
        event = self.book.transition(request.instance_id, request.old, request.new, request.reason)
        self._emit("transition", {}, event)

    @on_cast(RecordSamples)
    def _on_samples(self, request: RecordSamples) -> None:
        for sample in request.samples:
            self._on_sample(sample)

    @on_cast(RecordSample)
    def _on_sample(self, request: RecordSample) -> None:
        self.book.sample(request)
        metadata = {
            "experiment": request.experiment,
            "arm": request.arm,
            "outcome": request.outcome,
        }
        self._emit("sample", {"latency_ms": request.latency_ms, "error": request.error}, metadata)

    @on_call(GetMetrics)
    def _get(self, request: GetMetrics, caller: Caller) -> dict[str, Any]:
        return self.book.current(request.instance_id)

    @on_call(MetricsHistory)
    def _history(self, request: MetricsHistory, caller: Caller) -> list[dict[str, Any]]:
        reports = self.book.recent(request.instance_id, request.seconds)
        return [{"at": r.at, "metrics": r.metrics} for r in reports]

    @on_call(CompareInstances)
    def _compare(self, request: CompareInstances, caller: Caller) -> dict[str, Any]:
        return self.book.compare(request.a, request.b, request.seconds)

    @on_call(HealthEvents)
    def _events(self, request: HealthEvents, caller: Caller) -> list[dict[str, Any]]:
        return self.book.recent_events(request.n, request.instance_id)

    @on_call(ExperimentSamples)
    def _samples(self, request: ExperimentSamples, caller: Caller) -> list[dict[str, Any]]:
        return self.book.experiment_samples(request.experiment, request.forget, request.after)
