#!/usr/bin/env python3
"""Decode an osup-mp shared-memory segment without a supervisor, a config or the CLI.

    python tools/shm_dump.py [NAME] [--json] [--watch [--interval S]] [--plain]

NAME defaults to ``/o_shared_state``; ``/dev/shm/NAME`` paths and bare names are accepted.
Works on a live segment and on one left behind by a dead tree (``creator_alive`` false).
Exit status: 0 decoded, 1 not an osup-mp segment (or of another layout version), 2 usage,
3 no such segment.

Design decisions:

* **Imports only** ``osup_mp.storage.shm.view`` (itself only ``osup_mp.storage.shm.segment``
  and the standard library) and the standard library; rich is optional (tables when it is installed,
  aligned plain text otherwise or with ``--plain``). This is a forensic tool: it must keep
  working when the CLI package, the config or the tree is broken, so it does not import
  ``osup_mp.cli`` (which would pull in click, the client and the config).
* **One rendering.** The snapshot, the formatters, the rich tables and the watch loops are
  :mod:`osup_mp.storage.shm.view`'s, shared with ``osup-mp inspect shm``: both show the same
  text and the same ``--json`` document. This file is argument parsing, exit codes and the
  plain-text ``--watch``.
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

try:
    from osup_mp.storage.shm import view as shm_view
except ImportError:  # run from a checkout that is not installed
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from osup_mp.storage.shm import view as shm_view
from osup_mp.storage.shm.segment import ShmError

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_MISSING = 3
DEFAULT_NAME = "/o_shared_state"
MISSING_NOTE = "still watching"


def segment_name(arg: str) -> str:
    """``/dev/shm/x``, ``x`` and ``/x`` all name the POSIX segment ``/x``."""
    if arg.startswith("/dev/shm/"):
        arg = arg[len("/dev/shm/") :]
    return "/" + arg.lstrip("/")


def _have_rich() -> bool:
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    return True


def _watch(name: str, args: argparse.Namespace, use_rich: bool) -> None:
    """Redraw until Ctrl-C (the caller catches the KeyboardInterrupt)."""
    if args.json:
        shm_view.watch_json(name, args.interval, lambda line: print(line, flush=True), MISSING_NOTE)
    if use_rich:
        shm_view.watch_live(name, args.interval, MISSING_NOTE)
    title = f"every {args.interval:g}s, Ctrl-C to stop"
    for desc, problem in shm_view.samples(name, args.interval, MISSING_NOTE):
        body = shm_view.format_text(desc) if desc is not None else problem
        clear = "\033[2J\033[H" if sys.stdout.isatty() else ""
        print(f"{clear}{title} - {time.strftime('%H:%M:%S')}\n{body}\n", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="shm_dump", description="Decode an osup-mp shared-memory segment (read-only)."
    )
    parser.add_argument("name", nargs="?", default=DEFAULT_NAME, help=f"default {DEFAULT_NAME}")
    parser.add_argument("--json", action="store_true", help="print the description as JSON")
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
        desc = shm_view.snapshot(name)
    except shm_view.SegmentMissing as exc:
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
        shm_view.rich_console().print(shm_view.rich_renderable(desc))
    else:
        print(shm_view.format_text(desc))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # e.g. piped into head
        sys.stderr.close()
        sys.exit(0)
