"""``osup-mp evolve``: evolve a module's code in limited shadows of the running tree;
``osup-mp evolve list`` and ``osup-mp evolve show RUN`` for past runs.

Each generation's variants pass the gate (compile, import, the agent's self-test) and then
answer a workload in shadows of their own; the fittest are kept and bred. Every generation
is written under ``data_dir/evolve/RUN`` as it completes, so ``--resume RUN`` continues a
run stopped at any moment. The report names the best variants with what was measured, plots
the best fitness per generation, and shows the diff of the best against the starting code;
``--propose`` hands the best to the evolution arbiter as an experiment on live traffic.
This module declares the commands; a run itself is :mod:`.evolve_run`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from osup_mp.cli.common import EXIT_USAGE, fail, load, to_json
from osup_mp.cli.evolve_run import run_evolution

if TYPE_CHECKING:
    pass


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
        run_evolution(load(ctx), **options)


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
