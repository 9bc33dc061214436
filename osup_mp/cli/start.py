"""``osup-mp start``: run the tree in the foreground, or detached with ``--daemon``."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

import click

from osup_mp.cli.common import EXIT_FAILED, fail, load
from osup_mp.lowlevel.pidfile import running_pid

if TYPE_CHECKING:
    from osup_mp.config import Config


@click.command("start")
@click.option("--daemon", "-d", is_flag=True, help="Detach, and return once the tree is up.")
@click.pass_context
def command(ctx: click.Context, daemon: bool) -> None:
    """Start the supervision tree, in the foreground unless --daemon is given."""
    cfg = load(ctx)
    pid = running_pid(cfg.pidfile)
    if pid is not None:
        fail(f"already running (pid {pid}, pidfile {cfg.pidfile})")
    if daemon:
        sys.exit(_daemonize(cfg))
    from osup_mp.app.tree import run_tree  # the whole tree: only ``start`` pays for it

    failure: list[str] = []
    code = run_tree(
        cfg, stderr_log=True, notify=lambda ok, reason: None if ok else failure.append(reason)
    )
    if failure:
        fail(f"could not start: {failure[0]} (log: {cfg.log_file})", code or EXIT_FAILED)
    sys.exit(code)


def _daemonize(cfg: Config) -> int:
    """Double-fork into the background; report the tree's own word on whether it came up."""
    from loguru import logger

    from osup_mp.app.tree import Notify, run_tree

    read_fd, write_fd = os.pipe()
    first = os.fork()
    if first:
        os.close(write_fd)
        with os.fdopen(read_fd, "rb") as pipe:
            answer = pipe.readline().decode(errors="replace").strip()
        os.waitpid(first, 0)
        if answer.startswith("ok"):
            pid = answer.split()[1]
            click.echo(f"osup-mp started (pid {pid}); log: {cfg.log_file}")
            return 0
        reason = answer.partition(" ")[2] or "the tree exited before it came up"
        fail(f"could not start: {reason} (log: {cfg.log_file})", EXIT_FAILED)
    os.close(read_fd)
    os.setsid()
    if os.fork():
        os._exit(0)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    told = False

    def notify(ok: bool, reason: str) -> None:
        # One line; the fd stays open (children close their copy) until the daemon exits.
        nonlocal told
        if not told:
            told = True
            line = f"ok {os.getpid()}" if ok else f"error {reason}"
            os.write(write_fd, line.replace("\n", " ").encode() + b"\n")

    notify_fn: Notify = notify
    code = 1
    try:
        code = run_tree(cfg, stderr_log=False, notify=notify_fn, private_fds=(write_fd,))
    except BaseException:  # never fall back into the CLI's code path in the daemon
        logger.exception("the tree failed")
    finally:
        os.close(write_fd)
        logger.remove()  # flushes and closes the log file
    os._exit(code)
