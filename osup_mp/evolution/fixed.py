"""Fixed-horizon tests, for the record: what a classical analysis of the same data says.

They never decide (re-run at every look they would find differences that are not there);
they explain a decided verdict in terms operators know from Kayenta and A/B reports:
Mann-Whitney U with the Hodges-Lehmann shift for latency, Fisher's exact test for errors.
Two decisions: both run on bounded subsamples, so an explanation costs milliseconds
however long the experiment ran; and scipy (about 0.6 s to import) is not imported with the
arbiter, so that a tree starts without it, but by :func:`preload` in a thread of its own
when an experiment starts, so that the first explanation does not stall the arbiter's loop.
"""

from __future__ import annotations

import functools
import importlib
import sys
import threading
from typing import Any

import numpy as np

MW_MAX = 5000  # newest latencies per arm in the Mann-Whitney test
HL_MAX = 400  # per arm in the Hodges-Lehmann estimate (pairwise differences: HL_MAX²)


@functools.cache  # once per process
def preload() -> None:
    """Start importing scipy's tests in a thread of this process. An explanation that comes
    first waits for that import, as it would have imported scipy itself."""
    if "scipy.stats" not in sys.modules:
        args = ("scipy.stats",)
        threading.Thread(target=importlib.import_module, args=args, daemon=True).start()


def latency_test(candidate: Any, control: Any) -> str:
    a, b = _newest(candidate, MW_MAX), _newest(control, MW_MAX)
    if a.size < 2 or b.size < 2:
        return "too few samples for Mann-Whitney U"
    from scipy import stats

    p = stats.mannwhitneyu(a, b, alternative="two-sided").pvalue
    shift = float(np.median(np.subtract.outer(_newest(a, HL_MAX), _newest(b, HL_MAX))))
    return f"Mann-Whitney U p={p:.2g}; Hodges-Lehmann shift {shift:+.3g} ms"


def rate_test(events_a: int, n_a: int, events_b: int, n_b: int) -> str:
    if n_a == 0 or n_b == 0:
        return "no samples for Fisher's exact test"
    from scipy import stats

    table = [[events_a, n_a - events_a], [events_b, n_b - events_b]]
    return f"Fisher exact p={stats.fisher_exact(table).pvalue:.2g}"


def _newest(values: Any, n: int) -> np.ndarray[Any, np.dtype[np.float64]]:
    array = np.asarray(values, dtype=np.float64)
    return array[-n:]
