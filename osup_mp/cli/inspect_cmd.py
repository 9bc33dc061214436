"""``osup-mp inspect shm``: decode the tree's shared-memory segment, read-only.

Prints :meth:`osup_mp.shm.SharedState.describe` — the header, the slots in use and the
seqlock state region — as rich tables, as JSON (``--json``), or redrawn every ``--interval``
seconds (``--watch``) until Ctrl-C.

Design decisions:

* **Read-only.** The segment is mapped with ``SharedState.attach(name, writable=False)``
  (``PROT_READ``: numpy views of it are not writeable, so a bug here raises instead of
  scribbling on a running tree), and the mapping is closed before the command returns.
* **Attach per sample.** ``--watch`` attaches, describes and closes on every tick instead of
  holding one mapping: when the tree restarts it unlinks and rebuilds the segment, and a
  long-held mapping would keep showing the dead one. A segment that vanishes mid-watch is
  shown as such and the watch keeps polling (the tree may be restarting).
* **Exit codes.** A missing segment is "no tree running" (3); a foreign or wrong-version
  segment is a failure (1) with the :class:`~osup_mp.shm.ShmError` message; Ctrl-C during
  ``--watch`` exits 0. Never a traceback.
* **No rendering shared with ``tools/shm_dump.py``.** That tool must work with nothing but
  ``osup_mp.shm`` (no config, no click, rich optional), and importing this module would
  import the whole CLI package. The decoding *is* shared — both print ``describe()`` — and
  both ``--json`` outputs are the same document; only the (small) formatting is duplicated.
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime
from typing import Any

import click
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from osup_mp.cli.common import EXIT_FAILED, EXIT_NOT_RUNNING, fail, load
from osup_mp.shm import SharedState, ShmError, shm_path

SLOT_COLUMNS = (
    "SLOT", "ROLE", "ID", "PID", "STATE", "GEN", "RESTARTS", "BEATS", "HB AGE", "REQS", "ERRS",
    "LATENCY", "RSS", "OVERFLOW",
)  # fmt: skip
WIDE = 200  # columns when stdout is not a terminal (rich would otherwise wrap at 80)


class SegmentMissing(Exception):
    """No segment by that name (the tree is not running)."""


@click.group("inspect")
def command() -> None:
    """Look inside a running tree (read-only)."""


@command.command("shm")
@click.option("--json", "as_json", is_flag=True, help="Print describe() as JSON.")
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
    cfg = load(ctx)
    name = cfg.o_supervisor.shared_memory_name
    hb_timeout_ms = float(cfg.o_supervisor.heartbeat_timeout)
    try:
        desc = snapshot(name)
    except SegmentMissing as exc:
        fail(f"{exc} (is the tree running?)", EXIT_NOT_RUNNING)
    except ShmError as exc:
        fail(str(exc), EXIT_FAILED)
    if not watch:
        if as_json:
            click.echo(json.dumps(desc, indent=2))
        else:
            _console().print(render(desc, hb_timeout_ms))
        return
    try:
        _watch(name, desc, as_json, interval or 1.0, hb_timeout_ms)
    except KeyboardInterrupt:
        pass


def snapshot(name: str) -> dict[str, Any]:
    """Attach read-only, describe, close. Raises :class:`SegmentMissing` or :class:`ShmError`."""
    try:
        shm = SharedState.attach(name, writable=False)
    except ShmError:
        if not os.path.exists(shm_path(name)):
            raise SegmentMissing(f"no shared memory named {name}") from None
        raise
    except (OSError, ValueError) as exc:  # a header whose offsets do not fit the segment
        raise ShmError(f"shared memory {name} cannot be decoded: {exc}") from None
    try:
        return shm.describe()
    except ValueError as exc:  # e.g. an unknown role or state byte in a slot
        raise ShmError(f"shared memory {name} cannot be decoded: {exc}") from None
    finally:
        shm.close()


def _watch(
    name: str, first: dict[str, Any], as_json: bool, interval: float, hb_timeout_ms: float
) -> None:
    """Redraw until Ctrl-C (the caller catches the KeyboardInterrupt)."""
    desc: dict[str, Any] | None = first
    problem = ""
    if as_json:  # one compact document per line (NDJSON)
        while True:
            click.echo(json.dumps(desc if desc is not None else {"name": name, "error": problem}))
            time.sleep(interval)
            desc, problem = _try_snapshot(name)
    with Live(console=_console(), auto_refresh=False) as live:
        while True:
            stamp = Text(f"every {interval:g}s, Ctrl-C to stop - {time.strftime('%H:%M:%S')}")
            body: RenderableType = (
                render(desc, hb_timeout_ms) if desc is not None else Text(problem, style="red")
            )
            live.update(Group(stamp, body), refresh=True)
            time.sleep(interval)
            desc, problem = _try_snapshot(name)


def _console() -> Console:
    console = Console()
    return console if console.is_terminal else Console(width=WIDE)


def _try_snapshot(name: str) -> tuple[dict[str, Any] | None, str]:
    try:
        return snapshot(name), ""
    except SegmentMissing as exc:
        return None, f"{exc} (is the tree running? still watching)"
    except ShmError as exc:
        return None, str(exc)


# -- rendering -------------------------------------------------------------------------------


def render(desc: dict[str, Any], hb_timeout_ms: float | None = None) -> RenderableType:
    """``describe()`` as rich renderables: header block, slot table, state region."""
    h = desc["header"]
    alive = Text("alive", style="green") if h["creator_alive"] else Text("dead", style="red")
    header = Text.assemble(
        ("shared memory ", "bold"),
        (desc["name"], "bold cyan"),
        f"  ({shm_path(desc['name'])})\n",
        f"  magic {h['magic']}   layout version {h['version']}   size {fmt_bytes(h['total_size'])}"
        f"   slots {len(desc['slots'])}/{h['slot_count']} in use\n",
        f"  creator pid {h['creator_pid']} (",
        alive,
        f")   epoch {h['epoch']:#x}\n",
        f"  created {fmt_wall(h['created_ns'])}",
    )
    slots = Table(box=None, header_style="bold", title_justify="left")
    for column in SLOT_COLUMNS:
        slots.add_column(column, justify="left" if column in ("ROLE", "ID", "STATE") else "right")
    for s in desc["slots"]:
        age = s["heartbeat_age_ms"]
        age_text = Text(fmt_age_ms(age))
        if age is not None and hb_timeout_ms is not None and age > hb_timeout_ms:
            age_text.stylize("red")
        cells: list[str | Text] = list(slot_cells(s))
        cells[8] = age_text
        slots.add_row(*cells)
    st = desc["state"]
    state = Text(
        f"state region: seq {st['seq']} ({'publishing' if st['seq'] & 1 else 'stable'})   "
        f"active buffer {st['active']}   capacity {fmt_bytes(st['capacity_bytes'])}"
    )
    buffers = Table(box=None, header_style="bold")
    for column in ("BUFFER", "VERSION", "SHAPE", "BYTES", "CRC32", "PUBLISHED"):
        buffers.add_column(column, justify="right")
    for index, row in enumerate(buffer_cells(st)):
        buffers.add_row(*row, style="bold" if index == st["active"] else None)
    parts: list[RenderableType] = [header, Text()]
    parts.append(slots if desc["slots"] else Text("no slots in use", style="dim"))
    parts += [Text(), state, buffers]
    return Group(*parts)


def slot_cells(s: dict[str, Any]) -> list[str]:
    return [
        str(s["slot"]),
        s["role"],
        s["id"],
        str(s["pid"] or "-"),
        s["state"],
        str(s["generation"]),
        str(s["restarts"]),
        str(s["heartbeats"]),
        fmt_age_ms(s["heartbeat_age_ms"]),
        str(s["requests"]),
        str(s["errors"]),
        f"{s['latency_us']:.0f} µs",
        fmt_bytes(s["rss_bytes"]),
        fmt_bytes(s["state_overflow_bytes"]),
    ]


def buffer_cells(state: dict[str, Any]) -> list[list[str]]:
    rows = []
    for index, b in enumerate(state["buffers"]):
        marker = "*" if index == state["active"] else " "
        rows.append(
            [
                f"{marker}{index}",
                str(b["version"]),
                f"{b['rows']}x{b['dim']}",
                fmt_bytes(b["bytes"]),
                f"{b['crc32']:08x}",
                fmt_wall(b["published_ns"]),
            ]
        )
    return rows


def fmt_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # not reached


def fmt_age_ms(age: float | None) -> str:
    return "-" if age is None else f"{age:.0f} ms"


def fmt_wall(ns: int) -> str:
    """A wall-clock ``time_ns`` stamp as local time with its age, or ``-`` for never."""
    if not ns:
        return "-"
    stamp = datetime.fromtimestamp(ns / 1e9)
    today = stamp.date() == datetime.now().date()
    when = stamp.strftime("%H:%M:%S.%f" if today else "%Y-%m-%d %H:%M:%S.%f")[:-3]
    age = max(0.0, time.time() - ns / 1e9)
    if age < 60:
        ago = f"{age:.1f}s"
    elif age < 3600:
        ago = f"{int(age) // 60}m{int(age) % 60:02d}s"
    else:
        ago = f"{int(age) // 3600}h{int(age) % 3600 // 60:02d}m"
    return f"{when} ({ago} ago)"
