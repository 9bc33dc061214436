"""The verdict on an experiment's evidence so far: promote, reject, continue or inconclusive.

Three questions, each an always-valid interval (:mod:`.sequential`) held to a margin:

* answers: does the candidate disagree with the main more often than the control does (the
  control's rate is the noise floor: nondeterminism, races with writes)?
* errors: does the candidate fail more often than the control?
* latency: is the candidate slower or faster than the control (ratio of geometric means)?

Rules, first that holds: a mismatch veto, an error rise and a latency regression reject;
a promotion needs a speed-up of at least ``min_improvement``, errors shown no worse than
``error_margin`` and answers shown to agree within ``mismatch_tolerance``. The one
decision: a gain on one metric never buys a loss on another (the seed compared two point
metrics, and a latency gain could hide a rise in errors); promotion needs every question
answered, rejection only one.
"""

from __future__ import annotations

import math

from osup_mp.evolution import fixed
from osup_mp.evolution.evidence import ArmEvidence, Evidence
from osup_mp.evolution.sequential import TAU2_LOG_LATENCY, TAU2_RATE, interval, rate_variance
from osup_mp.evolution.spec import Decision, Settings
from osup_mp.evolution.verdict import MetricRow, MismatchRow, Verdict

MIN_MISMATCHES = 3  # a veto needs at least this many differing answers to show


def decide(evidence: Evidence, settings: Settings | None = None, *, final: bool = False) -> Verdict:
    """The verdict now; ``final`` when the experiment's time is up (no CONTINUE then)."""
    s = settings or evidence.settings
    cand, ctrl = evidence.arms["candidate"], evidence.arms["control"]
    latency = _latency(cand, ctrl, s)
    errors = _errors(cand, ctrl, s)
    answers = _answers(cand, ctrl, s, evidence)
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
                f"{latency.outcome}, errors {errors.outcome}, answers {answers.outcome}"
            )
    metrics = (latency, errors)
    if decision is not Decision.CONTINUE:  # explain, for the record
        metrics = (
            _with_test(latency, fixed.latency_test(cand.kept, ctrl.kept)),
            _with_test(errors, fixed.rate_test(cand.errors, cand.n, ctrl.errors, ctrl.n)),
        )
    return Verdict(decision, rule, reason, metrics, answers)


def latency_row(evidence: Evidence, settings: Settings) -> MetricRow:
    """The latency question alone, as :func:`decide` asks it."""
    return _latency(evidence.arms["candidate"], evidence.arms["control"], settings)


def _latency(cand: ArmEvidence, ctrl: ArmEvidence, s: Settings) -> MetricRow:
    worse_at, better_at = math.log1p(s.latency_margin), math.log1p(-s.min_improvement)
    threshold = f"worse if > {_rel(s.latency_margin)}, better if < {_rel(-s.min_improvement)}"
    geometric = (
        math.exp(cand.log_mean) if cand.timed else None,
        math.exp(ctrl.log_mean) if ctrl.timed else None,
    )
    variance = cand.mean_variance + ctrl.mean_variance
    if not math.isfinite(variance):
        return MetricRow(
            "latency_ms", cand.timed, ctrl.timed, *geometric, None, None, threshold, "unclear", ""
        )
    diff = cand.batch_mean - ctrl.batch_mean
    lo, hi = interval(diff, variance, s.alpha, TAU2_LOG_LATENCY)
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


def _errors(cand: ArmEvidence, ctrl: ArmEvidence, s: Settings) -> MetricRow:
    threshold = f"worse if > {_pts(s.error_margin)}"
    if cand.n == 0 or ctrl.n == 0:
        return MetricRow(
            "error_rate", cand.n, ctrl.n, None, None, None, None, threshold, "unclear", ""
        )
    rate_c, rate_k = cand.errors / cand.n, ctrl.errors / ctrl.n
    variance = rate_variance(cand.errors, cand.n) + rate_variance(ctrl.errors, ctrl.n)
    lo, hi = interval(rate_c - rate_k, variance, s.alpha, TAU2_RATE)
    if lo > s.error_margin:
        outcome = "worse"
    elif hi < -s.error_margin:
        outcome = "better"
    elif hi < s.error_margin:
        outcome = "same"  # shown no worse than the margin
    else:
        outcome = "unclear"
    return MetricRow(
        "error_rate",
        cand.n,
        ctrl.n,
        rate_c,
        rate_k,
        rate_c - rate_k,
        (lo, hi),
        threshold,
        outcome,
        "",
    )


def _answers(cand: ArmEvidence, ctrl: ArmEvidence, s: Settings, evidence: Evidence) -> MismatchRow:
    mc, mk = cand.outcomes["mismatch"], ctrl.outcomes["mismatch"]
    nc, nk = cand.compared, ctrl.compared
    excess: float | None = None
    bounds: tuple[float, float] | None = None
    outcome = "unclear"
    if nc and nk:
        excess = mc / nc - mk / nk
        variance = rate_variance(mc, nc) + rate_variance(mk, nk)
        bounds = interval(excess, variance, s.alpha, TAU2_RATE)
        if bounds[0] > s.mismatch_tolerance and mc >= MIN_MISMATCHES:
            outcome = "veto"
        elif bounds[1] < s.mismatch_tolerance:
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


def _pct(value: float | None) -> str:
    return "?" if value is None else f"{value:.2%}"


def _pts(value: float | None) -> str:
    return "?" if value is None else f"{value * 100:+.2f} pt"
