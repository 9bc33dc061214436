"""``osup-mp inspect shm``: decode the tree's shared-memory segment, read-only.

Prints :meth:`~osup_mp.storage.shm.segment.SharedState.describe` — the header, the slots in
use and the seqlock state region — as rich tables, as JSON (``--json``), or redrawn every
``--interval`` seconds (``--watch``) until Ctrl-C.

Design decisions:

* **Read-only.** The segment is mapped with ``SharedState.attach(name, writable=False)``
  (``PROT_READ``: numpy views of it are not writeable, so a bug here raises instead of
  scribbling on a running tree), and the mapping is closed before the command returns.
* **Attach per sample.** ``--watch`` attaches, describes and closes on every tick instead of
  holding one mapping: when the tree restarts it unlinks and rebuilds the segment, and a
  long-held mapping would keep showing the dead one. A segment that vanishes mid-watch is
  shown as such and the watch keeps polling (the tree may be restarting).
* **Exit codes.** A missing segment is "no tree running" (3); a foreign or wrong-version
  segment is a failure (1) with the :class:`~osup_mp.storage.shm.segment.ShmError` message;
  Ctrl-C during ``--watch`` exits 0. Never a traceback.
* **Rendering shared with ``tools/shm_dump.py``** through :mod:`osup_mp.storage.shm.view`, which
  holds the snapshot, the formatters, the rich tables and the watch loops and imports
  neither click nor the config (the offline tool must not). This module only adds the
  config (segment name, heartbeat timeout for the red ages) and the click command.
"""

from __future__ import annotations

import json

import click

from osup_mp.cli.common import EXIT_FAILED, EXIT_NOT_RUNNING, fail, load

MISSING_NOTE = "is the tree running? still watching"


@click.group("inspect")
def command() -> None:
    """Look inside a running tree (read-only)."""


@command.command("shm")
@click.option("--json", "as_json", is_flag=True, help="Print the description as JSON.")
@click.option("--watch", is_flag=True, help="Redraw every --interval seconds until Ctrl-C.")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.05),
    default=None,
    metavar="S",
    help="Seconds between redraws with --watch (default 1).",
)
@click.pass_context
def shm_command(ctx: click.Context, as_json: bool, watch: bool, interval: float | None) -> None:
    """Decode the shared-memory segment: header, slots in use, state region.

    Exit 3 if there is no segment (the tree is not running), 1 if it is not an osup-mp
    segment of this layout version.
    """
    if interval is not None and not watch:
        raise click.UsageError("--interval only makes sense with --watch")
    from osup_mp.storage.shm import view as shm_view  # numpy: only when a segment is read
    from osup_mp.storage.shm.segment import ShmError

    cfg = load(ctx)
    name = cfg.o_supervisor.shared_memory_name
    hb_timeout_ms = float(cfg.o_supervisor.heartbeat_timeout)
    try:
        desc = shm_view.snapshot(name)
    except shm_view.SegmentMissing as exc:
        fail(f"{exc} (is the tree running?)", EXIT_NOT_RUNNING)
    except ShmError as exc:
        fail(str(exc), EXIT_FAILED)
    if not watch:
        if as_json:
            click.echo(json.dumps(desc, indent=2))
        else:
            shm_view.rich_console().print(shm_view.rich_renderable(desc, hb_timeout_ms))
        return
    try:
        if as_json:
            shm_view.watch_json(name, interval or 1.0, click.echo, MISSING_NOTE, desc)
        else:
            shm_view.watch_live(name, interval or 1.0, MISSING_NOTE, desc, hb_timeout_ms)
    except KeyboardInterrupt:
        pass
