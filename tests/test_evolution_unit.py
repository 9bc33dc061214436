"""The verdict's building blocks: samples checked at the door, the evidence's running sums,
the always-valid interval, and a verdict that survives its JSON form."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from osup_mp.evolution import Decision, Evidence, MetricRow, Sample, Settings, Verdict, decide
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
        ({"waited_ms": -0.5}, "waited_ms must be finite and not negative"),
        ({"waited_ms": math.inf}, "waited_ms must be finite and not negative"),
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
    assert a.batches == b.batches == 1  # the same batch, waiting for its pair
    assert one.pairs.pending["control"] == pytest.approx(batch.pairs.pending["control"])


def test_the_spread_is_measured_between_batches() -> None:
    """Correlated runs of latencies widen the interval; independent samples do not."""
    rng = np.random.default_rng(11)
    evidence = Evidence()
    differences = []
    for _ in range(40):
        means = []
        for arm in ("candidate", "control"):
            shift = rng.normal(0.0, 0.3)  # a run: every sample of this batch shares it
            batch = np.exp(shift + rng.normal(0.0, 0.1, 100))
            evidence.add_batch(arm, batch)
            means.append(np.log(batch).mean())
        differences.append(means[0] - means[1])
    assert evidence.arms["control"].batches == evidence.pairs.n == 40
    assert evidence.pairs.mean == pytest.approx(np.mean(differences))
    assert evidence.pairs.mean_variance == pytest.approx(np.var(differences, ddof=1) / 40)
    naive = sum(np.log(np.asarray(a.kept)).var(ddof=1) / a.timed for a in evidence.arms.values())
    assert evidence.pairs.mean_variance > 5 * naive
    assert Evidence().pairs.mean_variance == math.inf


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
    latency, errors, throughput, memory = verdict.metrics
    assert (throughput.outcome, memory.outcome) == ("unclear", "unclear")  # not measured here
    assert memory.test == "no measurement"
    assert latency.outcome == "better" and latency.effect is not None and latency.effect < -0.4
    assert latency.interval is not None and latency.interval[1] < -0.05
    assert latency.test.startswith("Mann-Whitney U p=") and "Hodges-Lehmann" in latency.test
    assert errors.test.startswith("Fisher exact p=")
    assert verdict.mismatches.outcome == "ok" and verdict.mismatches.examples[0]["got"] == "b"
    data = json.loads(json.dumps(verdict.to_dict()))
    assert Verdict.from_dict(data) == verdict


def test_the_verdict_says_how_the_latencies_were_timed() -> None:
    """Service times the agents measured, with the waits for a CPU taken out of them; or,
    from an agent that gives no figures, its manager's round trips."""
    rng = np.random.default_rng(5)
    by_agents, by_managers = Evidence(), Evidence()
    for _ in range(12):
        for arm, waited in (("candidate", 0.25), ("control", 0.75)):
            for ms in rng.lognormal(0.0, 0.2, 30):
                by_agents.add(Sample(arm, float(ms), False, "match", waited))
                by_managers.add(Sample(arm, float(ms), False, "match"))
        by_agents.close_batch()
        by_managers.close_batch()
    latency = decide(by_agents, final=True).metrics[0]
    assert latency.test.endswith(
        "; service times as the agents measured them, their waits for a CPU taken out: "
        "0.25 ms per answer (candidate), 0.75 ms (control)"
    )
    latency = decide(by_managers, final=True).metrics[0]
    assert latency.test.endswith("; timed by the arms' managers (round trips)")


def test_the_pairs_own_difference_is_taken_out_of_the_effect() -> None:
    """A candidate process 8% slower whatever it runs: measured while both arms ran the
    same code, it is no effect of the candidate's code."""
    rng = np.random.default_rng(9)
    calibrated, bare = Evidence(), Evidence()
    for _ in range(15):
        calibrated.calibrate("candidate", 1.08 * rng.lognormal(0.0, 0.1, 50))
        calibrated.calibrate("control", rng.lognormal(0.0, 0.1, 50))
    for _ in range(60):
        for evidence in (calibrated, bare):
            evidence.add_batch("candidate", 1.08 * rng.lognormal(0.0, 0.1, 50))
            evidence.add_batch("control", rng.lognormal(0.0, 0.1, 50))
    latency = decide(bare, final=True).metrics[0]
    assert latency.effect is not None and latency.interval is not None
    assert 0.06 < latency.effect < 0.10 and latency.interval[0] > 0.05  # the processes' own
    verdict = decide(calibrated, final=True)
    latency = verdict.metrics[0]
    assert latency.effect is not None and latency.interval is not None
    assert abs(latency.effect) < 0.02 and latency.interval[0] < 0 < latency.interval[1]
    assert (verdict.decision, verdict.rule) == (Decision.INCONCLUSIVE, "no_difference")
    assert "the arms' own difference, both on the main's code before the candidate's was " in (
        latency.test
    )
    assert "over 15 looks, taken out" in latency.test
    assert calibrated.calibrated()["looks"] == 15
    assert 0.06 < calibrated.calibrated()["own_difference"] < 0.10
    with pytest.raises(ValueError, match="arm must be one of"):
        calibrated.calibrate("main", [1.0])
    with pytest.raises(ValueError, match="finite and not negative"):
        calibrated.calibrate("control", [-1.0])


def test_while_collecting_nothing_is_explained_yet() -> None:
    evidence = Evidence()
    evidence.add_batch("candidate", [1.0] * 5)
    evidence.add_batch("control", [1.0] * 5)
    verdict = decide(evidence)
    assert verdict.decision is Decision.CONTINUE and all(m.test == "" for m in verdict.metrics)


def _equal_latencies(evidence: Evidence, looks: int = 20) -> None:
    rng = np.random.default_rng(11)
    for _ in range(looks):
        for arm in ("candidate", "control"):
            evidence.add_batch(arm, rng.lognormal(0.0, 0.3, 50))


MIB = 2**20


def test_a_lasting_memory_excess_rejects_and_a_spike_does_not() -> None:
    evidence = Evidence()
    _equal_latencies(evidence)
    for look in range(4):  # a growing candidate, but not yet for five looks
        evidence.add_memory((140 + 30 * look) * MIB, 100 * MIB)
    assert decide(evidence).decision is Decision.CONTINUE
    evidence.add_memory(260 * MIB, 100 * MIB)  # +40% .. +160% at all of the last five looks
    verdict = decide(evidence)
    assert (verdict.decision, verdict.rule) == (Decision.REJECT, "memory_growth")
    assert "260 MiB resident against the control's 100 MiB" in verdict.reason
    memory = verdict.metrics[-1]
    assert memory.name == "memory_mb" and memory.n_candidate == 5
    assert memory.effect == pytest.approx(1.6) and memory.interval == pytest.approx((0.4, 1.6))
    assert memory.test == "measured: excess +40.0 to +160.0 MiB over the last 5 looks"

    spike = Evidence()
    for mib in (100, 100, 400, 100, 100):  # one look far above: not a lasting excess
        spike.add_memory(mib * MIB, 100 * MIB)
    assert spike.memory_looks == 5 and _row(spike, "memory_mb").outcome == "same"
    small = Evidence()
    for _ in range(5):  # +60%, but 6 MiB: allocator noise on a small process
        small.add_memory(16 * MIB, 10 * MIB)
    assert _row(small, "memory_mb").outcome == "same"
    with pytest.raises(ValueError, match="must not be negative"):
        small.add_memory(-1, 0)


def test_an_arm_that_drops_more_mirrored_copies_is_rejected_for_throughput() -> None:
    evidence = Evidence()
    _equal_latencies(evidence)
    evidence.set_capacity("candidate", 2000, 900)  # took 55%
    evidence.set_capacity("control", 2000, 100)  # took 95%
    verdict = decide(evidence)
    assert (verdict.decision, verdict.rule) == (Decision.REJECT, "throughput_drop")
    assert "took 55.00% of the mirrored copies" in verdict.reason
    row = verdict.metrics[2]
    assert row.name == "throughput" and row.effect == pytest.approx(-0.40)
    assert row.test.startswith("Fisher exact p=")

    same = Evidence()
    same.set_capacity("candidate", 2000, 110)
    same.set_capacity("control", 2000, 100)
    assert _row(same, "throughput").outcome == "same"
    few = Evidence()  # a big gap on a few copies is not yet evidence
    few.set_capacity("candidate", 10, 5)
    few.set_capacity("control", 10, 0)
    assert _row(few, "throughput").outcome == "unclear"
    with pytest.raises(ValueError, match="between 0 and the copies offered"):
        few.set_capacity("control", 10, 11)
    with pytest.raises(ValueError, match="arm must be one of"):
        few.set_capacity("main", 10, 1)


def test_a_faster_candidate_that_drops_copies_or_grows_is_not_promoted() -> None:
    rng = np.random.default_rng(5)
    for harm in ("throughput", "memory"):
        evidence = Evidence()
        for _ in range(20):
            evidence.add_batch("candidate", rng.lognormal(0.0, 0.3, 100))
            evidence.add_batch("control", rng.lognormal(0.7, 0.3, 100))
            if harm == "memory":
                evidence.add_memory(300 * MIB, 100 * MIB)
        if harm == "throughput":
            evidence.set_capacity("candidate", 5000, 2500)
            evidence.set_capacity("control", 5000, 0)
        verdict = decide(evidence)
        assert verdict.decision is Decision.REJECT, (harm, verdict.reason)
        assert verdict.metrics[0].outcome == "better"  # the gain did not buy the loss


def _row(evidence: Evidence, name: str) -> MetricRow:
    return next(m for m in decide(evidence).metrics if m.name == name)
