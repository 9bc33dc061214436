"""``osup-mp shadow start|stop|list``, ``hot-reload`` and ``agent-restart``: agents by id."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import click

from osup_mp.cli.common import EXIT_USAGE, fail, load, request


@click.group("shadow")
def command() -> None:
    """Start, stop and list shadow agents (resource-limited copies of the agent)."""


def _shadow_id(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    from osup_mp.wire import api

    problem = api.shadow_id_problem(value)
    if problem is not None:
        raise click.BadParameter(problem.removeprefix("invalid shadow id "))
    return value


@command.command("start")
@click.argument("shadow_id", callback=_shadow_id)
@click.option(
    "--command",
    "agent_command",
    metavar="CMD",
    help="Agent command line for this shadow (default: the configured agent).",
)
@click.option(
    "--cpu-seconds",
    type=click.FloatRange(min=0, min_open=True),
    help="Each agent process's CPU-time deadline (killed past it, not restarted).",
)
@click.option(
    "--wall-seconds",
    type=click.FloatRange(min=0, min_open=True),
    help="Each agent process's wall-clock deadline from its start (killed, not restarted).",
)
@click.pass_context
def start(
    ctx: click.Context,
    shadow_id: str,
    agent_command: str | None,
    cpu_seconds: float | None,
    wall_seconds: float | None,
) -> None:
    """Start shadow SHADOW_ID and return once its agent is ready."""
    cfg = load(ctx)
    args: dict[str, object] = {"id": shadow_id}
    if agent_command:
        args["command"] = shlex.split(agent_command)
    for key, value in (("cpu_seconds", cpu_seconds), ("wall_seconds", wall_seconds)):
        if value is not None:
            args[key] = value
    data = request(cfg, "shadow_start", timeout=120.0, **args)
    click.echo(f"shadow {data['id']} started ({data['component']}, slot {data['slot']})")


@command.command("stop")
@click.argument("shadow_id")
@click.pass_context
def stop(ctx: click.Context, shadow_id: str) -> None:
    """Stop shadow SHADOW_ID and remove it from the tree."""
    cfg = load(ctx)
    request(cfg, "shadow_stop", timeout=120.0, id=shadow_id)
    click.echo(f"shadow {shadow_id} stopped")


@command.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@click.pass_context
def list_(ctx: click.Context, as_json: bool) -> None:
    """List shadows with their state and last kill reason."""
    cfg = load(ctx)
    agents = [a for a in request(cfg, "status").get("agents", []) if a["role"] != "main"]
    if as_json:
        click.echo(json.dumps(agents, indent=2))
        return
    for a in agents:
        reason = a.get("last_kill_reason") or a.get("fatal_reason") or ""
        click.echo(f"{a['id']:<16} {a['state']:<9} pid {a['pid'] or '-':<8} {reason}")


@click.command("agent-restart")
@click.option("--id", "instance_id", default="main", show_default=True, help="Agent instance.")
@click.pass_context
def agent_restart(ctx: click.Context, instance_id: str) -> None:
    """Restart one agent process (its manager stays), with a fresh failure count: brings a
    FATAL agent back once its cause is fixed. The main agent restores its state as usual."""
    request(load(ctx), "agent_restart", timeout=60.0, id=instance_id)
    click.echo(f"agent {instance_id} restarting")


@click.command("hot-reload")
@click.argument("source", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--id", "instance_id", default="main", show_default=True, help="Agent instance.")
@click.option("--module", default=None, help="Module to replace (default: the agent's own).")
@click.pass_context
def hot_reload(ctx: click.Context, source: Path, instance_id: str, module: str | None) -> None:
    """Replace a module of a running agent with the code in SOURCE (rolled back on failure)."""
    cfg = load(ctx)
    try:
        code = source.read_text()
    except OSError as exc:
        fail(f"cannot read {source}: {exc.strerror}", EXIT_USAGE)
    args: dict[str, object] = {"id": instance_id, "code": code}
    if module:
        args["module"] = module
    result = request(cfg, "hot_reload", timeout=60.0, **args)
    if not result.get("ok"):
        fail(f"hot reload rejected: {result.get('error')}")
    click.echo(f"agent {instance_id}: {result.get('module')} reloaded")
