"""``osup-mp health [history ID | compare A B]``: what the health monitor knows."""

from __future__ import annotations

import time
from typing import Any

import click

from osup_mp.cli.common import load, request, to_json

JSON_HELP = "Print machine-readable JSON."
SHOWN = ("avg_latency", "error_rate", "throughput", "memory_usage", "requests")


@click.group("health", invoke_without_command=True)
@click.option("--id", "instance_id", metavar="ID", help="Show only this agent instance.")
@click.option(
    "--events",
    type=click.IntRange(min=0),
    default=20,
    show_default=True,
    help="How many of the newest state transitions to show.",
)
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@click.pass_context
def command(ctx: click.Context, instance_id: str | None, events: int, as_json: bool) -> None:
    """Each agent instance's newest metrics and the newest state transitions."""
    if ctx.invoked_subcommand is not None:
        return
    args: dict[str, Any] = {"events": events}
    if instance_id is not None:
        args["id"] = instance_id
    data = request(load(ctx), "health", **args)
    if as_json:
        click.echo(to_json(data))
        return
    metrics = data["metrics"]
    if instance_id is not None:
        metrics = {instance_id: {"at": metrics["at"], "metrics": metrics["metrics"]}}
    now = time.time()
    click.echo(f"{'INSTANCE':<12} {'AGE':>6}  {_cells(None)}")
    for name, report in sorted(metrics.items()):
        click.echo(f"{name:<12} {now - report['at']:>5.0f}s  {_cells(report['metrics'])}")
    if not metrics:
        click.echo("(no metrics reported yet)")
    for event in data["events"]:
        stamp = time.strftime("%H:%M:%S", time.localtime(event["at"]))
        why = f"  ({event['reason']})" if event.get("reason") else ""
        click.echo(f"{stamp}  {event['id']}: {event['from']} -> {event['to']}{why}")


@command.command("history")
@click.argument("instance_id", metavar="ID")
@click.option("--seconds", type=click.FloatRange(min=0), help="Only the last so many seconds.")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@click.pass_context
def history(ctx: click.Context, instance_id: str, seconds: float | None, as_json: bool) -> None:
    """One agent instance's kept metrics records, oldest first."""
    args: dict[str, Any] = {"id": instance_id}
    if seconds is not None:
        args["seconds"] = seconds
    records = request(load(ctx), "health_history", **args)
    if as_json:
        click.echo(to_json(records))
        return
    click.echo(f"{'TIME':<8}  {_cells(None)}")
    for record in records:
        stamp = time.strftime("%H:%M:%S", time.localtime(record["at"]))
        click.echo(f"{stamp:<8}  {_cells(record['metrics'])}")


@command.command("compare")
@click.argument("a")
@click.argument("b")
@click.option(
    "--seconds", type=click.FloatRange(min=0), default=60.0, show_default=True, help="The window."
)
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@click.pass_context
def compare(ctx: click.Context, a: str, b: str, seconds: float, as_json: bool) -> None:
    """Mean metrics of instance A against B over a window; DIFF > 0 means A is worse."""
    data = request(load(ctx), "health_compare", a=a, b=b, seconds=seconds)
    if as_json:
        click.echo(to_json(data))
        return
    click.echo(f"{'METRIC':<16} {a:>12} {b:>12} {'DIFF':>8}  N")
    for key, row in data["metrics"].items():
        diff = "-" if row["diff"] is None else f"{row['diff']:+.1%}"
        click.echo(
            f"{key:<16} {_figure(row['a']):>12} {_figure(row['b']):>12} {diff:>8}  "
            f"{row['n_a']}/{row['n_b']}"
        )


def _cells(values: dict[str, Any] | None) -> str:
    """The shown metrics of one report, aligned (their names when ``values`` is None)."""
    return "  ".join(f"{k if values is None else _figure(values.get(k)):>12}" for k in SHOWN)


def _figure(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, int | float) and not isinstance(value, bool) and abs(value) >= 1e5:
        return f"{value:,.0f}"  # bytes, counts: whole and grouped, never 3.6e+07
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
