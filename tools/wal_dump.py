"""Decode and verify WAL segments offline: ``python tools/wal_dump.py WAL_DIR [options]``.

Needs no running tree. Prints each segment's records (LSN, type, size, the decoded entry's
operation) and every problem found (torn tail or corruption, with file and offset). Exit 0
when every record verifies, 1 when there is a problem, 2 for a bad argument.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from osup_mp.storage.wal.records import scan_segment, segment_name
from osup_mp.storage.wal.recovery import verify_dir
from osup_mp.wire import FrameError, unpack_payload


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wal_dir", type=Path)
    parser.add_argument("--json", action="store_true", help="one JSON document")
    parser.add_argument("--entries", action="store_true", help="print every entry in full")
    parser.add_argument("--after", type=int, default=0, help="only records with LSN > this")
    args = parser.parse_args(argv)
    if not args.wal_dir.is_dir():
        print(f"wal_dump: {args.wal_dir} is not a directory", file=sys.stderr)
        return 2
    report = verify_dir(args.wal_dir)
    records = []
    for path in sorted(args.wal_dir.glob("wal-*.log")):
        first = int(path.stem.split("-", 1)[1])
        assert path.name == segment_name(first)
        for record in scan_segment(path.read_bytes(), first).records:
            if record.lsn <= args.after:
                continue
            try:
                entry = unpack_payload(record.payload, max_frame=1 << 30)
            except FrameError as exc:
                entry = {"undecodable": str(exc)}
            records.append(
                {
                    "file": path.name,
                    "offset": record.offset,
                    "lsn": record.lsn,
                    "type": record.type,
                    "bytes": len(record.payload),
                    "entry": entry,
                }
            )
    if args.json:
        print(
            json.dumps(
                {**report, "records": records}, indent=2, default=lambda v: f"<{len(v)} bytes>"
            )
        )
    else:
        for r in records:
            entry = r["entry"]
            what = entry if args.entries else entry.get("operation", "?")
            print(f"{r['lsn']:>10}  {r['file']}@{r['offset']}  {r['bytes']:>6} B  {what}")
        for f in report["files"]:
            print(f"{f['name']}: {f['records']} records, LSN {f['first_lsn']}..{f['last_lsn']}")
        for p in report["problems"]:
            print(f"{p['kind'].upper()}: {p['file']} at offset {p['offset']}: {p['problem']}")
        print("ok" if report["ok"] else "problems found")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
