"""``osup-mp status``: the tree's components as a table, or JSON with ``--json``."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from osup_mp.cli.common import EXIT_NOT_RUNNING, fail, load, request
from osup_mp.lowlevel.pidfile import running_pid


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@click.pass_context
def command(ctx: click.Context, as_json: bool) -> None:
    """Show every component and agent: pid, state, uptime, restarts, RSS and CPU.

    Exits 3 when no tree is running.
    """
    cfg = load(ctx)
    if running_pid(cfg.pidfile) is None:
        if as_json:
            click.echo(json.dumps({"running": False, "pid": None, "components": []}))
            sys.exit(EXIT_NOT_RUNNING)
        fail("not running", EXIT_NOT_RUNNING)
    data = request(cfg, "status")
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    render(data)


def render(data: dict[str, Any]) -> None:
    """Plain aligned columns: rich would cost ``status`` ~0.1 s of imports and rendering on
    every call, and this command is run in loops and scripts."""
    click.echo(
        f"osup-mp {data.get('state', 'running')}: pid {data['pid']}, env {data['env']}, "
        f"up {_duration(data['uptime_s'])}, config {data.get('config') or '<defaults>'}"
    )
    from osup_mp.config.schema import cpu_ranges  # not at import: --help loads this module

    components = data["components"]
    placed = [set(c.get("cpus") or ()) for c in components]
    every = set().union(*placed)
    pinned = any(cpus and cpus != every for cpus in placed)
    rows = [
        [
            c["name"],
            str(c["pid"] or "-"),
            c["state"],
            _duration(c["uptime_s"]),
            str(c["restarts"]),
            _bytes(c["rss_bytes"]),
            "-" if c["cpu_percent"] is None else f"{c['cpu_percent']:.1f}%",
            *([cpu_ranges(cpus) if cpus else "-"] if pinned else []),
            c.get("last_exit") or "",
        ]
        for c, cpus in zip(components, placed, strict=True)
    ]
    header = ["NAME", "PID", "STATE", "UPTIME", "RESTARTS", "RSS", "CPU"]
    # The CPUs each process may run on, when [agent] main_cpus or [watchdog] shadow_cpus
    # set some apart.
    _table([*header, *(["CPUS"] if pinned else []), "LAST EXIT"], rows)
    agents = data.get("agents") or []
    if agents:
        rows = []
        for agent in agents:
            # A main agent's standby is shown as an agent of its own, right below it.
            for a in filter(None, (agent, agent.get("standby"))):
                rows.append(_agent_row(a))
        header = ["AGENT", "ROLE", "PID", "STATE", "RESTARTS", "HEARTBEAT", "LSN"]
        _table([*header, "LAST KILL / FATAL"], rows)


def _agent_row(a: dict[str, Any]) -> list[str]:
    age, lsn, lag = a.get("heartbeat_age_ms"), a.get("applied_lsn"), a.get("lag")
    why = a.get("last_kill_reason") or a.get("fatal_reason") or a.get("unsupported") or ""
    return [
        a["id"],
        a["role"],
        str(a["pid"] or "-"),
        a["state"],
        str(a["restarts"]),
        "-" if age is None else f"{age:.0f} ms ago",
        "-" if lsn is None else f"{lsn}" + ("" if lag is None else f" (lag {lag})"),
        why,
    ]


def _table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for index, row in enumerate([header, *rows]):
        line = "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        click.echo(click.style(line.rstrip(), bold=index == 0))


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{seconds:.1f}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _bytes(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)
