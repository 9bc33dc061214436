#!/usr/bin/env python3
"""Decode an osup-mp shared-memory segment without a supervisor, a config or the CLI.

    python tools/shm_dump.py [NAME] [--json] [--watch [--interval S]] [--plain]

NAME defaults to ``/o_shared_state``; ``/dev/shm/NAME`` paths and bare names are accepted.
Works on a live segment and on one left behind by a dead tree (``creator_alive`` false).
Exit status: 0 decoded, 1 not an osup-mp segment (or of another layout version), 2 usage,
3 no such segment.

Design decisions:

* **Imports only** ``osup_mp.shm`` and the standard library; rich is optional (tables when
  it is installed, aligned plain text otherwise or with ``--plain``). This is a forensic
  tool: it must keep working when the CLI package, the config or the tree is broken, so it
  does not import ``osup_mp.cli`` (which would pull in click, the client and the config).
  The decoding is shared with ``osup-mp inspect shm`` — both print
  ``SharedState.describe()``, and both ``--json`` outputs are the same document; only the
  formatting below is a deliberate, small duplicate.
* **Read-only.** ``SharedState.attach(name, writable=False)`` maps the segment
  ``PROT_READ``; the mapping is closed after every sample. ``--watch`` re-attaches on every
  tick so a rebuilt segment (new epoch) is picked up.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime
from typing import Any

try:
    from osup_mp.shm import SharedState, ShmError, shm_path
except ImportError:  # run from a checkout that is not installed
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from osup_mp.shm import SharedState, ShmError, shm_path

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_MISSING = 3
DEFAULT_NAME = "/o_shared_state"

SLOT_COLUMNS = (
    "SLOT", "ROLE", "ID", "PID", "STATE", "GEN", "RESTARTS", "BEATS", "HB AGE", "REQS", "ERRS",
    "LATENCY", "RSS", "OVERFLOW",
)  # fmt: skip
LEFT_COLUMNS = {"ROLE", "ID", "STATE"}
BUFFER_COLUMNS = ("BUFFER", "VERSION", "SHAPE", "BYTES", "CRC32", "PUBLISHED")


class SegmentMissing(Exception):
    pass


def segment_name(arg: str) -> str:
    """``/dev/shm/x``, ``x`` and ``/x`` all name the POSIX segment ``/x``."""
    if arg.startswith("/dev/shm/"):
        arg = arg[len("/dev/shm/") :]
    return "/" + arg.lstrip("/")


def snapshot(name: str) -> dict[str, Any]:
    """Attach read-only, describe, close. Raises :class:`SegmentMissing` or ``ShmError``."""
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


# -- formatting ------------------------------------------------------------------------------


def fmt_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def fmt_age_ms(age: float | None) -> str:
    return "-" if age is None else f"{age:.0f} ms"


def fmt_wall(ns: int) -> str:
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


def header_lines(desc: dict[str, Any]) -> list[str]:
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


def slot_rows(desc: dict[str, Any]) -> list[list[str]]:
    return [
        [
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
        for s in desc["slots"]
    ]


def state_line(desc: dict[str, Any]) -> str:
    st = desc["state"]
    return (
        f"state region: seq {st['seq']} ({'publishing' if st['seq'] & 1 else 'stable'})   "
        f"active buffer {st['active']}   capacity {fmt_bytes(st['capacity_bytes'])}"
    )


def buffer_rows(desc: dict[str, Any]) -> list[list[str]]:
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


def _columns(headers: tuple[str, ...], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: list[str] | tuple[str, ...]) -> str:
        return "  ".join(
            c.ljust(w) if h in LEFT_COLUMNS else c.rjust(w)
            for c, w, h in zip(cells, widths, headers, strict=True)
        ).rstrip()

    return [line(headers), *(line(r) for r in rows)]


def format_text(desc: dict[str, Any]) -> str:
    """``describe()`` as plain text with aligned columns (no rich needed)."""
    lines = [*header_lines(desc), ""]
    rows = slot_rows(desc)
    lines += _columns(SLOT_COLUMNS, rows) if rows else ["no slots in use"]
    lines += ["", state_line(desc), *_columns(BUFFER_COLUMNS, buffer_rows(desc))]
    return "\n".join(lines)


def rich_renderable(desc: dict[str, Any]) -> Any:
    """The same as rich tables (only called when rich imports)."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    def table(headers: tuple[str, ...], rows: list[list[str]]) -> Table:
        t = Table(box=None, header_style="bold")
        for h in headers:
            t.add_column(h, justify="left" if h in LEFT_COLUMNS else "right")
        for r in rows:
            t.add_row(*r)
        return t

    rows = slot_rows(desc)
    return Group(
        Text("\n".join(header_lines(desc)) + "\n"),
        table(SLOT_COLUMNS, rows) if rows else Text("no slots in use"),
        Text("\n" + state_line(desc)),
        table(BUFFER_COLUMNS, buffer_rows(desc)),
    )


# -- main ------------------------------------------------------------------------------------


def _have_rich() -> bool:
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    return True


def _sample(name: str) -> tuple[dict[str, Any] | None, str]:
    try:
        return snapshot(name), ""
    except SegmentMissing as exc:
        return None, f"{exc} (still watching)"
    except ShmError as exc:
        return None, str(exc)


def _watch(name: str, args: argparse.Namespace, use_rich: bool) -> None:
    desc: dict[str, Any] | None
    desc, problem = _sample(name)
    if args.json:
        while True:
            print(json.dumps(desc if desc is not None else {"name": name, "error": problem}))
            sys.stdout.flush()
            time.sleep(args.interval)
            desc, problem = _sample(name)
    title = f"every {args.interval:g}s, Ctrl-C to stop"
    if use_rich:
        from rich.console import Console, Group
        from rich.live import Live
        from rich.text import Text

        console = Console()
        if not console.is_terminal:
            console = Console(width=200)
        with Live(console=console, auto_refresh=False) as live:
            while True:
                body = rich_renderable(desc) if desc is not None else Text(problem)
                stamp = Text(f"{title} - {time.strftime('%H:%M:%S')}")
                live.update(Group(stamp, body), refresh=True)
                time.sleep(args.interval)
                desc, problem = _sample(name)
    while True:
        body = format_text(desc) if desc is not None else problem
        clear = "\033[2J\033[H" if sys.stdout.isatty() else ""
        print(f"{clear}{title} - {time.strftime('%H:%M:%S')}\n{body}\n", flush=True)
        time.sleep(args.interval)
        desc, problem = _sample(name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="shm_dump", description="Decode an osup-mp shared-memory segment (read-only)."
    )
    parser.add_argument("name", nargs="?", default=DEFAULT_NAME, help=f"default {DEFAULT_NAME}")
    parser.add_argument("--json", action="store_true", help="print describe() as JSON")
    parser.add_argument("--watch", action="store_true", help="redraw until Ctrl-C")
    parser.add_argument("--interval", type=float, default=None, metavar="S", help="default 1")
    parser.add_argument("--plain", action="store_true", help="plain text even if rich is there")
    args = parser.parse_args(argv)
    if args.interval is not None and not args.watch:
        parser.error("--interval only makes sense with --watch")
    if args.interval is None:
        args.interval = 1.0
    elif args.interval < 0.05:
        parser.error("--interval must be at least 0.05")
    name = segment_name(args.name)
    try:
        desc = snapshot(name)
    except SegmentMissing as exc:
        print(f"shm_dump: {exc}", file=sys.stderr)
        return EXIT_MISSING
    except ShmError as exc:
        print(f"shm_dump: {exc}", file=sys.stderr)
        return EXIT_FAILED
    use_rich = not args.json and not args.plain and _have_rich()
    if args.watch:
        try:
            _watch(name, args, use_rich)
        except KeyboardInterrupt:
            pass
        return 0
    if args.json:
        print(json.dumps(desc, indent=2))
    elif use_rich:
        from rich.console import Console

        console = Console()
        (console if console.is_terminal else Console(width=200)).print(rich_renderable(desc))
    else:
        print(format_text(desc))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # e.g. piped into head
        sys.stderr.close()
        sys.exit(0)
