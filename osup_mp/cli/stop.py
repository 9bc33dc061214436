"""``osup-mp stop``: graceful stop; returns when every process of the tree is gone."""

from __future__ import annotations

import time

import click

from osup_mp.cli.common import fail, load, request
from osup_mp.lowlevel.pidfile import running_pid
from osup_mp.lowlevel.proc import pid_alive


@click.command("stop")
@click.option(
    "--timeout", default=60.0, show_default=True, help="Seconds to wait for the tree to exit."
)
@click.pass_context
def command(ctx: click.Context, timeout: float) -> None:
    """Stop the tree: components in reverse start order, SIGTERM then SIGKILL."""
    cfg = load(ctx)
    pid = running_pid(cfg.pidfile)
    if pid is None:
        click.echo("osup-mp: not running")
        return
    request(cfg, "stop")
    deadline = time.monotonic() + timeout
    while running_pid(cfg.pidfile) is not None or (pid > 0 and pid_alive(pid)):
        if time.monotonic() > deadline:
            fail(f"tree (pid {pid}) still running after {timeout:g}s")
        time.sleep(0.02)
    click.echo(f"osup-mp stopped (pid {pid})")
