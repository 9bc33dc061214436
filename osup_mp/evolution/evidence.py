"""The evidence of one experiment, accumulated sample by sample in constant memory.

Per arm it keeps counts, the log latencies summed over every sample (the point estimate)
and per *batch* (the samples between two looks, about a second's worth), the newest
``max_kept`` latencies (for the fixed-horizon tests that explain a verdict), and the
splitter's totals of copies offered and dropped (capacity). Across the arms it keeps
Welford's mean and variance of the differences of their batch means (the always-valid
latency interval) and both arms' resident memory at the newest looks.

Two decisions. Latencies are judged on the log scale, where a slowdown is a shift and the
heavy right tail of service times is tamed, so the effect is a ratio of geometric means.
And their spread is measured between batch means, not between samples: on a shared machine
latencies come in runs (a stall delays every request queued behind it), and treating
correlated samples as independent makes an interval too narrow, so identical arms look
different. Batch means are the standard remedy for autocorrelated measurements. The arms
are compared look by look (:class:`Pairs`): both answer the same mirrored copies, so a
stall of the machine slows both in the same look, and the difference of their batch means
is left with the difference of the code — and with the pair's own: two processes of the
same code differ by a few percent, steadily (memory layout, placement), so before the
candidate's code is loaded both arms run the main's, and that difference (the
*calibration*, :meth:`Evidence.calibrate`) is taken out of the judged one.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from osup_mp.evolution.spec import ARMS, Sample, Settings

LOG_FLOOR_MS = 1e-3  # a 0 ms latency (a clock too coarse) counts as 1 µs on the log scale
MIN_BATCHES = 10  # paired batch means before their spread is trusted
MEMORY_LOOKS = 5  # newest looks of resident memory kept: an excess must last this long


@dataclass(slots=True)
class ArmEvidence:
    max_kept: int
    n: int = 0
    errors: int = 0
    outcomes: dict[str, int] = field(
        default_factory=lambda: {"match": 0, "mismatch": 0, "stale": 0}
    )
    timed: int = 0  # latencies seen (non-error samples)
    offered: int = 0  # mirrored copies the splitter had for this arm (running totals)
    dropped: int = 0  # of which it could not take (its window was full)
    log_sum: float = 0.0
    waited_sum: float = 0.0  # ms of waits for a CPU taken out of the latencies
    waited_n: int = 0  # latencies they were taken out of
    open_sum: float = 0.0  # the batch being filled
    open_count: int = 0
    batches: int = 0
    kept: deque[float] = field(init=False)

    def __post_init__(self) -> None:
        self.kept = deque(maxlen=self.max_kept)

    @property
    def log_mean(self) -> float:
        return self.log_sum / self.timed if self.timed else 0.0

    @property
    def compared(self) -> int:
        return self.outcomes["match"] + self.outcomes["mismatch"]

    def add_latencies(self, latencies_ms: np.ndarray[Any, np.dtype[np.float64]]) -> None:
        if latencies_ms.size == 0:
            return
        total = float(np.log(np.maximum(latencies_ms, LOG_FLOOR_MS)).sum())
        self.timed += latencies_ms.size
        self.log_sum += total
        self.open_sum += total
        self.open_count += latencies_ms.size
        self.kept.extend(latencies_ms.tolist())

    def close_batch(self) -> tuple[float, int] | None:
        """End the batch being filled; its log-latency sum and count (None: empty)."""
        if not self.open_count:
            return None
        total, count = self.open_sum, self.open_count
        self.open_sum, self.open_count = 0.0, 0
        self.batches += 1
        return total, count


@dataclass(slots=True)
class Pairs:
    """Differences of the two arms' batch means, look by look (Welford): both arms answer
    the same copies in a look, so what the look's load did to both cancels out."""

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0
    pending: dict[str, tuple[float, int]] = field(default_factory=dict)

    def add(self, arm: str, batch: tuple[float, int] | None) -> None:
        if batch is None:
            return
        total, count = self.pending.get(arm, (0.0, 0))  # an arm ahead keeps filling
        self.pending[arm] = (total + batch[0], count + batch[1])
        if len(self.pending) < len(ARMS):
            return
        (ct, cn), (kt, kn) = (self.pending.pop(name) for name in ARMS)
        diff = ct / cn - kt / kn
        self.n += 1
        delta = diff - self.mean
        self.mean += delta / self.n
        self.m2 += delta * (diff - self.mean)

    @property
    def mean_variance(self) -> float:
        """Variance of :attr:`mean` as an estimate (inf until enough pairs)."""
        if self.n < MIN_BATCHES:
            return math.inf
        return self.m2 / (self.n - 1) / self.n


class Evidence:
    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.arms = {arm: ArmEvidence(self.settings.max_kept) for arm in ARMS}
        self.pairs = Pairs()
        self.calibration = Pairs()  # while both arms ran the same code
        self.examples: list[dict[str, Any]] = []
        # (candidate, control) resident MiB at the newest looks, measured at the same look
        self.memory: deque[tuple[float, float]] = deque(maxlen=MEMORY_LOOKS)
        self.memory_looks = 0

    def add(self, sample: Sample) -> None:
        arm = self.arms[sample.arm]
        arm.n += 1
        if sample.error or sample.outcome == "error":
            arm.errors += 1
            return
        arm.outcomes[sample.outcome] += 1
        arm.add_latencies(np.array([sample.latency_ms], dtype=np.float64))
        if sample.waited_ms is not None:
            arm.waited_sum += sample.waited_ms
            arm.waited_n += 1

    def extend(self, samples: Iterable[Sample]) -> None:
        for sample in samples:
            self.add(sample)

    def add_batch(
        self,
        arm: str,
        latencies_ms: npt.ArrayLike,
        *,
        errors: int = 0,
        mismatches: int = 0,
        stale: int = 0,
    ) -> None:
        """Many samples of one arm at once: the latencies of its answers (of which
        ``mismatches`` differed from the main's and ``stale`` were not comparable; the rest
        matched) and ``errors`` failed requests, as :meth:`add` would take them one by one."""
        lat = self._latencies(arm, latencies_ms)
        if min(errors, mismatches, stale) < 0 or mismatches + stale > lat.size:
            raise ValueError("counts must not be negative, nor exceed the answers timed")
        evidence = self.arms[arm]
        evidence.n += int(lat.size) + errors
        evidence.errors += errors
        evidence.outcomes["mismatch"] += mismatches
        evidence.outcomes["stale"] += stale
        evidence.outcomes["match"] += int(lat.size) - mismatches - stale
        evidence.add_latencies(lat)
        self.pairs.add(arm, evidence.close_batch())

    def calibrate(self, arm: str, latencies_ms: npt.ArrayLike) -> None:
        """One look's latencies of ``arm`` while both arms run the same code: they measure
        the pair's own difference only, and count toward nothing else."""
        lat = self._latencies(arm, latencies_ms)
        if lat.size:
            logs = float(np.log(np.maximum(lat, LOG_FLOOR_MS)).sum())
            self.calibration.add(arm, (logs, int(lat.size)))

    def _latencies(self, arm: str, latencies_ms: npt.ArrayLike) -> npt.NDArray[np.float64]:
        if arm not in self.arms:
            raise ValueError(f"arm must be one of {', '.join(ARMS)}, not {arm!r}")
        lat = np.asarray(latencies_ms, dtype=np.float64)
        if lat.ndim != 1 or (lat.size and not 0 <= lat.min() <= lat.max() < math.inf):
            raise ValueError("latency_ms must be finite and not negative")
        return lat

    def close_batch(self) -> None:
        """End the current batch of every arm: call at each look (:meth:`add_batch` ends
        its own)."""
        for name, arm in self.arms.items():
            self.pairs.add(name, arm.close_batch())

    def add_memory(self, candidate_bytes: int, control_bytes: int) -> None:
        """Both arms' resident memory at one look (measured, not sampled: no interval)."""
        if min(candidate_bytes, control_bytes) < 0:
            raise ValueError("resident memory must not be negative")
        self.memory.append((candidate_bytes / 2**20, control_bytes / 2**20))
        self.memory_looks += 1

    def set_capacity(self, arm: str, offered: int, dropped: int) -> None:
        """The splitter's running totals for ``arm``: copies it had for the arm, and of
        those the ones dropped because the arm still had a full window in flight."""
        if arm not in self.arms:
            raise ValueError(f"arm must be one of {', '.join(ARMS)}, not {arm!r}")
        if not 0 <= dropped <= offered:
            raise ValueError("dropped copies must be between 0 and the copies offered")
        self.arms[arm].offered, self.arms[arm].dropped = offered, dropped

    def add_example(self, example: dict[str, Any]) -> None:
        if len(self.examples) < self.settings.max_examples:
            self.examples.append(example)

    def calibrated(self) -> dict[str, Any]:
        """The calibration so far: looks paired, and the candidate's own latency relative
        to the control's then (None before a look)."""
        pairs = self.calibration
        return {"looks": pairs.n, "own_difference": math.expm1(pairs.mean) if pairs.n else None}

    def counts(self) -> dict[str, dict[str, int]]:
        return {name: {"n": a.n, "errors": a.errors, **a.outcomes} for name, a in self.arms.items()}
