"""The watch after a promotion: the main's own metrics windows, after against before."""

from __future__ import annotations

from typing import Any

import pytest

from osup_mp.evolution import watch

pytestmark = pytest.mark.unit


def windows(start: float, n: int, ms: float, errors: float = 0.0, every: float = 5.0) -> list[Any]:
    metrics = {"requests": 100, "avg_latency": ms, "error_rate": errors}
    return [{"at": start + i * every, "metrics": metrics} for i in range(n)]


def test_windows_are_pooled_by_their_requests_and_idle_ones_skipped() -> None:
    records = [
        {"at": 1.0, "metrics": {"requests": 300, "avg_latency": 2.0, "error_rate": 0.0}},
        {"at": 2.0, "metrics": {"requests": 100, "avg_latency": 6.0, "error_rate": 0.04}},
        {"at": 3.0, "metrics": {"requests": 0, "avg_latency": 0.0, "error_rate": 0.0}},
        {"at": 4.0, "metrics": {}},
    ]
    figures = watch.pool(records)
    assert figures == watch.Figures(windows=2, requests=400, latency_ms=3.0, errors=4.0)
    assert figures.error_rate == 0.01
    assert watch.pool(records[2:]) is None


def test_the_newest_whole_windows_after_the_promotion_are_judged() -> None:
    records = windows(0.0, 4, 5.0) + windows(21.0, 10, 5.0)  # promoted at 20
    after = watch.since_promotion(records, 20.0)
    assert [r["at"] for r in after] == [51.0, 56.0, 61.0, 66.0]  # 15 s; not 21 (straddles)
    assert [r["at"] for r in watch.since_promotion(records[:5], 20.0)] == []


def test_a_promotion_is_watched_against_the_traffic_its_experiment_saw() -> None:
    """A bulk load of fast writes, then 12 s of searches mirrored: the baseline is the
    searches' (the whole windows during the experiment), never the writes'."""
    loading = windows(0.0, 12, 0.05)  # up to 55 s
    records = loading + windows(58.0, 3, 0.4)  # mirrored from 57 s, promoted at 69 s
    before = watch.before_promotion(records, 57.0, 69.0)
    assert before == watch.Figures(windows=2, requests=200, latency_ms=0.4, errors=0.0)
    quick = watch.before_promotion(records, 62.0, 64.0)  # only a window that overlaps it
    assert quick is not None and quick.windows == 1 and quick.latency_ms == 0.4
    fallback = watch.before_promotion(records, 69.0, 69.0)  # none during it: all before
    assert fallback is not None and fallback.windows == 15
    assert watch.before_promotion(records, None, 50.0) == watch.pool(loading[:11])
    assert watch.before_promotion([], 1.0, 2.0) is None


def test_a_regression_rolls_back_and_noise_or_too_little_does_not() -> None:
    before = watch.pool(windows(0.0, 12, 4.0, errors=0.001))
    slower = watch.pool(windows(70.0, 3, 7.0))
    why = watch.regression(before, slower, error_margin=0.01, rollback_margin=0.5)
    assert why is not None and "mean latency rose from 4 ms to 7 ms" in why and "+75%" in why
    failing = watch.pool(windows(70.0, 3, 4.0, errors=0.05))
    why = watch.regression(before, failing, error_margin=0.01, rollback_margin=0.5)
    assert why is not None and "error rate rose from 0.10% to 5.00%" in why
    for after in (
        watch.pool(windows(70.0, 3, 5.5)),  # +37%: within a confounded before/after margin
        watch.pool(windows(70.0, 1, 40.0)),  # one window: too little to judge
        watch.pool(windows(70.0, 3, 3.0, errors=0.005)),  # faster, errors within the margin
        None,
    ):
        assert watch.regression(before, after, error_margin=0.01, rollback_margin=0.5) is None
    assert watch.regression(None, slower, error_margin=0.01, rollback_margin=0.5) is None
