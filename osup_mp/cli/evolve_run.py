"""An ``osup-mp evolve`` run: opened or resumed, its variants measured in limited shadows of
the tree (or as Ray tasks), generation by generation, then reported and, with
``--propose``, the best handed to the evolution arbiter. :mod:`.evolve` declares the
command and its options; this is what the command does.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from osup_mp.cli.common import EXIT_NOT_RUNNING, EXIT_USAGE, fail, to_json

if TYPE_CHECKING:
    from osup_mp.config import Config

REFERENCE_VALIDATOR = "osup_mp.agent.reference.agent:MemoryAgent"


def run_evolution(
    cfg: Config,
    *,
    requests_file: Path | None,
    workers: int,
    cpu_seconds: float,
    wall_seconds: float,
    validator: str | None,
    compare_hook: str | None,
    tolerance: float | None,
    score_hook: str | None,
    min_score: float | None,
    ray_address: str | None,
    propose: bool,
    as_json: bool,
    **options: Any,
) -> None:
    from osup_mp.evolve import report
    from osup_mp.evolve.gate import gate
    from osup_mp.evolve.judge import Judge

    if requests_file is None:
        fail("--requests FILE is required (the workload)", EXIT_USAGE)
    if (score_hook is None) != (min_score is None):
        fail("--score and --min-score go together", EXIT_USAGE)
    judged: dict[str, Any] = {
        "compare": compare_hook or cfg.evolution.compare or None,
        "tolerance": cfg.evolution.mismatch_tolerance if tolerance is None else tolerance,
        "score": score_hook,
        "min_score": min_score or 0.0,
    }
    deadlines = {"cpu_seconds": cpu_seconds, "wall_seconds": wall_seconds}
    try:
        Judge(**judged)  # a hook that cannot load is refused before a run is created
    except ValueError as exc:
        fail(f"--compare/--score: {exc}", EXIT_USAGE)
    run, requests = _open_run(cfg, requests_file, judged, deadlines, **options)
    spec = run.spec
    if validator is None and cfg.o_supervisor.gerbil_executable == "osup-mp-agent":
        validator = REFERENCE_VALIDATOR
    try:
        judge = Judge(**(spec.judge or judged))  # a resumed run judges as it did
    except ValueError as exc:
        fail(f"--compare/--score: {exc}", EXIT_USAGE)
    deadlines = spec.deadlines or deadlines
    workload = _workload(cfg, requests)
    if ray_address is None:
        evaluator = _shadows(cfg, run, workload, judge, workers, as_json)
        evaluator.deadlines = deadlines
    else:
        evaluator = _on_ray(cfg, run.spec.target, workload, judge, ray_address, workers, deadlines)

    def gated(code: str) -> str | None:
        return gate(code, spec.target, validator).error

    if not as_json:
        click.echo(f"run {run.id}: {spec.generations} generations x {spec.population}")
    try:
        _generations(run, evaluator, gated, as_json)
    except KeyboardInterrupt:
        fail(f"stopped; continue with: osup-mp evolve --requests FILE --resume {run.id}", 130)
    finally:
        if ray_address is not None:
            evaluator.close()
    summary = report.summary(run)
    failures = getattr(run.mutator, "failures", [])
    summary["mutator_failures"] = {"count": len(failures), "first": failures[:3]}
    if propose:
        summary["proposed"] = _propose(cfg, run)
    if as_json:
        click.echo(to_json(summary))
    else:
        for line in report.text(run, summary):
            click.echo(line)
        if failures:
            click.echo(f"the mutator failed {len(failures)} times (built-in mutation used)")
        if propose:
            click.echo(summary["proposed"]["message"])
    if propose and summary["proposed"].get("refused"):
        raise SystemExit(1)  # the run is done and reported; the hand-off was refused


def _open_run(
    cfg: Config,
    requests_file: Path,
    judge: dict[str, Any],
    deadlines: dict[str, float],
    **options: Any,
) -> tuple[Any, list[Any]]:
    """The run (new, or resumed: its judge and deadlines are those it was started with) and
    the workload; exits 2 with the reason on bad input."""
    from osup_mp.cli.traffic import read_requests
    from osup_mp.evolution.genetic import VariationError, genes
    from osup_mp.evolve.mutator import CommandMutator
    from osup_mp.evolve.run import Run, RunError, RunSpec

    root = cfg.o_supervisor.data_dir / "evolve"
    try:
        requests = read_requests(requests_file)
        if options["resume_id"]:
            run = Run.resume(root, options["resume_id"])
            if run.spec.mutator:
                run.mutator = CommandMutator(run.spec.mutator, run.spec.target)
            return run, requests
        code_file, target = options["code_file"], options["target"]
        if code_file is None or target is None:
            fail("--code FILE and --target MODULE are required (or --resume RUN)", EXIT_USAGE)
        code = code_file.read_text()
        genes(code)  # refuses, with the reason, code that cannot be varied
        argv = shlex.split(options["mutator"]) if options["mutator"] else None
        sizes = (options["generations"], options["population"], options["seed"], options["elite"])
        spec = RunSpec(
            code, target, *sizes, mutator=argv, pareto=options["pareto"], judge=judge,
            deadlines=deadlines,
        )  # fmt: skip
        return Run.create(root, spec, CommandMutator(argv, target) if argv else None), requests
    except (ValueError, OSError, RunError, VariationError) as exc:
        fail(str(exc), EXIT_USAGE)


def _workload(cfg: Config, requests: list[Any]) -> Any:
    """The main's answers to the workload: what every variant is judged against."""
    from osup_mp.client import ClientError, NotRunning
    from osup_mp.evolve.shadows import reference

    try:
        return reference(cfg, requests)
    except NotRunning:
        fail(f"not running (no data-plane socket at {cfg.data_socket('main')})", EXIT_NOT_RUNNING)
    except ClientError as exc:
        fail(f"the main agent could not answer the workload: {exc}")


def _shadows(cfg: Config, run: Any, workload: Any, judge: Any, workers: int, quiet: bool) -> Any:
    """Shadows named after the run (a resumed run stops the ones a killed attempt left)."""
    from osup_mp.client import ClientError
    from osup_mp.evolve.shadows import ShadowEvaluator

    prefix = run.id.replace("run-", "evo")
    evaluator = ShadowEvaluator(
        cfg, run.spec.target, workload, judge=judge, workers=workers, prefix=prefix
    )
    try:
        left = evaluator.stop_leftovers()
        room = evaluator.room()
    except ClientError as exc:
        fail(f"cannot list the tree's shadows: {exc}")
    if left and not quiet:
        click.echo(f"stopped {len(left)} shadows an earlier attempt of this run left: {left}")
    if room < 1:
        fail(f"no room for a shadow: [o_supervisor] max_concurrent_shadows "
             f"({cfg.o_supervisor.max_concurrent_shadows}) are running")  # fmt: skip
    if workers > room:
        evaluator.workers = room
        if not quiet:
            click.echo(f"{room} workers: the room left under max_concurrent_shadows", err=True)
    return evaluator


def _on_ray(
    cfg: Config,
    target: str,
    workload: Any,
    judge: Any,
    address: str,
    workers: int,
    deadlines: dict[str, float],
) -> Any:
    """Ray tasks, each starting from a checkpoint of the main taken now."""
    from osup_mp.client import ClientError
    from osup_mp.evolve.on_ray import RayEvaluator, RayUnavailable
    from osup_mp.evolve.standalone import Job
    from osup_mp.storage.checkpoints.store import VaultError

    try:
        job = Job.for_tree(cfg, target, workload, judge, **deadlines)
    except (ClientError, OSError, VaultError) as exc:
        fail(f"cannot take the main's state for Ray tasks: {exc}")
    try:
        return RayEvaluator(job, address, workers)
    except RayUnavailable as exc:
        fail(str(exc), EXIT_USAGE)


def _generations(run: Any, evaluator: Any, gated: Any, as_json: bool) -> None:
    """Step the run to its end, with a progress bar per generation (on stderr)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from osup_mp.evolve import report

    if as_json:
        while not run.done:
            run.step(evaluator.evaluate, gated)
        return
    columns = (
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[so_far]}"),
    )  # fmt: skip
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        while not run.done:
            index = len(run.history) + 1
            task = bar.add_task(f"generation {index}/{run.spec.generations}", total=None, so_far="")
            measured: list[Any] = []  # this generation's figures, as variants complete

            def done(figures: Any, task: Any = task, measured: list[Any] = measured) -> None:
                measured.append(figures)  # from the evaluator's threads: one append each
                failed = sum(f.failure is not None for f in measured)
                medians = [f.median_ms for f in measured if f.failure is None and f.latencies_ms]
                best = f", best median {min(medians):.2f} ms" if medians else ""
                bar.update(task, advance=1, so_far=f"{failed} failed{best}")

            evaluator.on_variant = done
            generation = run.step(evaluator.evaluate, gated)
            bar.remove_task(task)
            bar.console.print(report.generation_line(generation, run.spec.generations))


def _propose(cfg: Config, run: Any) -> dict[str, Any]:
    """Start an experiment with the best variant when it beat the starting code."""
    best, start = run.best, run.history[0].variants[0]
    if best is None or best.code == run.spec.code or (best.fitness or 0) <= (start.fitness or 0):
        return {"experiment": None, "message": "not proposed: no variant beat the starting code"}
    from osup_mp.client import Client, ClientError

    reason = f"osup-mp evolve {run.id}: variant {best.fingerprint}, fitness {best.fitness:.3f}"
    try:
        with Client.for_config(cfg) as client:
            record = client.request(
                "experiment_start", code=best.code, target=run.spec.target, reason=reason
            )
    except ClientError as exc:
        return {"experiment": None, "message": f"not proposed: {exc}", "refused": str(exc)}
    return {"experiment": record["id"], "message": f"proposed: experiment {record['id']} started"}
