"""The health monitor's book: bounded records, pruning, queries and compare (no process)."""

from __future__ import annotations

import pytest

from osup_mp.components.health import MAX_KEYS, HealthBook
from osup_mp.components.messages import RecordSample
from osup_mp.config import HealthSection
from osup_mp.runtime.calls import CallError

pytestmark = pytest.mark.unit  # no process started


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def book(**limits: int) -> tuple[HealthBook, Clock]:
    cfg = {"history_size": 5, "history_window": 60_000, "max_events": 3, "max_samples": 4}
    clock = Clock()
    return HealthBook(HealthSection(**(cfg | limits)), clock), clock


def test_history_is_bounded_by_count_and_by_age() -> None:
    health, clock = book()
    for i in range(8):
        health.record("main", {"avg_latency": float(i)})
        clock.now += 1
    assert [r.metrics["avg_latency"] for r in health.recent("main", None)] == [3, 4, 5, 6, 7]
    clock.now += 56  # t=1064: the count pushes out t=1003; t=1004 is exactly 60 s old
    health.record("main", {"avg_latency": 8.0})
    assert [r.metrics["avg_latency"] for r in health.recent("main", None)] == [4, 5, 6, 7, 8]
    clock.now += 2  # t=1066: t=1005 is 61 s old, over the window: age drops it too
    health.record("main", {"avg_latency": 9.0})
    assert [r.metrics["avg_latency"] for r in health.recent("main", None)] == [6, 7, 8, 9]
    assert [r.metrics["avg_latency"] for r in health.recent("main", 10)] == [8, 9]


def test_instances_and_experiments_gone_quiet_are_pruned() -> None:
    health, clock = book()
    health.record("s1", {"avg_latency": 1.0})
    health.sample(RecordSample("e1", "candidate", 2.0, False, "d"))
    clock.now += 30
    health.record("main", {"avg_latency": 1.0})
    clock.now += 31
    health.prune()
    assert list(health.history) == ["main"]
    assert health.samples == {}


def test_reports_keep_string_keys_and_small_scalars_only() -> None:
    health, _clock = book()
    junk = {f"k{i}": i for i in range(MAX_KEYS + 10)} | {"nested": {"a": 1}, "long": "x" * 999}
    report = health.record("main", {"avg_latency": 2.5, "label": "ok", **junk})
    assert report.metrics["avg_latency"] == 2.5 and report.metrics["label"] == "ok"
    assert len(report.metrics) == MAX_KEYS and "nested" not in report.metrics
    assert health.dropped_keys == 78 - MAX_KEYS


def test_current_and_unknown_instances() -> None:
    health, clock = book()
    health.record("main", {"error_rate": 0.0})
    assert health.current("main") == {"id": "main", "at": clock.now, "metrics": {"error_rate": 0.0}}
    assert set(health.current()) == {"main"}
    with pytest.raises(CallError, match=r"no metrics for 'ghost' \(known: main\)"):
        health.current("ghost")


def test_compare_reports_means_and_a_positive_diff_when_a_is_worse() -> None:
    health, clock = book(history_size=100)
    for latency, throughput in ((10.0, 100.0), (14.0, 80.0)):
        health.record("shadow", {"avg_latency": latency, "throughput": throughput, "on": True})
        health.record("main", {"avg_latency": 8.0, "throughput": 120.0, "on": True})
        clock.now += 1
    result = health.compare("shadow", "main", 60)
    latency, throughput = result["metrics"]["avg_latency"], result["metrics"]["throughput"]
    assert latency == {"a": 12.0, "b": 8.0, "n_a": 2, "n_b": 2, "diff": pytest.approx(0.5)}
    assert throughput["diff"] == pytest.approx(0.25)  # 90 against 120: a is worse
    assert "on" not in result["metrics"]  # booleans are not figures
    with pytest.raises(CallError, match="no metrics for 'nope'"):
        health.compare("nope", "main", 60)


def test_events_and_samples_are_bounded() -> None:
    health, _clock = book()
    for i in range(5):
        health.transition("main", "RUNNING", "BACKOFF", f"exit {i}")
        health.sample(RecordSample("e1", "control", float(i), i == 4))
    assert [e["reason"] for e in health.recent_events(10, None)] == ["exit 2", "exit 3", "exit 4"]
    assert health.recent_events(10, "other") == [] and health.recent_events(0, None) == []
    kept = health.experiment_samples("e1", forget=True)
    assert [s["latency_ms"] for s in kept] == [1.0, 2.0, 3.0, 4.0] and kept[-1]["error"]
    assert health.experiment_samples("e1", forget=False) == []
