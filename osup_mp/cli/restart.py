"""``osup-mp restart NAME``: stop and start one component (not counted as a failure)."""

from __future__ import annotations

import click

from osup_mp.cli.common import load, request


@click.command("restart")
@click.argument("name")
@click.pass_context
def command(ctx: click.Context, name: str) -> None:
    """Restart component NAME."""
    cfg = load(ctx)
    data = request(cfg, "restart", name=name, timeout=120.0)
    click.echo(f"restarted {data['name']} (pid {data['pid']})")
