"""Read a shared-memory segment for humans: :func:`describe` as plain data, rendered as
text or rich tables, once or every ``--interval`` (``osup-mp inspect shm``,
``tools/shm_dump.py``).

Decision: one read-only mapping per sample. ``--watch`` re-attaches every tick, since a
restarted tree rebuilds the segment and a long-held mapping would keep showing the dead one.
The module imports only the standard library and the segment at import time (rich inside
the functions that draw): the offline dump must work when the CLI or the config is broken.
"""

from __future__ import annotations

import enum
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from osup_mp.lowlevel.proc import pid_alive
from osup_mp.storage.shm.segment import (
    Role,
    SharedState,
    ShmError,
    SlotState,
    monotonic_ns,
    shm_path,
)

SLOT_COLUMNS = (
    "SLOT", "ROLE", "ID", "PID", "STATE", "GEN", "RESTARTS", "BEATS", "HB AGE", "REQS", "ERRS",
    "LATENCY", "RSS", "OVERFLOW", "LSN",
)  # fmt: skip
BUFFER_COLUMNS = ("BUFFER", "VERSION", "SHAPE", "BYTES", "CRC32", "PUBLISHED")
LEFT_COLUMNS = frozenset({"ROLE", "ID", "STATE"})  # the rest are right-aligned
HB_AGE_COLUMN = SLOT_COLUMNS.index("HB AGE")
WIDE = 200  # columns when stdout is not a terminal (rich would otherwise wrap at 80)


def describe(shm: SharedState) -> dict[str, Any]:
    """Header, slots in use and the state region as plain data (``inspect shm``)."""
    h = shm.header
    now = monotonic_ns()
    slots = []
    for index, s in enumerate(shm.slots):
        if not s["in_use"]:
            continue
        hb = max(int(s["hb_agent_ns"]), int(s["hb_frame_ns"]))
        slots.append(
            {
                "slot": index,
                "role": _name(Role, int(s["role"])).lower(),
                "id": bytes(s["instance_id"]).decode(errors="replace"),
                "pid": int(s["pid"]),
                "state": _name(SlotState, int(s["state"])),
                "generation": int(s["generation"]),
                "restarts": int(s["restarts"]),
                "heartbeats": int(s["hb_counter"]),
                "heartbeat_age_ms": round((now - hb) / 1e6, 1) if hb else None,
                "requests": int(s["requests"]),
                "errors": int(s["errors"]),
                "latency_us": float(s["latency_us"]),
                "rss_bytes": int(s["rss_bytes"]),
                "state_overflow_bytes": int(s["state_overflow"]),
                "applied_lsn": int(s["applied_lsn"]),
            }
        )
    st = shm.state
    buffers = []
    for index in (0, 1):
        b = shm.buffer_header(index)
        buffers.append(
            {
                "version": int(b["version"]),
                "rows": int(b["rows"]),
                "dim": int(b["dim"]),
                "bytes": int(b["length"]),
                "crc32": int(b["crc32"]),
                "published_ns": int(b["published_ns"]),
            }
        )
    return {
        "name": shm.name,
        "header": {
            "magic": bytes(h["magic"]).decode(errors="replace"),
            "version": int(h["version"]),
            "total_size": int(h["total_size"]),
            "creator_pid": int(h["creator_pid"]),
            "creator_alive": pid_alive(int(h["creator_pid"])),
            "epoch": int(h["epoch"]),
            "slot_count": int(h["slot_count"]),
            "created_ns": int(h["created_ns"]),
        },
        "slots": slots,
        "state": {
            "seq": int(st["seq"]),
            "active": int(st["active"]),
            "capacity_bytes": shm.capacity,
            "buffers": buffers,
        },
    }


def _name(kind: type[enum.IntEnum], value: int) -> str:
    try:
        return kind(value).name
    except ValueError:
        return f"UNKNOWN({value})"


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
        return describe(shm)
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
