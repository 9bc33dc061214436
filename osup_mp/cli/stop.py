"""``osup-mp stop``: graceful stop; returns when every process of the tree is gone."""

from __future__ import annotations

import time

import click

from osup_mp.cli.common import fail, load, request
from osup_mp.lowlevel.pidfile import running_pid


@click.command("stop")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=60.0,
    show_default=True,
    help="Seconds to wait for the tree to exit.",
)
@click.pass_context
def command(ctx: click.Context, timeout: float) -> None:
    """Stop the tree: components in reverse start order, each SIGTERM then SIGKILL.

    Stopping a tree that is not running does nothing and succeeds.
    """
    cfg = load(ctx)
    pid = running_pid(cfg.pidfile)
    if pid is None:
        click.echo("osup-mp: not running", err=True)  # nothing to do: still a success
        return
    from osup_mp.lowlevel.proc import pid_alive

    request(cfg, "stop")
    deadline = time.monotonic() + timeout
    while running_pid(cfg.pidfile) is not None or (pid > 0 and pid_alive(pid)):
        if time.monotonic() > deadline:
            fail(f"tree (pid {pid}) still running after {timeout:g}s")
        time.sleep(0.02)
    click.echo(f"osup-mp stopped (pid {pid})")
