"""The ``osup-mp`` command group and the options every command shares."""

from __future__ import annotations

import click

from osup_mp.cli import (
    agent_check,
    checkpoint,
    config_cmd,
    inspect_cmd,
    logs,
    request,
    restart,
    shadow,
    start,
    status,
    stop,
    wal,
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    metavar="PATH",
    help="Config file (default: $OSUP_CONFIG, else ./config.toml, else built-in defaults).",
)
@click.option(
    "--env", "env", metavar="ENV", help="Overlay: dev, prod or test (default: $OSUP_ENV or dev)."
)
@click.pass_context
def main(ctx: click.Context, config_path: str | None, env: str | None) -> None:
    """osup-mp: a single-host supervisor for self-evolving agents."""
    ctx.obj = {"config_path": config_path, "env": env}


for module in (
    start,
    stop,
    status,
    restart,
    logs,
    config_cmd,
    request,
    shadow,
    checkpoint,
    wal,
    inspect_cmd,
    agent_check,
):
    main.add_command(module.command)
main.add_command(shadow.hot_reload)
main.add_command(shadow.agent_restart)
