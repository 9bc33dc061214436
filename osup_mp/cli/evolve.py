"""``osup-mp evolve``: evolve a module's code in limited shadows of the running tree.

Each generation's variants pass the gate (compile, import, the agent's self-test) and then
answer a workload in shadows of their own; the fittest are kept and bred. Every generation
is written under ``data_dir/evolve/RUN`` as it completes, so ``--resume RUN`` continues a
run stopped at any moment. The report names the best variants with what was measured, and
shows the diff of the best against the starting code.
"""

from __future__ import annotations

import difflib
import shlex
import sys
from pathlib import Path
from typing import Any

import click

from osup_mp.cli.common import EXIT_NOT_RUNNING, EXIT_USAGE, fail, load, to_json

REFERENCE_VALIDATOR = "osup_mp.agent.reference.agent:MemoryAgent"


@click.command("evolve")
@click.option("--code", "code_file", type=click.Path(path_type=Path), metavar="FILE")
@click.option("--target", metavar="MODULE", help="The module the code replaces.")
@click.option(
    "--requests",
    "requests_file",
    type=click.Path(path_type=Path),
    metavar="FILE",
    help="The workload: one JSON request per line (read-only requests).",
)
@click.option("--generations", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--population", type=click.IntRange(min=2), default=8, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--elite", type=click.IntRange(min=0), default=1, show_default=True)
@click.option(
    "--workers", type=click.IntRange(min=1), default=2, show_default=True, help="Shadows at once."
)
@click.option(
    "--validator",
    metavar="MODULE:CLASS",
    help="The agent class whose validate_module is the gate's self-test "
    "(default: the reference agent's, when the tree runs it).",
)
@click.option(
    "--mutator",
    metavar="CMD",
    help="A command that prints a variant of the JSON it reads (docs/operations.md).",
)
@click.option("--resume", "resume_id", metavar="RUN", help="Continue a stopped run.")
@click.option("--json", "as_json", is_flag=True, help="Print the run's summary as JSON.")
@click.pass_context
def command(
    ctx: click.Context,
    code_file: Path | None,
    target: str | None,
    requests_file: Path | None,
    generations: int,
    population: int,
    seed: int,
    elite: int,
    workers: int,
    validator: str | None,
    mutator: str | None,
    resume_id: str | None,
    as_json: bool,
) -> None:
    """Evolve FILE (as MODULE) over generations of variants, each measured in its own
    shadow on the workload; report the best, with its diff."""
    from osup_mp.cli.traffic import read_requests
    from osup_mp.client import ClientError, NotRunning
    from osup_mp.evolution import compare
    from osup_mp.evolution.genetic import VariationError, genes
    from osup_mp.evolve.gate import gate
    from osup_mp.evolve.mutator import CommandMutator
    from osup_mp.evolve.run import Run, RunError, RunSpec
    from osup_mp.evolve.shadows import ShadowEvaluator, reference

    cfg = load(ctx)
    if requests_file is None:
        fail("--requests FILE is required (the workload)", EXIT_USAGE)
    root = cfg.o_supervisor.data_dir / "evolve"
    try:
        requests = read_requests(requests_file)
        if resume_id:
            run = Run.resume(root, resume_id)
        else:
            if code_file is None or target is None:
                fail("--code FILE and --target MODULE are required (or --resume RUN)", EXIT_USAGE)
            code = code_file.read_text()
            genes(code)  # refuses, with the reason, code that cannot be varied
            argv = shlex.split(mutator) if mutator else None
            spec = RunSpec(code, target, generations, population, seed, elite, mutator=argv)
            plugged = CommandMutator(argv, target) if argv else None
            run = Run.create(root, spec, plugged)
    except (ValueError, OSError, RunError, VariationError) as exc:
        fail(str(exc), EXIT_USAGE)
    spec = run.spec
    if resume_id and spec.mutator:
        run.mutator = CommandMutator(spec.mutator, spec.target)
    if validator is None and cfg.o_supervisor.gerbil_executable == "osup-mp-agent":
        validator = REFERENCE_VALIDATOR
    hook = compare.load(cfg.evolution.compare) if cfg.evolution.compare else None
    try:
        workload = reference(cfg, requests)
    except NotRunning:
        fail(f"not running (no data-plane socket at {cfg.data_socket('main')})", EXIT_NOT_RUNNING)
    except ClientError as exc:
        fail(f"the main agent could not answer the workload: {exc}")
    evaluator = ShadowEvaluator(
        cfg,
        spec.target,
        workload,
        compare=hook,
        tolerance=cfg.evolution.mismatch_tolerance,
        workers=workers,
        prefix=run.id.replace("run-", "evo"),  # shadows named after the run: found again
    )
    try:
        left = evaluator.stop_leftovers()
    except ClientError as exc:
        fail(f"cannot list the tree's shadows: {exc}")
    if left and not as_json:
        click.echo(f"stopped {len(left)} shadows an earlier attempt of this run left: {left}")

    def gated(code: str) -> str | None:
        return gate(code, spec.target, validator).error

    if not as_json:
        sizes = f"{spec.generations} generations x {spec.population}"
        click.echo(f"run {run.id}: {sizes}, seed {spec.seed}")
    try:
        while not run.done:
            generation = run.step(evaluator.evaluate, gated)
            if not as_json:
                click.echo(_generation_line(generation, spec.generations))
    except KeyboardInterrupt:
        fail(f"stopped; continue with: osup-mp evolve --requests FILE --resume {run.id}", 130)
    summary = _summary(run)
    failures = getattr(run.mutator, "failures", [])
    summary["mutator_failures"] = {"count": len(failures), "first": failures[:3]}
    if as_json:
        click.echo(to_json(summary))
        return
    _report(run, summary)


def _generation_line(generation: Any, total: int) -> str:
    failed = sum(v.fitness is None for v in generation.variants)
    best = generation.best
    shown = (
        f"best fitness {best.fitness:.3f} (median {best.figures.median_ms:.2f} ms)"
        if best is not None
        else "no variant measured"
    )
    n = len(generation.variants)
    return f"generation {generation.index + 1}/{total}: {n} variants, {failed} failed, {shown}"


def _summary(run: Any) -> dict[str, Any]:
    variants = [(g.index, v) for g in run.history for v in g.variants]
    measured = sorted(
        ((i, v) for i, v in variants if v.fitness is not None),
        key=lambda iv: iv[1].fitness,
        reverse=True,
    )
    seen: set[str] = set()
    best = []
    for index, v in measured:
        if v.fingerprint in seen:
            continue
        seen.add(v.fingerprint)
        best.append(
            {
                "fingerprint": v.fingerprint,
                "generation": index,
                "fitness": v.fitness,
                "median_ms": v.figures.median_ms,
                "error_rate": v.figures.error_rate,
                "memory_mb": v.figures.memory_mb,
                "mismatches": v.figures.mismatches,
            }
        )
    start = run.history[0].variants[0] if run.history else None
    return {
        "run": run.id,
        "directory": str(run.directory),
        "generations": [
            {
                "index": g.index,
                "variants": len(g.variants),
                "failed": sum(v.fitness is None for v in g.variants),
                "best_fitness": g.best.fitness if g.best else None,
            }
            for g in run.history
        ],
        "start": start and {"fitness": start.fitness, "median_ms": start.figures.median_ms},
        "best": best[:5],
        "failures": sorted({v.figures.failure for _, v in variants if v.figures.failure})[:10],
    }


def _report(run: Any, summary: dict[str, Any]) -> None:
    click.echo("")
    click.echo(f"{'VARIANT':18} {'GEN':>3} {'FITNESS':>8} {'MEDIAN':>10} {'ERRORS':>7} {'RSS':>9}")
    for b in summary["best"]:
        click.echo(
            f"{b['fingerprint']:18} {b['generation'] + 1:>3} {b['fitness']:>8.3f} "
            f"{b['median_ms']:>7.2f} ms {b['error_rate']:>7.1%} {b['memory_mb']:>5.1f} MiB"
        )
    start = summary["start"]
    if start and start["fitness"] is not None:
        fitness, median = start["fitness"], start["median_ms"]
        click.echo(f"the starting code: fitness {fitness:.3f}, median {median:.2f} ms")
    for failure in summary["failures"]:
        click.echo(f"failed: {failure}")
    fallbacks = summary["mutator_failures"]
    if fallbacks["count"]:
        count, first = fallbacks["count"], "; ".join(fallbacks["first"])
        click.echo(f"the mutator failed {count} times (the built-in mutation used): {first}")
    best = run.best
    if best is not None:
        diff = difflib.unified_diff(
            run.spec.code.splitlines(keepends=True),
            best.code.splitlines(keepends=True),
            "start",
            f"best ({best.fingerprint})",
        )
        sys.stdout.writelines(diff)
    click.echo(f"run {run.id}: {run.directory}")
