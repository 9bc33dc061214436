"""The verdict's error rates, by simulation through the real decision code.

Each run feeds :func:`decide` one second of seeded synthetic samples at a time (lognormal
latencies, Bernoulli errors and mismatches), as the arbiter does, until it decides or the
experiment's time is up. The rates over many seeds are asserted at the default settings.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import pytest

from osup_mp.evolution import Decision, Evidence, Settings, decide
from osup_mp.evolution.decision import latency_row

pytestmark = pytest.mark.stats

SIGMA = 0.4  # spread of log latency: p99/p50 ≈ 2.5, as measured on the reference agent
BASE_MS = 2.0
DEFAULTS = Settings()


@dataclass(frozen=True)
class Arm:
    factor: float = 1.0  # latency multiplier
    errors: float = 0.0
    mismatches: float = 0.0


@dataclass(frozen=True)
class Run:
    decision: Decision
    rule: str
    seconds: int
    reason: str = ""


def simulate(
    seed: int,
    candidate: Arm,
    control: Arm = Arm(),
    *,
    rate: int = 100,
    duration: int = 300,
    settings: Settings = DEFAULTS,
    load: float = 0.0,
    bias: float = 0.0,
    calibration: int = 0,
) -> Run:
    """``load``: the spread of a slow-down both arms share, drawn anew every second (on
    the log scale: 0.5 makes some seconds 2-3x slower than others for both). ``bias``: the
    spread of the candidate process's own steady slow-down whatever code it runs (two
    processes of the same code differ so); ``calibration``: seconds both arms first run the
    control's code, measuring it, before the judged ``duration``."""
    rng = np.random.default_rng(seed)
    evidence = Evidence(settings)
    own = {"candidate": 1.0, "control": 1.0}
    if bias or calibration:
        own["candidate"] = _calibrate(evidence, seed, bias, calibration, rate)
    # Everything drawn up front, fed a second at a time.
    shared = rng.lognormal(0.0, load, (duration, 1)) if load else np.ones((duration, 1))
    draws = {
        name: (
            BASE_MS * arm.factor * own[name] * shared * rng.lognormal(0.0, SIGMA, (duration, rate)),
            rng.binomial(rate, arm.errors, duration),
            rng.random((duration, rate)) < arm.mismatches,
        )
        for name, arm in (("candidate", candidate), ("control", control))
    }
    for second in range(duration):
        for name, (latency, errors, differ) in draws.items():
            failed = int(errors[second])
            answered = latency[second, failed:]
            wrong = int(differ[second, failed:].sum())
            evidence.add_batch(name, answered, errors=failed, mismatches=wrong)
        verdict = decide(evidence, settings, final=second + 1 == duration)
        if verdict.decision is not Decision.CONTINUE:
            return Run(verdict.decision, verdict.rule, second + 1, verdict.reason)
    raise AssertionError("final=True must decide")


def _calibrate(evidence: Evidence, seed: int, bias: float, seconds: int, rate: int) -> float:
    """The candidate process's own factor for the whole run, after ``seconds`` of both
    arms on the same code (a stream of its own: the judged part draws as without)."""
    rng = np.random.default_rng([seed, 1])
    own = float(rng.lognormal(0.0, bias)) if bias else 1.0
    for _ in range(seconds):
        for name, factor in (("candidate", own), ("control", 1.0)):
            evidence.calibrate(name, BASE_MS * factor * rng.lognormal(0.0, SIGMA, rate))
    return own


def rates(runs: list[Run]) -> dict[str, float]:
    return {d.value: sum(r.decision is d for r in runs) / len(runs) for d in Decision}


def test_a_a_experiments_are_almost_never_promoted() -> None:
    runs = [simulate(seed, Arm()) for seed in range(500)]
    found = rates(runs)
    assert found["promote"] <= 0.01, found
    assert found["reject"] <= 0.02, found
    assert found["inconclusive"] >= 0.97, found


# Two shadows of the same code measured 3-8% apart on this host, steadily (memory layout,
# placement): the same ratio before and after one of them hot-loaded the same code again.
PROCESS_BIAS = 0.05


def test_the_pairs_own_difference_decides_identical_arms_unless_it_is_calibrated() -> None:
    """Without calibration the interval closes around the processes' own difference, and
    identical code is promoted or rejected; with 15 s of it (the default), almost never."""
    bare = rates([simulate(seed, Arm(), bias=PROCESS_BIAS) for seed in range(300)])
    assert bare["promote"] + bare["reject"] >= 0.08, bare
    runs = [simulate(seed, Arm(), bias=PROCESS_BIAS, calibration=15) for seed in range(500)]
    found = rates(runs)
    assert found["promote"] <= 0.01, found
    assert found["reject"] <= 0.02, found


def test_calibrated_experiments_still_catch_a_regression_and_a_speed_up() -> None:
    slower = [
        simulate(seed, Arm(factor=1.2), bias=PROCESS_BIAS, calibration=15) for seed in range(200)
    ]
    assert rates(slower)["reject"] >= 0.95, rates(slower)
    faster = [  # 15 s of calibration and 15 of the candidate's code: the 30 s target
        simulate(seed, Arm(factor=0.5), bias=PROCESS_BIAS, calibration=15, duration=15)
        for seed in range(200)
    ]
    assert rates(faster)["promote"] >= 0.95, rates(faster)


def test_a_20_percent_latency_regression_is_rejected() -> None:
    runs = [simulate(seed, Arm(factor=1.2)) for seed in range(200)]
    rejected = [r for r in runs if r.decision is Decision.REJECT]
    assert len(rejected) / len(runs) >= 0.95, rates(runs)
    assert {r.rule for r in rejected} == {"latency_regression"}


def test_an_error_rise_is_rejected_even_when_latency_improves() -> None:
    runs = [simulate(seed, Arm(factor=0.7, errors=0.06), Arm(errors=0.01)) for seed in range(200)]
    assert not any(r.decision is Decision.PROMOTE for r in runs)
    rejected = [r for r in runs if r.decision is Decision.REJECT]
    assert len(rejected) / len(runs) >= 0.95, rates(runs)
    assert {r.rule for r in rejected} == {"error_rise"}


def test_a_twice_as_fast_candidate_is_promoted_within_30_seconds() -> None:
    runs = [simulate(seed, Arm(factor=0.5), duration=30) for seed in range(200)]
    promoted = [r for r in runs if r.decision is Decision.PROMOTE]
    assert len(promoted) / len(runs) >= 0.95, rates(runs)
    assert max(r.seconds for r in promoted) <= 30


def test_a_load_both_arms_share_cancels_out() -> None:
    """Seconds 2-3x slower than others, for both arms at once (the machine's load): the
    arms are compared look by look, so identical ones stay identical and a 20% regression
    is still found."""
    same = [simulate(seed, Arm(), load=0.5) for seed in range(300)]
    assert rates(same)["promote"] <= 0.01 and rates(same)["reject"] <= 0.02, rates(same)
    slower = [simulate(seed, Arm(factor=1.2), load=0.5, duration=120) for seed in range(200)]
    assert rates(slower)["reject"] >= 0.95, rates(slower)


def test_no_traffic_is_inconclusive_for_lack_of_data() -> None:
    verdict = decide(Evidence(), final=True)
    assert (verdict.decision, verdict.rule) == (Decision.INCONCLUSIVE, "not_enough_data")
    assert decide(Evidence()).decision is Decision.CONTINUE


def test_wrong_answers_are_vetoed_and_noisy_ones_are_not() -> None:
    wrong = [simulate(seed, Arm(factor=0.5, mismatches=0.05)) for seed in range(200)]
    vetoed = [r for r in wrong if r.rule == "mismatch_veto"]
    assert len(vetoed) / len(wrong) >= 0.95, rates(wrong)
    assert not any(r.decision is Decision.PROMOTE for r in wrong)
    noisy = [simulate(seed, Arm(mismatches=0.02), Arm(mismatches=0.02)) for seed in range(300)]
    assert sum(r.rule == "mismatch_veto" for r in noisy) / len(noisy) <= 0.01


def test_the_latency_interval_covers_the_truth_at_every_look() -> None:
    """Time-uniform coverage: over every look of a run, the interval never misses."""
    settings = Settings()
    truth = math.expm1(math.log(1.15))  # candidate 15% slower
    misses = 0
    seeds = 300
    for seed in range(seeds):
        rng = np.random.default_rng(10_000 + seed)
        evidence = Evidence(settings)
        for _ in range(120):
            for name, factor in (("candidate", 1.15), ("control", 1.0)):
                latency = BASE_MS * factor * rng.lognormal(0.0, SIGMA, 50)
                evidence.add_batch(name, latency)
            row = latency_row(evidence, settings)
            if row.interval is not None and not row.interval[0] <= truth <= row.interval[1]:
                misses += 1
                break
    assert misses / seeds <= settings.alpha + 0.01, misses


def test_an_inconclusive_verdict_says_how_much_more_traffic_a_decision_needs() -> None:
    """The estimate is a projection at the effect seen so far: with that much more traffic,
    about half the runs decide, and most within twice as much."""
    estimated, within, within_twice = 0, 0, 0
    for seed in range(100):
        rng = np.random.default_rng(seed)
        evidence = Evidence()

        def second(rng: np.random.Generator = rng, evidence: Evidence = evidence) -> None:
            evidence.add_batch("candidate", BASE_MS * 0.9 * rng.lognormal(0.0, SIGMA, 20))
            evidence.add_batch("control", BASE_MS * rng.lognormal(0.0, SIGMA, 20))

        for _ in range(12):
            second()
        verdict = decide(evidence, final=True)
        assert verdict.rule == "no_difference"
        found = re.search(r"about ([\d,]+) more mirrored requests \((\d+) more", verdict.reason)
        if found is None:
            continue
        estimated += 1
        needed = int(found[2])
        assert int(found[1].replace(",", "")) == needed * 20
        for looks in range(1, 2 * needed + 1):
            second()
            if decide(evidence).decision is not Decision.CONTINUE:
                within += looks <= needed
                within_twice += 1
                break
    assert estimated >= 80
    assert within / estimated >= 0.4 and within_twice / estimated >= 0.6, (within, within_twice)
    same = [simulate(seed, Arm(), duration=60) for seed in range(20)]
    assert all("inside the margins" in r.reason or "would need" in r.reason for r in same)
