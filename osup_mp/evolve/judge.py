"""How a variant's answers are judged against the current code's, wherever it ran (a shadow
of the tree, or a limited process on a Ray node): by a compare hook and a tolerance, or by a
score hook and a floor on its mean; and the figures that make of what was measured.

The one decision: the hooks are named by path (``package.module:function``), not held as
functions, so that a judge crosses to another process or host as data and loads the same
hooks there.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from osup_mp.evolution import compare as hooks
from osup_mp.evolution.genetic.fitness import Figures
from osup_mp.wire import digest


@dataclass(frozen=True, slots=True)
class Workload:
    """The requests a variant answers, and the main's answers to them (the reference)."""

    requests: tuple[Any, ...]
    answers: tuple[Any, ...]


class VariantDied(Exception):
    """The variant's agent died while answering (a limit, a deadline, a crash): why."""


# One request to the variant's agent: (answered without error, the answer or the error,
# the handling time in ms); raises VariantDied when its agent is gone.
Ask = Callable[[Any], tuple[bool, Any, float]]


@dataclass(slots=True)
class Judge:
    compare: str | None = None  # a compare hook's path; None: exact (digests)
    tolerance: float = 0.0  # the share of answers that may disagree
    score: str | None = None  # a score hook's path: replaces compare and tolerance
    min_score: float = 0.0  # the lowest mean score a variant may have
    _compare: Any = field(default=None, init=False, repr=False)
    _score: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        """Load the hooks now: a bad path is an error before anything runs (ValueError)."""
        self._compare = hooks.load(self.compare) if self.compare else None
        self._score = hooks.load(self.score) if self.score else None

    def data(self) -> dict[str, Any]:
        keys = ("compare", "tolerance", "score", "min_score")
        return {key: getattr(self, key) for key in keys}

    def agreement(self, request: Any, expected: Any, answer: Any) -> float:
        """How far ``answer`` agrees with the current code's: the score hook's number, else
        1.0 or 0.0. A hook that raises on an answer is the hook's fault, not the variant's:
        that answer is compared exactly."""
        try:
            if self._score is not None:
                return min(1.0, max(0.0, float(self._score(request, expected, answer))))
            if self._compare is not None:
                return 1.0 if self._compare(request, expected, answer) else 0.0
        except Exception:
            pass
        return 1.0 if digest(expected) == digest(answer) else 0.0

    def figures(
        self,
        requests: int,
        errors: int,
        latencies_ms: Sequence[float],
        agreements: Sequence[float],
        memory_mb: float,
    ) -> Figures:
        """What was measured, with a failure when the answers do not hold."""
        mismatches = sum(a < 1.0 for a in agreements)
        mean = statistics.fmean(agreements) if self._score is not None and agreements else None
        f = Figures(requests, errors, mismatches, tuple(latencies_ms), memory_mb, score=mean)
        if mean is not None and mean < self.min_score:
            veto = f"mean score {mean:.3f} < {self.min_score:g} against the current code's answers"
            return replace(f, failure=veto, memory_mb=0.0)
        if self._score is None and requests and mismatches / requests > self.tolerance:
            veto = f"{mismatches} of {requests} answers differ from the current code's"
            return replace(f, failure=veto, memory_mb=0.0)
        return f

    def run(self, workload: Workload, ask: Ask, memory_mb: Callable[[], float]) -> Figures:
        """Drive the workload through ``ask`` and judge it: one unmeasured warm-up request
        first (what a variant builds on first use, an index, a cache, is paid once, as it
        would be on the main), then each request timed and its answer judged."""
        try:
            ask(workload.requests[0])
            errors, latencies, agreements = 0, [], []
            for request, expected in zip(workload.requests, workload.answers, strict=True):
                ok, value, ms = ask(request)
                if not ok:
                    errors += 1
                    continue
                latencies.append(ms)
                agreements.append(self.agreement(request, expected, value))
            memory = memory_mb()
        except VariantDied as exc:
            return Figures(failure=str(exc))
        return self.figures(len(workload.requests), errors, latencies, agreements, memory)
