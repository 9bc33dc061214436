"""Read and render a shared-memory segment for humans: ``SharedState.describe()`` as text.

Used by ``osup-mp inspect shm`` (:mod:`osup_mp.cli.inspect_cmd`) and by the offline tool
``tools/shm_dump.py``: :func:`snapshot` attaches read-only, describes and closes;
:func:`format_text` renders the description as aligned plain text and
:func:`rich_renderable` as rich tables; :func:`watch_json` and :func:`watch_live` are the
``--watch`` loops, re-attaching on every tick (see :func:`samples`).

Design decisions:

* **One rendering for both tools.** The CLI command and the offline dump show the same
  document (and the same ``--json``), so the decoding, the formatters and the layout live
  here once instead of being kept in step by hand in two files.
* **Importable without click.** ``tools/shm_dump.py`` is a forensic tool that must work when
  the CLI package, the config or the tree is broken, so this module imports only the
  standard library and :mod:`osup_mp.storage.shm.segment` at import time — never
  ``osup_mp.cli``, click or the config. rich is optional: it is imported inside the functions
  that need it, and
  :func:`format_text` works without it.
* **Read-only, one mapping per sample.** ``SharedState.attach(name, writable=False)`` maps
  the segment ``PROT_READ`` (a bug here raises instead of scribbling on a running tree) and
  the mapping is closed before :func:`snapshot` returns. Watching re-attaches every tick:
  a restarted tree unlinks and rebuilds the segment, and a long-held mapping would keep
  showing the dead one.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from osup_mp.storage.shm.segment import SharedState, ShmError, shm_path

SLOT_COLUMNS = (
    "SLOT", "ROLE", "ID", "PID", "STATE", "GEN", "RESTARTS", "BEATS", "HB AGE", "REQS", "ERRS",
    "LATENCY", "RSS", "OVERFLOW", "LSN",
)  # fmt: skip
BUFFER_COLUMNS = ("BUFFER", "VERSION", "SHAPE", "BYTES", "CRC32", "PUBLISHED")
LEFT_COLUMNS = frozenset({"ROLE", "ID", "STATE"})  # the rest are right-aligned
HB_AGE_COLUMN = SLOT_COLUMNS.index("HB AGE")
WIDE = 200  # columns when stdout is not a terminal (rich would otherwise wrap at 80)


class SegmentMissing(Exception):
    """No segment by that name (the tree is not running)."""


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


def sample(name: str, missing_note: str) -> tuple[dict[str, Any] | None, str]:
    """One ``--watch`` tick: ``(describe(), "")``, or ``(None, why)`` when it failed.

    A vanished segment is not fatal while watching (the tree may be restarting): its message
    gets ``(missing_note)`` appended.
    """
    try:
        return snapshot(name), ""
    except SegmentMissing as exc:
        return None, f"{exc} ({missing_note})"
    except ShmError as exc:
        return None, str(exc)


def samples(
    name: str, interval: float, missing_note: str, first: dict[str, Any] | None = None
) -> Iterator[tuple[dict[str, Any] | None, str]]:
    """:func:`sample` forever, *interval* seconds apart (starting with *first* if given)."""
    desc, problem = (first, "") if first is not None else sample(name, missing_note)
    while True:
        yield desc, problem
        time.sleep(interval)
        desc, problem = sample(name, missing_note)


# -- formatters ------------------------------------------------------------------------------


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


def _late(age: float | None, hb_timeout_ms: float | None) -> bool:
    return age is not None and hb_timeout_ms is not None and age > hb_timeout_ms


# -- rows ------------------------------------------------------------------------------------


def header_lines(desc: dict[str, Any]) -> list[str]:
    """The header block: name, layout, size, creator (and a hint when it is dead), epoch."""
    h = desc["header"]
    lines = [
        f"shared memory {desc['name']}  ({shm_path(desc['name'])})",
        f"  magic {h['magic']}   layout version {h['version']}   size "
        f"{fmt_bytes(h['total_size'])}   slots {len(desc['slots'])}/{h['slot_count']} in use",
        f"  creator pid {h['creator_pid']} ({'alive' if h['creator_alive'] else 'dead'})   "
        f"epoch {h['epoch']:#x}",
        f"  created {fmt_wall(h['created_ns'])}",
    ]
    if not h["creator_alive"]:
        lines.append(
            f"  leftover of a dead tree: the next start rebuilds it, or rm {shm_path(desc['name'])}"
        )
    return lines


def slot_cells(s: dict[str, Any]) -> list[str]:
    """One slot of ``describe()["slots"]`` as the cells of :data:`SLOT_COLUMNS`."""
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
        str(s["applied_lsn"] or "-"),
    ]


def state_line(desc: dict[str, Any]) -> str:
    st = desc["state"]
    return (
        f"state region: seq {st['seq']} ({'publishing' if st['seq'] & 1 else 'stable'})   "
        f"active buffer {st['active']}   capacity {fmt_bytes(st['capacity_bytes'])}"
    )


def buffer_rows(desc: dict[str, Any]) -> list[list[str]]:
    """The two state buffers as the cells of :data:`BUFFER_COLUMNS` (``*`` marks the active)."""
    st = desc["state"]
    return [
        [
            f"{'*' if index == st['active'] else ' '}{index}",
            str(b["version"]),
            f"{b['rows']}x{b['dim']}",
            fmt_bytes(b["bytes"]),
            f"{b['crc32']:08x}",
            fmt_wall(b["published_ns"]),
        ]
        for index, b in enumerate(st["buffers"])
    ]


# -- plain text ------------------------------------------------------------------------------


def _columns(headers: tuple[str, ...], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: list[str] | tuple[str, ...]) -> str:
        return "  ".join(
            c.ljust(w) if h in LEFT_COLUMNS else c.rjust(w)
            for c, w, h in zip(cells, widths, headers, strict=True)
        ).rstrip()

    return [line(headers), *(line(r) for r in rows)]


def format_text(desc: dict[str, Any], hb_timeout_ms: float | None = None) -> str:
    """``describe()`` as plain text with aligned columns (no rich needed).

    With *hb_timeout_ms*, a heartbeat age above it is marked with a trailing ``!``.
    """
    lines = [*header_lines(desc), ""]
    rows = []
    for s in desc["slots"]:
        cells = slot_cells(s)
        if _late(s["heartbeat_age_ms"], hb_timeout_ms):
            cells[HB_AGE_COLUMN] += "!"
        rows.append(cells)
    lines += _columns(SLOT_COLUMNS, rows) if rows else ["no slots in use"]
    lines += ["", state_line(desc), *_columns(BUFFER_COLUMNS, buffer_rows(desc))]
    return "\n".join(lines)


# -- rich ------------------------------------------------------------------------------------


def rich_renderable(desc: dict[str, Any], hb_timeout_ms: float | None = None) -> Any:
    """``describe()`` as rich renderables: header block, slot table, state region.

    The same lines as :func:`format_text`, styled; with *hb_timeout_ms*, a heartbeat age
    above it is red. Imports rich (call it only when rich is installed).
    """
    from rich.console import Group, RenderableType
    from rich.table import Table
    from rich.text import Text

    lines = header_lines(desc)
    header = Text("\n".join(lines))
    name_at = len("shared memory ")
    header.stylize("bold", 0, name_at)
    header.stylize("bold cyan", name_at, name_at + len(desc["name"]))
    alive = bool(desc["header"]["creator_alive"])
    word_at = len(lines[0]) + len(lines[1]) + 2 + lines[2].index("(") + 1
    header.stylize(
        "green" if alive else "red", word_at, word_at + len("alive" if alive else "dead")
    )
    if not alive:
        header.stylize("yellow", sum(len(line) + 1 for line in lines[:-1]), len(header))

    def table(headers: tuple[str, ...]) -> Table:
        t = Table(box=None, header_style="bold")
        for h in headers:
            t.add_column(h, justify="left" if h in LEFT_COLUMNS else "right")
        return t

    slots = table(SLOT_COLUMNS)
    for s in desc["slots"]:
        cells: list[str | Text] = list(slot_cells(s))
        if _late(s["heartbeat_age_ms"], hb_timeout_ms):
            cells[HB_AGE_COLUMN] = Text(str(cells[HB_AGE_COLUMN]), style="red")
        slots.add_row(*cells)
    buffers = table(BUFFER_COLUMNS)
    for index, row in enumerate(buffer_rows(desc)):
        buffers.add_row(*row, style="bold" if index == desc["state"]["active"] else None)
    parts: list[RenderableType] = [header, Text()]
    parts.append(slots if desc["slots"] else Text("no slots in use", style="dim"))
    parts += [Text(), Text(state_line(desc)), buffers]
    return Group(*parts)


def rich_console() -> Any:
    """A rich console for stdout, :data:`WIDE` columns when it is not a terminal."""
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=WIDE)


# -- --watch ---------------------------------------------------------------------------------


def watch_json(
    name: str,
    interval: float,
    emit: Callable[[str], object],
    missing_note: str,
    first: dict[str, Any] | None = None,
) -> None:
    """One compact ``describe()`` per line (NDJSON), or ``{"name", "error"}``, until Ctrl-C."""
    for desc, problem in samples(name, interval, missing_note, first):
        emit(json.dumps(desc if desc is not None else {"name": name, "error": problem}))


def watch_live(
    name: str,
    interval: float,
    missing_note: str,
    first: dict[str, Any] | None = None,
    hb_timeout_ms: float | None = None,
) -> None:
    """Redraw :func:`rich_renderable` in place every *interval* seconds until Ctrl-C; when
    stdout is not a terminal (a pipe, a file), print plain frames one after the other."""
    if not sys.stdout.isatty():
        for desc, problem in samples(name, interval, missing_note, first):
            print(f"--- {time.strftime('%H:%M:%S')}", flush=False)
            print(format_text(desc, hb_timeout_ms) if desc is not None else problem, flush=True)
        return
    from rich.console import Group
    from rich.live import Live
    from rich.text import Text

    with Live(console=rich_console(), auto_refresh=False) as live:
        for desc, problem in samples(name, interval, missing_note, first):
            stamp = Text(f"every {interval:g}s, Ctrl-C to stop - {time.strftime('%H:%M:%S')}")
            body = (
                rich_renderable(desc, hb_timeout_ms)
                if desc is not None
                else Text(problem, style="red")
            )
            live.update(Group(stamp, body), refresh=True)
