"""What the arbiter reads from the tree at each look, turned into evidence or a reason.

The splitter's figures (examples, copies offered and dropped per arm), an arm's resident
memory and whether its agent is still the one that started, and after a promotion why it
should go back. The one decision: these are plain functions of what the calls answered,
so the component keeps only the calls and the steps between them.
"""

from __future__ import annotations

import time
from typing import Any

import psutil

from osup_mp.components.arbiter.experiment import Experiment
from osup_mp.config.sections import EvolutionSection
from osup_mp.evolution import watch


def take_mirror(exp: Experiment, figures: dict[str, Any]) -> None:
    """The splitter's figures of this experiment: new examples, copies offered and dropped."""
    for example in figures.get("examples", [])[len(exp.mirror.get("examples", [])) :]:
        exp.evidence.add_example(example)
    for arm in figures.get("arms", []):
        role = exp.role_of(arm["arm"])
        if role is not None:
            exp.evidence.set_capacity(role, arm["sent"] + arm["dropped"], arm["dropped"])
    exp.mirror = figures


def resident(status: dict[str, Any]) -> int | None:
    """The arm's resident memory, measured here: an agent's own figures could be wrong."""
    try:
        pid = int(status["pid"])
        return int(psutil.Process(pid).memory_info().rss) if pid > 0 else None
    except (KeyError, TypeError, ValueError, psutil.Error):
        return None


def died(status: dict[str, Any]) -> str | None:
    """Why an arm's agent is not the one that started, or None while it serves."""
    if status.get("state") == "RUNNING" and status.get("restarts", 0) == 0:
        return None
    return (
        status.get("last_kill_reason") or status.get("last_exit") or f"it is {status.get('state')}"
    )


def rollback_reason(
    exp: Experiment, results: list[tuple[bool, Any]], e: EvolutionSection
) -> tuple[str | None, bool]:
    """Why the promotion goes back (None: it stands so far), and whether the code must be
    reverted by the arbiter (not when the agent already rolled it back itself). ``results``:
    the main's status, its loaded code and its metrics history, as the calls answered."""
    (ok, status), (code_ok, code), (history_ok, records) = results
    if ok and exp.main_generation is None:
        exp.main_generation = status["generation"]
    if ok and status["generation"] != exp.main_generation:
        since = time.time() - (exp.promoted_at or time.time())
        cause = status.get("last_kill_reason") or status.get("last_exit")
        return f"the main agent restarted {since:.0f} s after the promotion ({cause})", True
    if code_ok and code.get(exp.target) != exp.code:
        return "the main agent rolled the promoted code back after it raised", False
    if not history_ok:
        return None, False
    after = watch.pool(watch.since_promotion(records, exp.promoted_at or 0.0))
    worse = watch.regression(exp.baseline, after, e.error_margin, e.rollback_margin)
    return worse, worse is not None
