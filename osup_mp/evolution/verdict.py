"""A verdict and its explanation: per metric, the figures, the interval and the outcome.

The one decision: the verdict carries everything an operator needs to see why (n per arm,
point estimates, the always-valid interval of the effect, the threshold it was held to, the
fixed-horizon tests for the record, the mismatch counts with examples), as plain data with
a JSON form that round-trips, so the history shows exactly what decided.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from osup_mp.evolution.spec import Decision


@dataclass(frozen=True, slots=True)
class MetricRow:
    name: str  # "latency_ms" | "error_rate" | "throughput" | "memory_mb"
    n_candidate: int  # samples; throughput: copies offered; memory: looks
    n_control: int
    candidate: float | None  # geometric mean latency (ms), error rate, share taken, or MiB
    control: float | None
    effect: float | None  # relative change (latency, memory: -0.5 = half) or difference
    # of the effect, anytime-valid at 1 - alpha; memory: its range over the newest looks
    interval: tuple[float, float] | None
    threshold: str
    outcome: str  # "better" | "worse" | "same" | "unclear"
    test: str  # fixed-horizon tests, for the record ("" until decided)


@dataclass(frozen=True, slots=True)
class MismatchRow:
    compared_candidate: int
    mismatches_candidate: int
    compared_control: int
    mismatches_control: int
    stale_candidate: int
    stale_control: int
    excess: float | None  # candidate's mismatch rate minus the control's
    interval: tuple[float, float] | None
    outcome: str  # "veto" | "ok" | "unclear"
    examples: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class Verdict:
    decision: Decision
    rule: str
    reason: str
    metrics: tuple[MetricRow, ...]
    mismatches: MismatchRow

    def to_dict(self) -> dict[str, Any]:
        return {
            "decision": self.decision.value,
            "rule": self.rule,
            "reason": self.reason,
            "metrics": [_plain(asdict(row)) for row in self.metrics],
            "mismatches": _plain(asdict(self.mismatches)),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Verdict:
        rows = tuple(MetricRow(**_tupled(row)) for row in data["metrics"])
        mm = _tupled(data["mismatches"])
        mm["examples"] = tuple(mm.get("examples") or ())
        return cls(
            Decision(data["decision"]), data["rule"], data["reason"], rows, MismatchRow(**mm)
        )


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in row.items():
        if isinstance(value, tuple):
            value = list(value)
        elif isinstance(value, float):
            value = float(value)
        out[key] = value
    return out


def _tupled(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    if out.get("interval") is not None:
        out["interval"] = tuple(out["interval"])
    return out
