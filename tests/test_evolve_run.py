"""A genetic run's bookkeeping, with a deterministic evaluator in place of shadows: the
population size, the gate, persistence, and a resume that changes nothing."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from test_genetic_unit import TOY, values

from osup_mp.evolution.genetic import Figures, fingerprint
from osup_mp.evolve import report
from osup_mp.evolve.run import Run, RunError, RunSpec

pytestmark = pytest.mark.unit  # no process started

SPEC = RunSpec(code=TOY, target="toy", generations=6, population=6, seed=42, elite=2)


def measure(codes: Sequence[str]) -> list[Figures]:
    """Figures that depend on the code only: the closer WIDTH is to 7, the faster."""
    out = []
    for code in codes:
        width = float(values(code)["WIDTH"])  # type: ignore[arg-type]
        out.append(Figures(10, 0, 0, (1.0 + (width - 7.0) ** 2,) * 10, 40.0))
    return out


def no_gate(code: str) -> str | None:
    return None


def complete(run: Run) -> Run:
    while not run.done:
        run.step(measure, no_gate)
    return run


def codes(run: Run) -> list[list[str]]:
    return [[v.code for v in g.variants] for g in run.history]


def test_a_run_keeps_its_size_improves_and_persists_every_generation(tmp_path: Path) -> None:
    run = complete(Run.create(tmp_path, SPEC))
    assert [len(g.variants) for g in run.history] == [6] * 6
    assert run.history[0].variants[0].code == TOY  # the starting code is measured too
    firsts = [g.best.fitness for g in run.history if g.best]  # type: ignore[union-attr]
    assert firsts[-1] >= firsts[0]  # elites kept: the best never gets lost
    assert sorted(p.name for p in run.directory.iterdir()) == [
        "gen-0000.json",
        "gen-0001.json",
        "gen-0002.json",
        "gen-0003.json",
        "gen-0004.json",
        "gen-0005.json",
        "run.json",
    ]


def test_a_resumed_run_makes_the_choices_of_an_uninterrupted_one(tmp_path: Path) -> None:
    whole = complete(Run.create(tmp_path / "a", SPEC))
    stopped = Run.create(tmp_path / "b", SPEC)
    stopped.step(measure, no_gate)
    stopped.step(measure, no_gate)

    def killed(codes: Sequence[str]) -> list[Figures]:
        raise KeyboardInterrupt  # stopped in the middle of generation 2

    with pytest.raises(KeyboardInterrupt):
        stopped.step(killed, no_gate)
    resumed = complete(Run.resume(tmp_path / "b", stopped.id))
    assert codes(resumed) == codes(whole)
    assert len({v.fingerprint for g in resumed.history for v in g.variants}) == len(
        {fingerprint(c) for g in codes(resumed) for c in g}
    )


def test_variants_failing_the_gate_are_not_evaluated_and_gated_once(tmp_path: Path) -> None:
    gated: list[str] = []

    def gate(code: str) -> str | None:
        gated.append(fingerprint(code))
        return "too wide" if float(values(code)["WIDTH"]) > 5 else None  # type: ignore[arg-type]

    evaluated: list[str] = []

    def evaluate(codes: Sequence[str]) -> list[Figures]:
        evaluated.extend(codes)
        return measure(codes)

    run = Run.create(tmp_path, SPEC)
    while not run.done:
        run.step(evaluate, gate)
    refused = [v for g in run.history for v in g.variants if v.fitness is None]
    assert refused and all(v.figures.failure == "gate: too wide" for v in refused)
    assert all(float(values(c)["WIDTH"]) <= 5 for c in evaluated)  # type: ignore[arg-type]
    assert len(gated) == len(set(gated))  # each code gated once in the run


def test_resuming_what_is_not_a_run_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RunError, match="cannot resume run-0000beef"):
        Run.resume(tmp_path, "run-0000beef")
    with pytest.raises(RunError, match="a run is named"):
        Run.resume(tmp_path, "../elsewhere")


def trade_off(codes: Sequence[str]) -> list[Figures]:
    """Wider is faster and wronger: latency 20 / (1 + WIDTH) ms, WIDTH mismatches in 20."""
    out = []
    for code in codes:
        width = float(values(code)["WIDTH"])  # type: ignore[arg-type]
        wrong = min(20, round(width))
        out.append(Figures(20, 0, wrong, (20.0 / (1.0 + width),) * 20, 40.0))
    return out


def test_pareto_selection_keeps_a_spread_front_and_resumes_the_same(tmp_path: Path) -> None:
    spec = RunSpec(TOY, "toy", generations=8, population=8, seed=3, elite=4, pareto=True)
    run = Run.create(tmp_path / "a", spec)
    while not run.done:
        run.step(trade_off, no_gate)
    assert [len(g.variants) for g in run.history] == [8] * 8
    rows = report.front(run)
    widths = {round(r["mismatch_rate"] * 20) for r in rows}
    assert len(widths) >= 4  # a spread of trade-offs, not one winner
    for a in rows:  # no row of the front is beaten in both by another
        assert not any(
            b["median_ms"] < a["median_ms"] and b["mismatch_rate"] < a["mismatch_rate"]
            for b in rows
        )
    weighted = Run.create(tmp_path / "w", RunSpec(TOY, "toy", 8, 8, 3, elite=4))
    while not weighted.done:
        weighted.step(trade_off, no_gate)

    def width_range(r: Run) -> tuple[float, float]:
        widths = [float(values(v.code)["WIDTH"]) for v in r.history[-1].variants]  # type: ignore[arg-type]
        return min(widths), max(widths)

    # The weighted fitness (speed only) drifts to the fast corner and loses the exact one;
    # the fronts keep both ends (in each of seeds 0-19: narrowest <= 0.5 against >= 4.9).
    assert width_range(run)[0] < 1.0 < 4.0 < width_range(weighted)[0]
    assert width_range(run)[1] > 10.0

    stopped = Run.create(tmp_path / "b", spec)
    for _ in range(3):
        stopped.step(trade_off, no_gate)
    resumed = Run.resume(tmp_path / "b", stopped.id)
    assert resumed.spec.pareto
    while not resumed.done:
        resumed.step(trade_off, no_gate)
    assert codes(resumed) == codes(run)
    assert "front" in report.summary(run) and "front" not in report.summary(weighted)


def test_every_variant_knows_where_it_came_from(tmp_path: Path) -> None:
    run = complete(Run.create(tmp_path / "a", SPEC))
    first = run.history[0].variants
    start = first[0].fingerprint
    assert first[0].parents == [] and all(v.parents == [start] for v in first[1:])
    for before, after in zip(run.history, run.history[1:], strict=False):
        previous = {v.fingerprint for v in before.variants}
        for v in after.variants:
            assert v.parents and set(v.parents) <= previous | {v.fingerprint}
        kept = [v for v in after.variants if v.parents == [v.fingerprint]]
        assert len(kept) == SPEC.elite  # the elites, carried over unchanged
    resumed = Run.resume(tmp_path / "a", run.id)
    lineage = [[v.parents for v in g.variants] for g in resumed.history]
    assert lineage == [[v.parents for v in g.variants] for g in run.history]
    rows = report.summary(run)["best"]
    assert all(r["parents"] is not None for r in rows)
    text = "\n".join(report.text(run, report.summary(run)))
    assert "FROM" in text and ("+" in text or "start" in text)
