"""What an evaluation measured, and the fitness made of it.

The default is the seed's weighted formula, ``0.5 / latency_ms + 0.3 * (1 - error_rate) +
0.2 / memory_mb`` (latency the mean of what was measured, memory in MB, both floored at 1 ms
and 1 MB as the seed does), so that a faster variant wins unless it errs or grows. A variant
whose answers differ from the current code's beyond the tolerance has no fitness at all:
correctness is a constraint, not a weight.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Figures:
    """One variant's evaluation: what was measured, or why there is nothing to measure."""

    requests: int = 0
    errors: int = 0
    mismatches: int = 0
    latencies_ms: tuple[float, ...] = ()
    memory_mb: float = 0.0
    failure: str | None = None  # gate, start, limit, mismatch veto: it has no fitness
    score: float | None = None  # the mean of a score hook (recall@k, say), when there is one

    @property
    def median_ms(self) -> float:
        return statistics.median(self.latencies_ms) if self.latencies_ms else 0.0

    @property
    def mean_ms(self) -> float:
        return statistics.fmean(self.latencies_ms) if self.latencies_ms else 0.0

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


def seed_fitness(f: Figures) -> float | None:
    """The seed's weighted formula; None for a failed variant."""
    if f.failure is not None:
        return None
    speed = 1.0 / max(f.mean_ms, 0.001)
    resources = 1.0 / max(f.memory_mb, 1.0)
    return 0.5 * speed + 0.3 * (1.0 - f.error_rate) + 0.2 * resources
