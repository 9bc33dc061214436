"""A mutator command plugged into a run: its variants are used; a mutator that fails, hangs
or prints no Python falls back to the built-in mutation, counted, and the run goes on."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest
from support.trees import SUPPORT_DIR
from test_evolve_run import SPEC, complete, measure, no_gate
from test_genetic_unit import values

from osup_mp.evolve.mutator import CommandMutator
from osup_mp.evolve.run import Run

SCRIPT = str(SUPPORT_DIR / "mutators" / "width_to_seven.py")


def test_the_mutator_commands_variants_are_bred(tmp_path: Path) -> None:
    mutator = CommandMutator([sys.executable, SCRIPT], "toy")
    run = Run.create(tmp_path, SPEC, mutator)
    run.step(measure, no_gate)
    widths = [float(values(v.code)["WIDTH"]) for v in run.history[0].variants]  # type: ignore[arg-type]
    assert widths[0] == 2.0 and 7.0 in widths  # the start, then the command's variant
    assert "# mutated with seed" in run.history[0].variants[1].code
    assert mutator.failures == []


@pytest.mark.parametrize(
    ("argv", "why"),
    [
        (["false"], "exited with status 1"),
        ([sys.executable, "-c", "print('def (:')"], "printed no valid Python"),
        ([sys.executable, "-c", "import time; time.sleep(30)"], "no answer within 0.5 s"),
        (["/no/such/mutator"], "cannot run /no/such/mutator"),
    ],
)
def test_a_failing_mutator_falls_back_and_the_run_goes_on(
    tmp_path: Path, argv: list[str], why: str
) -> None:
    mutator = CommandMutator(argv, "toy", timeout=0.5)
    small = dataclasses.replace(SPEC, generations=2, population=3, elite=1)
    run = complete(Run.create(tmp_path, small, mutator))
    assert len(run.history) == 2 and all(len(g.variants) == 3 for g in run.history)
    assert mutator.failures and all(why in f for f in mutator.failures)
