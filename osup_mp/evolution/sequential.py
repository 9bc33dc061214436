"""Anytime-valid intervals: the evidence may be looked at every second and stopped at once.

A fixed-horizon test re-run at every look (Kayenta's canary analysis) finds a difference in
identical arms far more often than its confidence says. Here every interval is the
confidence sequence of the mixture sequential probability ratio test for a difference of
two independent means (Johari, Pekelis, Walsh, "Always valid inference", 2017; Robbins'
normal mixture): with an estimate ``theta`` of variance ``v`` and a normal mixing
distribution of variance ``tau2``, the set of differences the test does not reject,

    theta ± sqrt( v (v + tau2) / tau2 · (2 log(1/alpha) + log((v + tau2) / v)) ),

covers the true difference at every look at once with probability about ``1 - alpha``
(the normal approximation of the means is the only approximation). ``tau2`` says which
effect sizes the test is quickest to detect; it never affects validity, only speed.
"""

from __future__ import annotations

import functools
import math

#: Mixing variances, on each metric's scale: log latency ratios (effects of ~10-50%),
#: differences of error and mismatch rates (a few points).
TAU2_LOG_LATENCY = 0.15**2
TAU2_RATE = 0.03**2


def half_width(variance: float, alpha: float, tau2: float) -> float:
    """Half the width of the always-valid interval of an estimate of ``variance``."""
    if variance <= 0:
        return 0.0
    if not math.isfinite(variance):
        return math.inf
    spread = variance * (variance + tau2) / tau2
    return math.sqrt(spread * (2 * math.log(1 / alpha) + math.log((variance + tau2) / variance)))


def interval(estimate: float, variance: float, alpha: float, tau2: float) -> tuple[float, float]:
    h = half_width(variance, alpha, tau2)
    return estimate - h, estimate + h


def fixed_half_width(variance: float, n: int, alpha: float) -> float:
    """Half the width of the fixed-horizon t interval at ``1 - alpha`` of a mean of ``n``
    batch means whose mean has ``variance``: for an estimate whose sample size was fixed
    before it was taken (a calibration), valid once and tighter than a sequence."""
    if n < 2 or not math.isfinite(variance):
        return math.inf
    return _t_quantile(n - 1, 1 - alpha / 2) * math.sqrt(max(variance, 0.0))


@functools.lru_cache(maxsize=512)
def _t_quantile(df: int, p: float) -> float:
    from scipy.special import stdtrit  # 0.2 s, once; fixed.preload() has it imported already

    return float(stdtrit(df, p))


def rate_variance(events: int, n: int) -> float:
    """Variance of a rate estimated from ``events`` of ``n``, never 0: with no events yet,
    the rate is not known to be 0 (add-half smoothing, as in Agresti-Caffo)."""
    if n <= 0:
        return math.inf
    p = (events + 0.5) / (n + 1)
    return p * (1 - p) / n
