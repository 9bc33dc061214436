"""Judging shadow experiments: pure statistics, no process, no I/O.

:func:`decide` turns an experiment's :class:`Evidence` (mirrored samples of a candidate and
a control arm) into a :class:`Verdict` that says what to do and why. The evolution arbiter
component calls it every second; the simulations in ``tests/test_evolution_stats.py``
call it the same way and assert its error rates.

The names below are imported on first use (PEP 562): the genetic side (:mod:`.genetic`,
:mod:`.compare`) loads none of the verdict's modules.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from osup_mp.evolution import watch
    from osup_mp.evolution.decision import decide
    from osup_mp.evolution.evidence import Evidence
    from osup_mp.evolution.spec import Decision, Sample, Settings
    from osup_mp.evolution.verdict import MetricRow, MismatchRow, Verdict

_WHERE = {
    "decide": "decision",
    "Evidence": "evidence",
    "Decision": "spec",
    "Sample": "spec",
    "Settings": "spec",
    "MetricRow": "verdict",
    "MismatchRow": "verdict",
    "Verdict": "verdict",
}

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


def __getattr__(name: str) -> Any:
    if name == "watch":
        return importlib.import_module("osup_mp.evolution.watch")
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"osup_mp.evolution.{_WHERE[name]}"), name)
    globals()[name] = value
    return value
