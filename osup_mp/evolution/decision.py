"""The verdict on an experiment's evidence so far: promote, reject, continue or inconclusive.

Three questions, each an always-valid interval (:mod:`.sequential`) held to a margin:

* answers: does the candidate disagree with the main more often than the control does (the
  control's rate is the noise floor: nondeterminism, races with writes)?
* errors: does the candidate fail more often than the control?
* latency: is the candidate slower or faster than the control (ratio of geometric means,
  less the pair's own ratio while both ran the same code, when that was measured)?

* throughput: does the candidate take a smaller share of the mirrored copies offered to it
  (the splitter drops a copy when an arm still has a full window in flight)?
* memory: is the candidate's resident memory above the control's, at every recent look?
  Memory is measured, not sampled, so it has no interval: an excess must last.

Rules, first that holds: a mismatch veto, an error rise, a latency regression, a memory
growth and a throughput drop reject; a promotion needs a speed-up of at least
``min_improvement``, errors shown no worse than ``error_margin``, answers shown to agree
within ``mismatch_tolerance``, and neither throughput nor memory worse. The one
decision: a gain on one metric never buys a loss on another (the seed compared two point
metrics, and a latency gain could hide a rise in errors); promotion needs every question
answered, rejection only one.
"""

from __future__ import annotations

import math

from osup_mp.evolution import fixed
from osup_mp.evolution.evidence import MEMORY_LOOKS, MIN_BATCHES, ArmEvidence, Evidence
from osup_mp.evolution.sequential import (
    TAU2_LOG_LATENCY,
    TAU2_RATE,
    fixed_half_width,
    half_width,
    interval,
    rate_variance,
)
from osup_mp.evolution.spec import Decision, Settings
from osup_mp.evolution.verdict import MetricRow, MismatchRow, Verdict

MIN_MISMATCHES = 3  # a veto needs at least this many differing answers to show
MEMORY_FLOOR_MB = 16.0  # a smaller excess is allocator noise, whatever its share


def decide(evidence: Evidence, settings: Settings | None = None, *, final: bool = False) -> Verdict:
    """The verdict now; ``final`` when the experiment's time is up (no CONTINUE then)."""
    s = settings or evidence.settings
    cand, ctrl = evidence.arms["candidate"], evidence.arms["control"]
    latency = _latency(evidence, s)
    errors = _errors(cand, ctrl, s)
    answers = _answers(cand, ctrl, s, evidence)
    throughput = _throughput(cand, ctrl, s)
    memory = _memory(evidence, s)
    enough = min(cand.timed, ctrl.timed) >= s.min_samples

    decision, rule, reason = Decision.CONTINUE, "collecting", "collecting evidence"
    if answers.outcome == "veto":
        decision, rule = Decision.REJECT, "mismatch_veto"
        reason = (
            f"the candidate's answers differ from the main's in {answers.mismatches_candidate} "
            f"of {answers.compared_candidate} compared requests (control "
            f"{answers.mismatches_control} of {answers.compared_control}): excess "
            f"{_pct(answers.excess)} > tolerance {_pct(s.mismatch_tolerance)}"
        )
    elif errors.outcome == "worse":
        decision, rule = Decision.REJECT, "error_rise"
        reason = (
            f"the candidate's error rate {_pct(errors.candidate)} exceeds the control's "
            f"{_pct(errors.control)} by {_pts(errors.effect)} (at least {_pts(_lo(errors))}) "
            f"> margin {_pts(s.error_margin)}"
        )
    elif enough and latency.outcome == "worse":
        decision, rule = Decision.REJECT, "latency_regression"
        reason = (
            f"the candidate is {_share(latency.effect)} slower than the control "
            f"(at least {_share(_lo(latency))}), more than the {_share(s.latency_margin)} allowed"
        )
    elif memory.outcome == "worse":
        decision, rule = Decision.REJECT, "memory_growth"
        reason = (
            f"the candidate holds {_mib(memory.candidate)} resident against the control's "
            f"{_mib(memory.control)}, at least {_share(_lo(memory))} and "
            f"{MEMORY_FLOOR_MB:.0f} MiB more at each of the last {MEMORY_LOOKS} looks "
            f"(more than the {_share(s.memory_margin)} allowed)"
        )
    elif throughput.outcome == "worse":
        decision, rule = Decision.REJECT, "throughput_drop"
        reason = (
            f"the candidate took {_pct(throughput.candidate)} of the mirrored copies offered "
            f"to it, the control {_pct(throughput.control)}: {_pts(throughput.effect)} (at "
            f"most {_pts(_hi(throughput))}), beyond the {_pts(-s.capacity_margin)} allowed"
        )
    elif (
        enough
        and latency.outcome == "better"
        and errors.outcome in ("same", "better")
        and answers.outcome == "ok"
    ):
        decision, rule = Decision.PROMOTE, "improvement"
        reason = (
            f"the candidate is {_share(latency.effect)} faster than the control (at "
            f"least {_share(_hi(latency))}), its errors are within {_pts(s.error_margin)} and "
            f"its answers agree with the main's ({answers.mismatches_candidate} of "
            f"{answers.compared_candidate} differ)"
        )
    elif final:
        decision = Decision.INCONCLUSIVE
        if not enough:
            rule = "not_enough_data"
            reason = (
                f"too little traffic: {cand.timed} and {ctrl.timed} timed answers "
                f"(candidate, control), {s.min_samples} needed per arm"
            )
        else:
            rule = "no_difference"
            reason = (
                f"no clear difference after {cand.n} and {ctrl.n} samples: latency "
                f"{latency.outcome}, errors {errors.outcome}, answers {answers.outcome}; "
                f"{outlook(evidence, s)}"
            )
    metrics = (latency, errors, throughput, memory)
    if decision is not Decision.CONTINUE:  # explain, for the record
        drops = fixed.rate_test(cand.dropped, cand.offered, ctrl.dropped, ctrl.offered)
        metrics = (
            _with_test(latency, fixed.latency_test(cand.kept, ctrl.kept) + _timing(evidence)),
            _with_test(errors, fixed.rate_test(cand.errors, cand.n, ctrl.errors, ctrl.n)),
            _with_test(throughput, drops),
            _with_test(memory, _memory_range(evidence)),
        )
    return Verdict(decision, rule, reason, metrics, answers)


def _timing(evidence: Evidence) -> str:
    """What the latencies are: the agents' service times, their waits for a CPU (which the
    host's load and the scheduler's placement decide, not the code) taken out, or where an
    agent gives no figures its manager's round trips; and the pair's own difference taken
    out of the effect."""
    cand, ctrl = evidence.arms["candidate"], evidence.arms["control"]
    calibration = evidence.calibration
    own = (
        f"; the arms' own difference, both on the main's code before the candidate's was "
        f"loaded, {_rel(math.expm1(calibration.mean))} over {calibration.n} looks, taken out"
        if calibration.n
        else ""
    )
    if not (cand.waited_n or ctrl.waited_n):
        return f"; timed by the arms' managers (round trips){own}"
    text = (
        f"; service times as the agents measured them, their waits for a CPU taken out: "
        f"{_mean(cand.waited_sum, cand.waited_n)} ms per answer (candidate), "
        f"{_mean(ctrl.waited_sum, ctrl.waited_n)} ms (control)"
    )
    by_manager = cand.timed - cand.waited_n + ctrl.timed - ctrl.waited_n
    return text + (f"; {by_manager} round trips timed by the managers" if by_manager else "") + own


def _mean(total: float, n: int) -> str:
    return f"{total / n:.3g}" if n else "-"


def outlook(evidence: Evidence, s: Settings) -> str:
    """How much more traffic a latency decision would need, at the effect and spread seen
    so far: the smallest number of looks whose interval clears the nearer margin."""
    pairs, cand = evidence.pairs, evidence.arms["candidate"]
    effect = latency_effect(evidence, s)
    if effect is None:
        return f"latency needs {MIN_BATCHES} looks with both arms answering ({pairs.n} so far)"
    estimate = effect[0]
    worse_at, better_at = math.log1p(s.latency_margin), math.log1p(-s.min_improvement)
    if estimate > worse_at:
        room, verdict = estimate - worse_at, "a rejection"
    elif estimate < better_at:
        room, verdict = better_at - estimate, "a promotion"
    else:
        return (
            f"latency {_rel(math.expm1(estimate))} is inside the margins: more traffic "
            "would show the arms alike, not decide"
        )
    calibrated = evidence.calibration.n > 0
    fixed_part = _half_calibration(evidence, s)  # the calibration is over: it stays as wide
    if fixed_part >= room:
        return (
            f"{verdict} is out of reach: the arms' own difference, measured before the "
            "candidate's code was loaded, is not known closely enough"
        )
    spread = pairs.m2 / (pairs.n - 1)
    alpha = s.alpha / 2 if calibrated else s.alpha

    def clears(looks: int) -> bool:
        return half_width(spread / looks, alpha, TAU2_LOG_LATENCY) + fixed_part < room

    high = pairs.n
    while not clears(high):
        if high > pairs.n * 10_000:
            return f"{verdict} is out of reach: the effect is tiny against the spread"
        high *= 2
    low = max(pairs.n, high // 2)
    while low < high:  # the fewest looks that clear the margin
        middle = (low + high) // 2
        low, high = (low, middle) if clears(middle) else (middle + 1, high)
    if high == pairs.n:
        return "latency would decide now: errors or answers are what is not yet shown"
    per_look = cand.timed / max(cand.batches, 1)
    return (
        f"{verdict} would need about {(high - pairs.n) * per_look:,.0f} more mirrored "
        f"requests ({high - pairs.n} more looks at this rate)"
    )


def latency_effect(evidence: Evidence, s: Settings) -> tuple[float, float, float] | None:
    """The candidate's log latency ratio to the control's, less the pair's own when it was
    calibrated, and its always-valid interval; None until enough looks are paired."""
    pairs, calibration = evidence.pairs, evidence.calibration
    variance = pairs.mean_variance
    if not math.isfinite(variance):
        return None
    if not calibration.n:  # no calibration: the pair's own difference counts as none
        return pairs.mean, *interval(pairs.mean, variance, s.alpha, TAU2_LOG_LATENCY)
    if not math.isfinite(calibration.mean_variance):
        return None
    # Each interval at half the error rate, so that both hold at once (Bonferroni): the
    # judged one at every look, the calibration's (over, fixed) for good.
    lo, hi = interval(pairs.mean, variance, s.alpha / 2, TAU2_LOG_LATENCY)
    own = _half_calibration(evidence, s)
    mean = calibration.mean
    return pairs.mean - mean, lo - mean - own, hi - mean + own


def _half_calibration(evidence: Evidence, s: Settings) -> float:
    """Half the width of the calibration's interval (0 without one): a fixed-horizon one,
    since the calibration's length never depended on what it measured."""
    calibration = evidence.calibration
    if not calibration.n:
        return 0.0
    return fixed_half_width(calibration.mean_variance, calibration.n, s.alpha / 2)


def latency_row(evidence: Evidence, settings: Settings) -> MetricRow:
    """The latency question alone, as :func:`decide` asks it."""
    return _latency(evidence, settings)


def _latency(evidence: Evidence, s: Settings) -> MetricRow:
    cand, ctrl = evidence.arms["candidate"], evidence.arms["control"]
    worse_at, better_at = math.log1p(s.latency_margin), math.log1p(-s.min_improvement)
    threshold = f"worse > {_rel(s.latency_margin)}, better < {_rel(-s.min_improvement)}"
    geometric = (
        math.exp(cand.log_mean) if cand.timed else None,
        math.exp(ctrl.log_mean) if ctrl.timed else None,
    )
    effect = latency_effect(evidence, s)  # batch means paired by look: shared load cancels
    if effect is None:
        return MetricRow(
            "latency_ms", cand.timed, ctrl.timed, *geometric, None, None, threshold, "unclear", ""
        )
    diff, lo, hi = effect
    if lo > worse_at:
        outcome = "worse"
    elif hi < better_at:
        outcome = "better"
    elif lo > better_at and hi < worse_at:
        outcome = "same"
    else:
        outcome = "unclear"
    return MetricRow(
        "latency_ms",
        cand.timed,
        ctrl.timed,
        *geometric,
        math.expm1(diff),
        (math.expm1(lo), math.expm1(hi)),
        threshold,
        outcome,
        "",
    )


def _rate_gap(
    events_c: int, n_c: int, events_k: int, n_k: int, margin: float, s: Settings
) -> tuple[float, tuple[float, float], str]:
    """The candidate's rate minus the control's, its always-valid interval, and the outcome
    when a higher rate is worse: "worse" (shown above ``margin``), "better" (below
    ``-margin``), "same" (shown below ``margin``) or "unclear"."""
    gap = events_c / n_c - events_k / n_k
    variance = rate_variance(events_c, n_c) + rate_variance(events_k, n_k)
    lo, hi = interval(gap, variance, s.alpha, TAU2_RATE)
    if lo > margin:
        outcome = "worse"
    elif hi < -margin:
        outcome = "better"
    elif hi < margin:
        outcome = "same"
    else:
        outcome = "unclear"
    return gap, (lo, hi), outcome


def _errors(cand: ArmEvidence, ctrl: ArmEvidence, s: Settings) -> MetricRow:
    threshold = f"worse > {_pts(s.error_margin)}"
    if cand.n == 0 or ctrl.n == 0:
        return MetricRow(
            "error_rate", cand.n, ctrl.n, None, None, None, None, threshold, "unclear", ""
        )
    gap, bounds, outcome = _rate_gap(cand.errors, cand.n, ctrl.errors, ctrl.n, s.error_margin, s)
    rate_c, rate_k = cand.errors / cand.n, ctrl.errors / ctrl.n
    return MetricRow(
        "error_rate", cand.n, ctrl.n, rate_c, rate_k, gap, bounds, threshold, outcome, ""
    )


def _throughput(cand: ArmEvidence, ctrl: ArmEvidence, s: Settings) -> MetricRow:
    """The share of offered copies each arm took: a slower or stalled arm drops more. It is
    judged as the gap in drop rates and shown as the gap in shares taken (its negative)."""
    threshold = f"worse < {_pts(-s.capacity_margin)}"
    if cand.offered == 0 or ctrl.offered == 0:
        return MetricRow(
            "throughput", cand.offered, ctrl.offered, None, None, None, None, threshold,
            "unclear", "",
        )  # fmt: skip
    gap, (lo, hi), outcome = _rate_gap(
        cand.dropped, cand.offered, ctrl.dropped, ctrl.offered, s.capacity_margin, s
    )
    taken_c = 1 - cand.dropped / cand.offered
    taken_k = 1 - ctrl.dropped / ctrl.offered
    return MetricRow(
        "throughput", cand.offered, ctrl.offered, taken_c, taken_k, -gap, (-hi, -lo),
        threshold, outcome, "",
    )  # fmt: skip


def _memory(evidence: Evidence, s: Settings) -> MetricRow:
    """Resident memory at the newest look; the effect is relative to the control's, and
    the "interval" the smallest and largest excess over the last looks kept."""
    floor = f"{MEMORY_FLOOR_MB:.0f} MiB"
    threshold = f"worse > {_rel(s.memory_margin)}, {floor}, {MEMORY_LOOKS} looks"
    looks, n = list(evidence.memory), evidence.memory_looks
    if not looks:
        return MetricRow("memory_mb", 0, 0, None, None, None, None, threshold, "unclear", "")
    mib = [c - k for c, k in looks]
    rel = [(c - k) / max(k, 1.0) for c, k in looks]
    outcome = "unclear"
    if len(looks) == MEMORY_LOOKS:
        if min(mib) > MEMORY_FLOOR_MB and min(rel) > s.memory_margin:
            outcome = "worse"
        elif max(mib) < -MEMORY_FLOOR_MB and max(rel) < -s.memory_margin:
            outcome = "better"
        else:
            outcome = "same"
    return MetricRow(
        "memory_mb", n, n, *looks[-1], rel[-1], (min(rel), max(rel)), threshold, outcome, "",
    )  # fmt: skip


def _memory_range(evidence: Evidence) -> str:
    if not evidence.memory:
        return "no measurement"
    excess = [c - k for c, k in evidence.memory]
    looks = f"the last {len(excess)} looks" if len(excess) > 1 else "one look"
    return f"measured: excess {min(excess):+.1f} to {max(excess):+.1f} MiB over {looks}"


def _answers(cand: ArmEvidence, ctrl: ArmEvidence, s: Settings, evidence: Evidence) -> MismatchRow:
    mc, mk = cand.outcomes["mismatch"], ctrl.outcomes["mismatch"]
    nc, nk = cand.compared, ctrl.compared
    excess: float | None = None
    bounds: tuple[float, float] | None = None
    outcome = "unclear"
    if nc and nk:
        excess, bounds, more = _rate_gap(mc, nc, mk, nk, s.mismatch_tolerance, s)
        if more == "worse" and mc >= MIN_MISMATCHES:
            outcome = "veto"
        elif more in ("same", "better"):  # shown below the tolerance
            outcome = "ok"
    return MismatchRow(
        nc, mc, nk, mk, cand.outcomes["stale"], ctrl.outcomes["stale"], excess, bounds, outcome,
        tuple(evidence.examples),
    )  # fmt: skip


def _with_test(row: MetricRow, test: str) -> MetricRow:
    return MetricRow(
        row.name, row.n_candidate, row.n_control, row.candidate, row.control, row.effect,
        row.interval, row.threshold, row.outcome, test,
    )  # fmt: skip


def _lo(row: MetricRow) -> float | None:
    return None if row.interval is None else row.interval[0]


def _hi(row: MetricRow) -> float:
    return math.inf if row.interval is None else row.interval[1]


def _rel(value: float | None) -> str:
    return "?" if value is None else f"{value:+.1%}"


def _share(value: float | None) -> str:
    return "?" if value is None else f"{abs(value):.1%}"


def _mib(value: float | None) -> str:
    return "?" if value is None else f"{value:.0f} MiB"


def _pct(value: float | None) -> str:
    return "?" if value is None else f"{value:.2%}"


def _pts(value: float | None) -> str:
    return "?" if value is None else f"{value * 100:+.2f} pt"
