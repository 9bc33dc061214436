"""The verdict's building blocks: samples checked at the door, the evidence's running sums,
the always-valid interval, and a verdict that survives its JSON form."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from osup_mp.evolution import Decision, Evidence, Sample, Settings, Verdict, decide
from osup_mp.evolution.sequential import half_width, rate_variance

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"arm": "main"}, "arm must be one of candidate, control"),
        ({"outcome": "maybe"}, "outcome must be one of match"),
        ({"latency_ms": -1.0}, "latency_ms must not be negative"),
        ({"latency_ms": math.nan}, "latency_ms must be a finite number"),
        ({"latency_ms": "3"}, "latency_ms must be a finite number"),
    ],
)
def test_a_malformed_sample_names_its_field(fields: dict[str, object], message: str) -> None:
    values = {"arm": "candidate", "latency_ms": 1.0, "error": False, "outcome": "match"} | fields
    with pytest.raises(ValueError, match=message):
        Sample(**values)  # type: ignore[arg-type]


def test_bad_batches_and_settings_are_refused() -> None:
    evidence = Evidence()
    with pytest.raises(ValueError, match="arm must be one of"):
        evidence.add_batch("main", [1.0])
    with pytest.raises(ValueError, match="finite and not negative"):
        evidence.add_batch("candidate", [1.0, math.inf])
    with pytest.raises(ValueError, match="exceed the answers timed"):
        evidence.add_batch("candidate", [1.0], mismatches=2)
    assert evidence.counts()["candidate"]["n"] == 0  # nothing half-added
    with pytest.raises(ValueError, match="alpha must be in"):
        Settings(alpha=1.5)


def test_samples_one_by_one_and_in_a_batch_give_the_same_evidence() -> None:
    rng = np.random.default_rng(7)
    latencies = rng.lognormal(0.5, 0.4, 500)
    one, batch = Evidence(), Evidence()
    for i, ms in enumerate(latencies):
        one.add(Sample("control", float(ms), False, "mismatch" if i < 20 else "match"))
    one.add(Sample("control", 0.0, True, "error"))
    batch.add_batch("control", latencies, errors=1, mismatches=20)
    a, b = one.arms["control"], batch.arms["control"]
    assert one.counts() == batch.counts()
    assert one.counts()["control"] == {
        "n": 501,
        "errors": 1,
        "match": 480,
        "mismatch": 20,
        "stale": 0,
    }
    assert a.log_mean == pytest.approx(b.log_mean) == pytest.approx(np.log(latencies).mean())
    one.close_batch()
    assert a.batches == b.batches == 1 and a.batch_mean == pytest.approx(b.batch_mean)


def test_the_spread_is_measured_between_batches() -> None:
    """Correlated runs of latencies widen the interval; independent samples do not."""
    rng = np.random.default_rng(11)
    evidence = Evidence()
    means = []
    for _ in range(40):
        shift = rng.normal(0.0, 0.3)  # a run: every sample of this batch shares it
        batch = np.exp(shift + rng.normal(0.0, 0.1, 100))
        evidence.add_batch("control", batch)
        means.append(np.log(batch).mean())
    arm = evidence.arms["control"]
    assert arm.batches == 40
    assert arm.mean_variance == pytest.approx(np.var(means, ddof=1) / 40)
    naive = np.log(np.concatenate([np.asarray(arm.kept)])).var(ddof=1) / arm.timed
    assert arm.mean_variance > 5 * naive
    assert Evidence().arms["control"].mean_variance == math.inf


def test_the_interval_narrows_with_evidence_and_never_claims_certainty() -> None:
    widths = [half_width(1.0 / n, 0.02, 0.0225) for n in (10, 100, 1000, 10000)]
    assert widths == sorted(widths, reverse=True) and widths[-1] > 0
    assert half_width(0.0, 0.02, 0.0225) == 0.0 and half_width(math.inf, 0.02, 1) == math.inf
    assert rate_variance(0, 100) > 0  # no error seen is not a rate known to be 0
    assert rate_variance(0, 0) == math.inf


def test_a_decided_verdict_explains_itself_and_round_trips_through_json() -> None:
    rng = np.random.default_rng(3)
    evidence = Evidence()
    for _ in range(10):
        evidence.add_batch("candidate", rng.lognormal(0.0, 0.3, 100))
        evidence.add_batch("control", rng.lognormal(0.7, 0.3, 100))
    evidence.add_example({"request": "q", "expected": "a", "got": "b"})
    verdict = decide(evidence)
    assert (verdict.decision, verdict.rule) == (Decision.PROMOTE, "improvement")
    assert "faster than the control" in verdict.reason
    latency, errors = verdict.metrics
    assert latency.outcome == "better" and latency.effect is not None and latency.effect < -0.4
    assert latency.interval is not None and latency.interval[1] < -0.05
    assert latency.test.startswith("Mann-Whitney U p=") and "Hodges-Lehmann" in latency.test
    assert errors.test.startswith("Fisher exact p=")
    assert verdict.mismatches.outcome == "ok" and verdict.mismatches.examples[0]["got"] == "b"
    data = json.loads(json.dumps(verdict.to_dict()))
    assert Verdict.from_dict(data) == verdict


def test_while_collecting_nothing_is_explained_yet() -> None:
    evidence = Evidence()
    evidence.add_batch("candidate", [1.0] * 5)
    evidence.add_batch("control", [1.0] * 5)
    verdict = decide(evidence)
    assert verdict.decision is Decision.CONTINUE and all(m.test == "" for m in verdict.metrics)
