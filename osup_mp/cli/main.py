"""The ``osup-mp`` command group and the options every command shares."""

from __future__ import annotations

from collections.abc import Callable

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

CONFIG_HELP = "Config file (default: $OSUP_CONFIG, else ./config.toml, else built-in defaults)."
ENV_HELP = "Overlay: dev, prod or test (default: $OSUP_ENV, else dev)."


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", metavar="PATH", help=CONFIG_HELP)
@click.option("--env", "env", metavar="ENV", help=ENV_HELP)
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, env: str | None) -> None:
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
    cli.add_command(module.command)
cli.add_command(shadow.hot_reload)
cli.add_command(shadow.agent_restart)


def _remember(key: str) -> Callable[[click.Context, click.Parameter, str | None], None]:
    def store(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
        if value is not None:
            root = ctx.find_root()
            root.obj = {**(root.obj or {}), key: value}

    return store


def _accept_everywhere(command: click.Command) -> None:
    """``--config`` and ``--env`` also after the subcommand (``osup-mp status --env prod``),
    where they win over the same options before it."""
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _accept_everywhere(sub)
        return
    command.params += [
        click.Option(
            ["--config", "config_path"],
            metavar="PATH",
            expose_value=False,
            callback=_remember("config_path"),
            help=CONFIG_HELP,
        ),
        click.Option(
            ["--env"],
            metavar="ENV",
            expose_value=False,
            callback=_remember("env"),
            help=ENV_HELP,
        ),
    ]


for _command in cli.commands.values():
    _accept_everywhere(_command)
