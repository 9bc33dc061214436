"""How a WAL directory is recovered at open and checked offline: its floor and gap files,
the forked helper that verifies the newer half of a large log, what is done with a bad
record (refused as corruption, or cut as a torn tail with the original kept), and
``verify_dir`` for ``osup-mp wal verify`` and ``tools/wal_dump.py``.

Decision: recovery never destroys evidence it could keep. A segment that is cut is copied to
``.broken`` first (unless the copy would leave the disk nearly full: recovering from a full
disk must not fill it again), a segment that is dropped is renamed, and each is fsynced
before the original changes; :class:`~.store.WALStore` decides when, these say how.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

from osup_mp.lowlevel.files import fsync_dir
from osup_mp.storage.wal import sidecar
from osup_mp.storage.wal.records import (
    SEGMENT_HEADER,
    SEGMENT_MAGIC,
    SEGMENT_VERSION,
    ScanResult,
    SegmentIndex,
    WALCorruption,
    WALError,
    first_lsn_from_name,
    looks_torn,
    scan_segment,
)
from osup_mp.storage.wal.verify import VerifyHelper

FLOOR_FILE = "lsn.floor"
BROKEN_FREE_MARGIN = 64 << 20  # a .broken copy never leaves less free than this
GAPS_FILE = "lsn.gaps"  # LSN ranges never written here: skipped so no LSN is handed out twice


def read_floor(directory: Path) -> int:
    """The newest LSN released by truncation (0: none)."""
    try:
        return int((directory / FLOOR_FILE).read_text().strip())
    except (FileNotFoundError, ValueError):
        return 0


def read_gaps(directory: Path) -> list[tuple[int, int]]:
    """The LSN ranges skipped in ``directory`` (:meth:`~.store.WALStore.skip_through`)."""
    try:
        text = (directory / GAPS_FILE).read_text()
    except FileNotFoundError:
        return []
    try:
        return [(int(a), int(b)) for a, b in (line.split() for line in text.splitlines())]
    except ValueError as exc:
        raise WALCorruption(directory / GAPS_FILE, 0, f"unreadable: {exc}") from exc


def start_helper(paths: list[Path], parallel_bytes: int) -> VerifyHelper | None:
    """For a log of at least ``parallel_bytes`` on more than one CPU: verify the newer
    segments (about half the bytes) in a forked helper while the store walks the older
    ones."""
    if len(paths) < 2 or len(os.sched_getaffinity(0)) < 2:
        return None
    try:
        sizes = [path.stat().st_size for path in paths]
        firsts = [first_lsn_from_name(path) for path in paths]
    except (OSError, WALError):
        return None  # the walk meets it in order and says so
    if sum(sizes) < parallel_bytes:
        return None
    split, newer = len(paths), 0
    while split > 1 and newer + sizes[split - 1] <= sum(sizes) // 2:
        split -= 1
        newer += sizes[split]
    if split == len(paths):
        return None
    sealed = [i < len(paths) - 1 for i in range(split, len(paths))]
    return VerifyHelper(split, list(zip(paths[split:], firsts[split:], sealed, strict=True)))


def cut_bad(
    path: Path, data: bytes, result: ScanResult | SegmentIndex, last: bool, salvage: str
) -> str:
    """A bad record in segment ``path`` (its bytes ``data``): a torn tail of the newest
    segment, or any bad record under ``salvage = truncate``, is cut off (the original
    kept); anything else raises :class:`WALCorruption`. What was done, for the log."""
    offset = result.good_end
    torn = last and not result.valid_after and looks_torn(data, offset)
    if not torn and salvage != "truncate":
        raise WALCorruption(path, offset, result.problem or "bad record")
    kept = keep_broken(path)
    sidecar.remove(path)
    with open(path, "r+b") as f:
        f.truncate(max(offset, SEGMENT_HEADER.size))
        if offset < SEGMENT_HEADER.size:
            f.seek(0)
            f.write(SEGMENT_HEADER.pack(SEGMENT_MAGIC, SEGMENT_VERSION, 0))
        f.flush()
        os.fsync(f.fileno())
    what = "torn tail" if torn else "corruption (salvage = truncate)"
    return (
        f"{what} in {path.name} at offset {offset} ({result.problem}): cut "
        f"{len(data) - offset} bytes, {kept}"
    )


def keep_broken(path: Path, *, move: bool = False) -> str:
    """Keep the original of a segment that recovery cuts (a copy) or drops (renamed: no
    space needed). A copy is skipped when it would leave less than ``BROKEN_FREE_MARGIN``
    free. What was done, for the log."""
    target = path.with_name(path.name + ".broken")
    n = 1
    while target.exists():  # never overwrite the evidence of an earlier repair
        target = path.with_name(f"{path.name}.broken.{n}")
        n += 1
    if move:
        os.rename(path, target)
        fsync_dir(path.parent)
        return f"original kept as {target.name}"
    size = path.stat().st_size
    free = shutil.disk_usage(path.parent).free
    if free - size < BROKEN_FREE_MARGIN:
        return (
            f"original NOT kept: a copy of {size} bytes would leave less than "
            f"{BROKEN_FREE_MARGIN >> 20} MiB free ({free} bytes free)"
        )
    shutil.copy2(path, target)
    fd = os.open(target, os.O_RDONLY)  # durable before the original is cut or removed
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(path.parent)
    return f"original kept as {target.name}"


def verify_dir(directory: Path) -> dict[str, Any]:
    """Offline check of every segment (``osup-mp wal verify``, ``tools/wal_dump.py``)."""
    problems = []
    files = []
    paths = sorted(directory.glob("wal-*.log"))
    for index, path in enumerate(paths):
        result = scan_segment(path.read_bytes(), first_lsn_from_name(path))
        files.append(
            {
                "name": path.name,
                "records": len(result.records),
                "first_lsn": result.records[0].lsn if result.records else None,
                "last_lsn": result.records[-1].lsn if result.records else None,
            }
        )
        if result.problem:
            kind = (
                "torn tail" if index == len(paths) - 1 and not result.valid_after else "corruption"
            )
            problems.append(
                {
                    "file": str(path),
                    "offset": result.good_end,
                    "kind": kind,
                    "problem": result.problem,
                }
            )
    return {"ok": not problems, "files": files, "problems": problems, "checked_at": time.time()}
