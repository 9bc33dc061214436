"""``osup-mp experiment start|list|show|stop`` and ``osup-mp history``: shadow experiments
and their explained verdicts (the record's schema is in docs/operations.md)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click

from osup_mp.cli.common import fail, load, request, to_json

JSON_HELP = "Print the record(s) as JSON (schema: docs/operations.md)."
FINAL = ("watching", "decided")  # the verdict is known (a promotion is then watched)


@click.group("experiment")
def command() -> None:
    """Try new code on mirrored live traffic; promote or reject it on explained evidence."""


@command.command("start")
@click.option("--code", "code_file", required=True, metavar="FILE", help="The module's new source.")
@click.option("--target", required=True, metavar="MODULE", help="The module it replaces.")
@click.option(
    "--ratio",
    type=click.FloatRange(min=0, max=1, min_open=True),
    help="Share of read-only requests mirrored (default: [evolution] mirror_ratio).",
)
@click.option(
    "--duration",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help=(
        "Undecided this long after the candidate switched to the new code: inconclusive "
        "(default: shadow_test_duration)."
    ),
)
@click.option("--reason", default="", help="Why: the hypothesis, kept in the history.")
@click.option("--wait", is_flag=True, help="Return when decided (exit 0 whatever the verdict).")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@click.pass_context
def start(
    ctx: click.Context,
    code_file: str,
    target: str,
    ratio: float | None,
    duration: float | None,
    reason: str,
    wait: bool,
    as_json: bool,
) -> None:
    """Start an experiment: a candidate shadow runs FILE as MODULE, a control shadow the
    main's current code, both on a mirrored share of the main's read-only requests."""
    try:
        code = Path(code_file).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"cannot read {code_file}: {exc}", 2)
    cfg = load(ctx)
    args: dict[str, Any] = {"code": code, "target": target, "reason": reason}
    args |= {k: v for k, v in (("ratio", ratio), ("duration", duration)) if v is not None}
    record = request(cfg, "experiment_start", **args)
    if not wait:
        click.echo(to_json(record) if as_json else f"experiment {record['id']} started")
        return
    if not as_json:
        click.echo(
            f"experiment {record['id']} started; waiting for the verdict (Ctrl-C leaves it running)"
        )
    while record["state"] not in FINAL:
        time.sleep(0.5)  # a poll of the arbiter, not a wait for a condition in this process
        record = request(cfg, "experiment_show", id=record["id"])
    click.echo(to_json(record) if as_json else "")
    if not as_json:
        _render(record)


@command.command("list")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@click.pass_context
def list_(ctx: click.Context, as_json: bool) -> None:
    """The running experiments and the newest decided ones."""
    records = request(load(ctx), "experiment_list")
    click.echo(to_json(records) if as_json else _table(records))


@command.command("show")
@click.argument("experiment_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@click.pass_context
def show(ctx: click.Context, experiment_id: str, as_json: bool) -> None:
    """One experiment: its verdict, the rule that decided and the evidence, per metric."""
    record = request(load(ctx), "experiment_show", id=experiment_id)
    if as_json:
        click.echo(to_json(record))
    else:
        _render(record)


@command.command("stop")
@click.argument("experiment_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@click.pass_context
def stop(ctx: click.Context, experiment_id: str, as_json: bool) -> None:
    """Stop a running experiment: inconclusive, nothing promoted (a watched promotion
    stands; only its watch ends)."""
    record = request(load(ctx), "experiment_stop", id=experiment_id)
    click.echo(to_json(record) if as_json else f"experiment {record['id']}: {record['verdict']}")


@click.command("history")
@click.option(
    "-n",
    "count",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="How many of the newest decided experiments.",
)
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@click.pass_context
def history(ctx: click.Context, count: int, as_json: bool) -> None:
    """The newest decided experiments, newest first: verdict, rule and reason."""
    records = request(load(ctx), "history", n=count)
    click.echo(to_json(records) if as_json else _table(records))


def _table(records: list[dict[str, Any]]) -> str:
    if not records:
        return "no experiments"
    lines = [f"{'ID':<6} {'STATE':<11} {'VERDICT':<12} {'TARGET':<16} {'STARTED':<19} REASON"]
    for r in records:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["started_at"]))
        lines.append(
            f"{r['id']:<6} {r['state']:<11} {r['verdict'] or '-':<12} {r['target'][:16]:<16} "
            f"{started:<19} {r['reason'] or r['hypothesis'] or ''}"
        )
    return "\n".join(lines)


def _render(record: dict[str, Any]) -> None:
    """The explained verdict: what decided, then the evidence per metric and the answers."""
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)
    verdict = record["verdict"] or "(undecided)"
    console.print(
        f"experiment {record['id']}: [bold]{verdict}[/bold]  ({record['state']}; "
        f"{record['target']}, {record['ratio']:.0%} mirrored, origin {record['origin']})"
    )
    if record["reason"]:
        console.print(f"  rule {record['rule']}: {record['reason']}", markup=False)
    table = Table("metric", "n cand/ctrl", "candidate", "control", "effect [interval]",
                  "threshold", "outcome", box=None, pad_edge=False)  # fmt: skip
    for m in record["metrics"]:
        interval = m["interval"]
        bounds = (
            "" if interval is None else f" [{_effect(m, interval[0])}, {_effect(m, interval[1])}]"
        )
        table.add_row(
            m["name"],
            f"{m['n_candidate']}/{m['n_control']}",
            _value(m, m["candidate"]),
            _value(m, m["control"]),
            _effect(m) + bounds,
            m["threshold"],
            m["outcome"],
        )
    if record["metrics"]:
        console.print(table)
        for m in record["metrics"]:
            if m["test"]:
                console.print(f"  {m['name']}: {m['test']}", markup=False)
    mm = record.get("mismatches")
    if mm:
        console.print(
            f"  answers: candidate {mm['mismatches_candidate']} of {mm['compared_candidate']} "
            f"differ from the main's, control {mm['mismatches_control']} of "
            f"{mm['compared_control']}; stale {mm['stale_candidate']}/{mm['stale_control']}: "
            f"{mm['outcome']}"
        )
        for example in (mm.get("examples") or ())[:3]:  # --json has them all, in full
            for key in ("request", "expected", "got"):
                text = f"    {key:<8} {example.get(key)}"
                console.print(text if len(text) <= 110 else text[:109] + "…", markup=False)


RELATIVE = ("latency_ms", "memory_mb")  # metrics whose effect is a ratio, not a difference


def _value(row: dict[str, Any], value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if row["name"] in RELATIVE else f"{value:.2%}"  # ms, MiB or a rate


def _effect(row: dict[str, Any], value: float | None = None) -> str:
    value = row["effect"] if value is None else value
    if value is None:
        return "-"
    if row["name"] in RELATIVE:
        return f"{value:+.1%}"
    return f"{value * 100:+.1f} pt"
