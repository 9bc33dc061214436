"""``osup-mp mirror start|stop|status``: copies of the main agent's read-only requests sent
to shadows, their answers timed and compared with the main's."""

from __future__ import annotations

from typing import Any

import click

from osup_mp.cli.common import load, request, to_json

JSON_HELP = "Print machine-readable JSON."


@click.group("mirror")
def command() -> None:
    """Mirror read-only requests to shadows and compare their answers with the main's."""


@command.command("start")
@click.option(
    "--to",
    "arms",
    metavar="ID",
    multiple=True,
    required=True,
    help="A shadow that gets the copies (repeat for several).",
)
@click.option(
    "--ratio",
    type=click.FloatRange(min=0, max=1, min_open=True),
    default=0.1,
    show_default=True,
    help="The share of the main's read-only requests mirrored.",
)
@click.option("--id", "mirror_id", metavar="NAME", help="A name for the mirror.")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@click.pass_context
def start(
    ctx: click.Context, arms: tuple[str, ...], ratio: float, mirror_id: str | None, as_json: bool
) -> None:
    """Start mirroring to the given shadows (only ops the main agent declared read-only)."""
    args: dict[str, Any] = {"to": list(arms), "ratio": ratio}
    if mirror_id:
        args["id"] = mirror_id
    data = request(load(ctx), "mirror_start", **args)
    click.echo(to_json(data) if as_json else f"mirror {data['id']} started")


@command.command("stop")
@click.argument("mirror_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@click.pass_context
def stop(ctx: click.Context, mirror_id: str, as_json: bool) -> None:
    """Stop a mirror and print its final figures."""
    data = request(load(ctx), "mirror_stop", id=mirror_id)
    if as_json:
        click.echo(to_json(data))
    else:
        _render([data])


@command.command("status")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Every running mirror: per shadow, copies sent, dropped, matches, mismatches, stale
    answers, errors and latency next to the main's."""
    data = request(load(ctx), "mirror_status")
    if as_json:
        click.echo(to_json(data))
    elif not data:
        click.echo("no mirror running")
    else:
        _render(data)


def _render(mirrors: list[dict[str, Any]]) -> None:
    for mirror in mirrors:
        main = mirror["main_latency_ms"]
        click.echo(
            f"mirror {mirror['id']}: {mirror['ratio']:.0%} of read-only requests, "
            f"{mirror['copies']} copies; main p50 {_ms(main['p50'])} p99 {_ms(main['p99'])}"
        )
        click.echo(
            f"  {'SHADOW':<12} {'SENT':>7} {'DROPPED':>7} {'MATCH':>7} {'MISMATCH':>8} "
            f"{'STALE':>7} {'ERROR':>7}  {'P50':>9} {'P99':>9} {'SERVICE P50':>11}"
        )
        for arm in mirror["arms"]:
            lat, service = arm["latency_ms"], arm["service_ms"]
            click.echo(
                f"  {arm['arm']:<12} {arm['sent']:>7} {arm['dropped']:>7} {arm['match']:>7} "
                f"{arm['mismatch']:>8} {arm['stale']:>7} {arm['error']:>7}  "
                f"{_ms(lat['p50']):>9} {_ms(lat['p99']):>9} {_ms(service['p50']):>11}"
            )


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} ms"
