"""What a verdict is asked about: the settings of the judgement and one mirrored sample.

The one decision: a sample is checked when it is made, so a malformed one (an unknown arm
or outcome, a negative or non-finite latency) is a clear error at its source and never a
silent skew of the evidence.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

ARMS = ("candidate", "control")
OUTCOMES = ("match", "mismatch", "stale", "error")


@dataclass(frozen=True, slots=True)
class Settings:
    """How sure a verdict must be, and the margins that matter (docs/configuration.md)."""

    alpha: float = 0.02  # 1 - confidence: Kayenta's default of 98%
    min_samples: int = 30  # per arm, before a promotion or a latency verdict
    latency_margin: float = 0.10  # relative slow-down that rejects
    min_improvement: float = 0.05  # relative speed-up a promotion needs
    error_margin: float = 0.01  # absolute rise in error rate that rejects
    mismatch_tolerance: float = 0.005  # absolute excess of mismatches over the control's
    memory_margin: float = 0.25  # relative excess of resident memory that rejects
    capacity_margin: float = 0.10  # absolute shortfall in the share of copies taken
    max_kept: int = 50_000  # latencies kept per arm for the fixed-horizon explanation
    max_examples: int = 5

    def __post_init__(self) -> None:
        margins = ("latency_margin", "min_improvement", "error_margin", "capacity_margin")
        for name in ("alpha", *margins):
            if not 0 < getattr(self, name) < 1:
                raise ValueError(f"{name} must be in (0, 1), not {getattr(self, name)}")
        if self.memory_margin <= 0:
            raise ValueError(f"memory_margin must be positive, not {self.memory_margin}")
        if not 0 < self.mismatch_tolerance < 1:
            raise ValueError(f"mismatch_tolerance must be in (0, 1), not {self.mismatch_tolerance}")
        if self.min_samples < 1 or self.max_kept < 1 or self.max_examples < 0:
            raise ValueError("min_samples and max_kept must be positive, max_examples not negative")


@dataclass(frozen=True, slots=True)
class Sample:
    """One mirrored request as one arm answered it."""

    arm: str  # "candidate" | "control"
    latency_ms: float
    error: bool
    outcome: str  # against the main's answer: "match" | "mismatch" | "stale" | "error"
    # The agent's waits for a CPU, taken out of ``latency_ms``, its service time; None: the
    # agent gave no figures, and ``latency_ms`` is its manager's round trip.
    waited_ms: float | None = None

    def __post_init__(self) -> None:
        if self.arm not in ARMS:
            raise ValueError(f"arm must be one of {', '.join(ARMS)}, not {self.arm!r}")
        if self.outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {', '.join(OUTCOMES)}, not {self.outcome!r}")
        if not (isinstance(self.latency_ms, int | float) and math.isfinite(self.latency_ms)):
            raise ValueError(f"latency_ms must be a finite number, not {self.latency_ms!r}")
        if self.latency_ms < 0:
            raise ValueError(f"latency_ms must not be negative, not {self.latency_ms}")
        if self.waited_ms is not None and not 0 <= self.waited_ms < math.inf:
            raise ValueError(f"waited_ms must be finite and not negative, not {self.waited_ms}")


class Decision(enum.StrEnum):
    PROMOTE = "promote"
    REJECT = "reject"
    CONTINUE = "continue"
    INCONCLUSIVE = "inconclusive"
