"""The ``osup-mp`` command group and the options every command shares.

A command's module is imported only when that command runs (or ``--help`` lists it): one
table below names them, and ``status`` then loads one command module, not fourteen.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import click

CONFIG_HELP = "Config file (default: $OSUP_CONFIG, else ./config.toml, else built-in defaults)."
ENV_HELP = "Overlay: dev, prod or test (default: $OSUP_ENV, else dev)."

#: Command name -> ("module:attribute" under osup_mp.cli, its one-line help). The line is
#: here, not in the module, so that ``osup-mp --help`` imports no command module at all.
COMMANDS = {
    "start": ("start:command", "Start the tree."),
    "stop": ("stop:command", "Stop the tree gracefully."),
    "status": ("status:command", "Show the components and agents."),
    "restart": ("restart:command", "Restart one component of the tree."),
    "logs": ("logs:command", "Show the log, or follow it with -f."),
    "config": ("config_cmd:command", "Show the configuration in force."),
    "request": ("request:command", "Send one JSON request to the main agent."),
    "traffic": ("traffic:command", "Replay requests from a file, or record live ones."),
    "shadow": ("shadow:command", "Start, stop and list shadow agents."),
    "agent-restart": ("shadow:agent_restart", "Restart one agent process."),
    "hot-reload": ("shadow:hot_reload", "Replace a module of a running agent."),
    "checkpoint": ("checkpoint:command", "Create, list, show, restore and delete checkpoints."),
    "wal": ("wal:command", "Inspect the write-ahead log."),
    "health": ("health:command", "Show agent metrics, their history and state transitions."),
    "mirror": ("mirror:command", "Mirror read-only requests to shadows; compare answers."),
    "demo": ("demo:command", "A two-minute tour on a private tree; leaves nothing behind."),
    "experiment": (
        "experiment:command",
        "Try new code on mirrored traffic: start, list, show, stop.",
    ),
    "history": ("experiment:history", "Show the decided experiments and their verdicts."),
    "evolve": ("evolve:command", "Evolve a module's code in limited shadows; report the best."),
    "inspect": ("inspect_cmd:command", "Look inside a running tree, read-only."),
    "agent-check": ("agent_check:command", "Check that an agent executable speaks the protocol."),
}


class LazyGroup(click.Group):
    """Commands are imported on first use, and then accept --config and --env too."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            where, short_help = COMMANDS[cmd_name]
            module, _, attr = where.partition(":")
            command = getattr(importlib.import_module(f"osup_mp.cli.{module}"), attr)
            command.short_help = short_help
            _accept_everywhere(command)
            self.add_command(command, cmd_name)
        return self.commands.get(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][1]) for name in sorted(COMMANDS)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", metavar="PATH", help=CONFIG_HELP)
@click.option("--env", "env", metavar="ENV", help=ENV_HELP)
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, env: str | None) -> None:
    """osup-mp: a single-host supervisor for self-evolving agents.

    --config and --env may be given before or after the command name.
    """
    ctx.obj = {"config_path": config_path, "env": env}


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
        if not command.invoke_without_command:
            return  # a group that only dispatches takes them after its subcommand
    if any(p.name == "config_path" for p in command.params):
        return  # a command object met twice (one module, two names)
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
