"""``osup-mp evolve``: evolve a module's code in limited shadows of the running tree;
``osup-mp evolve list`` and ``osup-mp evolve show RUN`` for past runs.

Each generation's variants pass the gate (compile, import, the agent's self-test) and then
answer a workload in shadows of their own; the fittest are kept and bred. Every generation
is written under ``data_dir/evolve/RUN`` as it completes, so ``--resume RUN`` continues a
run stopped at any moment. The report names the best variants with what was measured, plots
the best fitness per generation, and shows the diff of the best against the starting code;
``--propose`` hands the best to the evolution arbiter as an experiment on live traffic.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from osup_mp.cli.common import EXIT_NOT_RUNNING, EXIT_USAGE, fail, load, to_json

if TYPE_CHECKING:
    from osup_mp.config import Config

REFERENCE_VALIDATOR = "osup_mp.agent.reference.agent:MemoryAgent"


@click.group("evolve", invoke_without_command=True)
@click.option(
    "--code",
    "code_file",
    type=click.Path(path_type=Path),
    metavar="FILE",
    help="The module to start from (its tunables are what varies).",
)
@click.option("--target", metavar="MODULE", help="The module the code replaces.")
@click.option(
    "--requests",
    "requests_file",
    type=click.Path(path_type=Path),
    metavar="FILE",
    help="The workload: one JSON request per line (read-only requests).",
)
@click.option(
    "--generations",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="Generations to run.",
)
@click.option(
    "--population",
    type=click.IntRange(min=2),
    default=8,
    show_default=True,
    help="Variants per generation.",
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="The seed of every random choice."
)
@click.option(
    "--elite",
    type=click.IntRange(min=0),
    default=1,
    show_default=True,
    help="The best variants kept, unchanged, for the next generation.",
)
@click.option(
    "--workers", type=click.IntRange(min=1), default=2, show_default=True, help="Shadows at once."
)
@click.option(
    "--cpu-seconds",
    type=click.FloatRange(min=0, min_open=True),
    default=60.0,
    show_default=True,
    help="Each variant's CPU-time deadline (its shadow's agent is killed past it).",
)
@click.option(
    "--wall-seconds",
    type=click.FloatRange(min=0, min_open=True),
    default=300.0,
    show_default=True,
    help="Each variant's wall-clock deadline, from its shadow's start.",
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
@click.option(
    "--compare",
    "compare_hook",
    metavar="MODULE:FUNCTION",
    help="When a variant's answer agrees with the main's (default: [evolution] compare).",
)
@click.option(
    "--tolerance",
    type=click.FloatRange(0, 1),
    help="Share of answers that may disagree (default: [evolution] mismatch_tolerance).",
)
@click.option(
    "--pareto",
    is_flag=True,
    help="Select by NSGA-II fronts over latency, errors, memory and mismatches.",
)
@click.option(
    "--score",
    "score_hook",
    metavar="MODULE:FUNCTION",
    help="How far a variant's answer agrees with the main's, 0 to 1 (replaces --compare).",
)
@click.option(
    "--min-score",
    type=click.FloatRange(0, 1),
    help="The lowest mean --score a variant may have (e.g. 0.95 for recall@k).",
)
@click.option(
    "--ray",
    "ray_address",
    metavar="ADDRESS",
    help="Evaluate variants as Ray tasks: 'local' (a Ray instance of this run), 'auto' "
    "or a cluster's address (pip install 'osup-mp[ray]').",
)
@click.option("--resume", "resume_id", metavar="RUN", help="Continue a stopped run.")
@click.option("--propose", is_flag=True, help="Start an experiment with the best, if better.")
@click.option("--json", "as_json", is_flag=True, help="Print the run's summary as JSON.")
@click.pass_context
def command(ctx: click.Context, /, **options: Any) -> None:
    """Evolve FILE (as MODULE) over generations of variants, each measured in its own
    shadow on the workload; report the best, with its diff."""
    if ctx.invoked_subcommand is None:
        _evolve(load(ctx), **options)


def _evolve(
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


@command.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the runs as JSON.")
@click.pass_context
def list_(ctx: click.Context, as_json: bool) -> None:
    """The runs under data_dir/evolve, newest first."""
    from osup_mp.evolve import report
    from osup_mp.evolve.run import Run, RunError

    root = load(ctx).o_supervisor.data_dir / "evolve"
    runs = []
    for directory in sorted(root.glob("run-*"), key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            data = report.summary(Run.resume(root, directory.name))
        except (RunError, ValueError, KeyError, OSError):
            continue  # not a run (or one being written): skipped
        best = data["best"][0] if data["best"] else None
        runs.append(
            {"run": data["run"], "target": data["target"], "best": best}
            | {"generations": f"{len(data['generations'])}/{data['generations_planned']}"}
        )
    if as_json:
        click.echo(to_json(runs))
        return
    for r in runs:
        best = r["best"]
        shown = f"best {best['fitness']:.3f} ({best['median_ms']:.2f} ms)" if best else "no best"
        click.echo(f"{r['run']}  {r['target']:16} generations {r['generations']:>7}  {shown}")


@command.command("show")
@click.argument("run_id", metavar="RUN")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.pass_context
def show(ctx: click.Context, run_id: str, as_json: bool) -> None:
    """One run's report: its best variants, the plot and the best's diff."""
    from osup_mp.evolve import report
    from osup_mp.evolve.run import Run, RunError

    root = load(ctx).o_supervisor.data_dir / "evolve"
    try:
        run = Run.resume(root, run_id)
    except RunError as exc:
        fail(str(exc), EXIT_USAGE)
    data = report.summary(run)
    click.echo(to_json(data) if as_json else "\n".join(report.text(run, data)))
