"""Judging shadow experiments: pure statistics, no process, no I/O.

:func:`decide` turns an experiment's :class:`Evidence` (mirrored samples of a candidate and
a control arm) into a :class:`Verdict` that says what to do and why. The evolution arbiter
component calls it every second; the simulations in ``tests/test_evolution_stats.py``
call it the same way and assert its error rates.
"""

from osup_mp.evolution import watch
from osup_mp.evolution.decision import decide
from osup_mp.evolution.evidence import Evidence
from osup_mp.evolution.spec import Decision, Sample, Settings
from osup_mp.evolution.verdict import MetricRow, MismatchRow, Verdict

__all__ = [
    "Decision",
    "Evidence",
    "MetricRow",
    "MismatchRow",
    "Sample",
    "Settings",
    "Verdict",
    "decide",
    "watch",
]
