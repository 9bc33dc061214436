"""``osup-mp logs [-f]``: show the tree's log file, following it across rotations."""

from __future__ import annotations

import os
import time
from collections import deque
from pathlib import Path

import click

from osup_mp.cli.common import fail, load


@click.command("logs")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines (Ctrl-C to stop).")
@click.option(
    "-n",
    "--lines",
    type=click.IntRange(min=0),
    default=50,
    show_default=True,
    help="Lines of history to show.",
)
@click.pass_context
def command(ctx: click.Context, follow: bool, lines: int) -> None:
    """Print the last lines of the log; with -f, keep following it."""
    path = load(ctx).log_file
    if not path.exists() and not follow:
        fail(f"no log file at {path}")
    try:
        _show(path, follow, lines)
    except KeyboardInterrupt:
        pass


def _show(path: Path, follow: bool, lines: int) -> None:
    handle = None
    inode = None
    if path.exists():
        handle = path.open("r", encoding="utf-8", errors="replace")
        inode = os.fstat(handle.fileno()).st_ino
        for line in deque(handle, maxlen=lines) if lines > 0 else ():
            click.echo(line, nl=False)
        handle.seek(0, os.SEEK_END)
    while follow:
        if handle is not None:
            chunk = handle.read()
            if chunk:
                click.echo(chunk, nl=False)
                continue
        time.sleep(0.2)
        try:
            current = os.stat(path).st_ino
        except FileNotFoundError:
            continue
        if current != inode:  # rotated: finish the old file, then switch to the new one
            if handle is not None:
                click.echo(handle.read(), nl=False)
                handle.close()
            handle = path.open("r", encoding="utf-8", errors="replace")
            inode = current
    if handle is not None:
        handle.close()
