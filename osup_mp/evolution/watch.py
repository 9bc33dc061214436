"""The watch after a promotion: the main agent's own figures after it, against before it.

The main reports its metrics every few seconds (requests, mean handling latency, error
rate over the window). The experiment compared arms that ran side by side; the watch can
only compare the main with itself, before and after, under whatever load each saw. The
one decision: that comparison is confounded by load, so it rolls back only on what the
experiment could not have missed by chance — errors above ``error_margin`` or a latency
above the generous ``rollback_margin`` — over at least ``MIN_WINDOWS`` whole windows
after the promotion (the newest ``RECENT_S`` seconds of them), weighted by their requests.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

MIN_WINDOWS = 2  # whole metrics windows after the promotion, with requests, to judge
MIN_ERRORS = 3  # failed requests after the promotion before errors can roll it back
RECENT_S = 15.0  # the newest windows judged: a slow-down that comes late is not diluted


@dataclass(frozen=True, slots=True)
class Figures:
    """Pooled metrics windows: requests, their mean handling latency, failed requests."""

    windows: int
    requests: int
    latency_ms: float
    errors: float

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests


def pool(records: Iterable[Mapping[str, Any]]) -> Figures | None:
    """The windows of ``records`` (``{"at", "metrics"}``, as the health monitor keeps them)
    that served requests, pooled; None if none did."""
    windows, requests, latency, errors = 0, 0, 0.0, 0.0
    for record in records:
        metrics = record.get("metrics") or {}
        n = metrics.get("requests")
        if not isinstance(n, int) or n <= 0:
            continue
        windows += 1
        requests += n
        latency += float(metrics.get("avg_latency") or 0.0) * n
        errors += float(metrics.get("error_rate") or 0.0) * n
    if not requests:
        return None
    return Figures(windows, requests, latency / requests, errors)


def before_promotion(
    records: Sequence[Mapping[str, Any]], mirrored_at: float | None, promoted_at: float
) -> Figures | None:
    """The figures to watch a promotion against: the main's whole windows while the
    experiment mirrored its traffic (the traffic the verdict was about: before it, the main
    may have served other requests, a bulk load say, at another latency), else the windows
    that overlap it, else every window before the promotion."""
    before = [r for r in records if r["at"] <= promoted_at]
    during = [r for r in before if mirrored_at is not None and r["at"] > mirrored_at]
    for chosen in (during[1:], during, before):  # the first one straddles the start
        if (figures := pool(chosen)) is not None:
            return figures
    return None


def since_promotion(records: Sequence[Mapping[str, Any]], promoted_at: float) -> list[Any]:
    """The whole windows after ``promoted_at`` (the first one straddles the reload), the
    newest ``RECENT_S`` seconds of them."""
    after = [r for r in records if r["at"] > promoted_at][1:]
    return [r for r in after if r["at"] >= after[-1]["at"] - RECENT_S] if after else []


def regression(
    before: Figures | None, after: Figures | None, error_margin: float, rollback_margin: float
) -> str | None:
    """Why the promotion should be rolled back, or None (also while there is too little
    to judge)."""
    if before is None or after is None or after.windows < MIN_WINDOWS:
        return None
    rise = after.error_rate - before.error_rate
    if rise > error_margin and after.errors >= MIN_ERRORS:
        return (
            f"the main agent's error rate rose from {before.error_rate:.2%} to "
            f"{after.error_rate:.2%} after the promotion ({after.requests} requests), more "
            f"than the {error_margin * 100:.2f} points allowed"
        )
    if before.latency_ms > 0 and after.latency_ms > before.latency_ms * (1 + rollback_margin):
        return (
            f"the main agent's mean latency rose from {before.latency_ms:.3g} ms to "
            f"{after.latency_ms:.3g} ms after the promotion ({after.requests} requests), "
            f"+{after.latency_ms / before.latency_ms - 1:.0%}, more than the "
            f"{rollback_margin:.0%} allowed"
        )
    return None
