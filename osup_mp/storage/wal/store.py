"""The write-ahead log on disk: a directory of segments of length- and CRC-checked records
(their format: :mod:`.records`; their verification at open: :mod:`.verify`; what recovery
does with a bad one, and the offline check: :mod:`.recovery`).

Design decisions:

* Every record carries its own LSN; LSNs are consecutive across segments and survive
  restarts of the process and of the tree (the next LSN is recovered from the newest record,
  or from ``lsn.floor`` when checkpoints have let every segment go). Replay is by LSN, never
  by time. An LSN is never handed out twice: when salvage cuts records, or a checkpoint
  covers LSNs the log no longer has, the log skips past them and notes the skipped range in
  ``lsn.gaps`` (the chain of segments may jump only there).
* A header CRC separate from the payload CRC means a flipped length can never masquerade as
  a short file: on open, a bad record followed by *any* valid record is corruption (refuse,
  naming file and offset, unless the operator chose salvage); a bad record with nothing valid
  after it in the newest segment is a torn tail from a crash — it is cut off, and the
  original file is kept as ``.broken``.
* Every record's checksums are verified once, at open (a large log's newer half by a forked
  helper, in parallel; a sealed segment that matches its index file by one CRC over its
  image, :mod:`.sidecar`); the store keeps where each record starts, and keeps that index while
  appending, so reads slice records out of the files without scanning or verifying again.
* Records reach the kernel with one ``os.write`` per batch under every fsync policy; the
  policy only decides when ``fdatasync`` runs. An fsync error is fatal and never retried.
* Segments are created atomically (temp file, fsync, rename, fsync dir).
"""

from __future__ import annotations

import array
import dataclasses
import os
import zlib
from collections.abc import Iterator
from pathlib import Path

from osup_mp.lowlevel.files import atomic_write, fsync_dir, write_all
from osup_mp.storage.wal import sidecar
from osup_mp.storage.wal.records import (
    RECORD_HEADER,
    SEGMENT_HEADER,
    SEGMENT_MAGIC,
    SEGMENT_VERSION,
    PayloadRun,
    Record,
    SegmentSpan,
    WALCorruption,
    encode_record,
    first_lsn_from_name,
    last_lsn_after,
    scan_segment,
    segment_name,
)
from osup_mp.storage.wal.recovery import (
    FLOOR_FILE,
    GAPS_FILE,
    cut_bad,
    keep_broken,
    read_floor,
    read_gaps,
    start_helper,
)
from osup_mp.storage.wal.verify import VerifyHelper, verified_index

# From this many bytes of segments on, open() verifies the newer half in a forked helper.
PARALLEL_VERIFY_BYTES = 8 << 20


@dataclasses.dataclass(slots=True)
class Segment:
    path: Path
    first_lsn: int
    last_lsn: int  # first_lsn - 1 when empty
    size: int
    count: int
    # Where each record starts (verified at open, or written by this store): reads slice
    # records out of the file by these instead of scanning and verifying it again.
    offsets: array.array[int] = dataclasses.field(default_factory=lambda: array.array("Q"))


class WALStore:
    """The segments of one WAL directory: open/recover, append, read, truncate."""

    def __init__(
        self,
        directory: Path,
        *,
        segment_entries: int = 10_000,
        segment_bytes: int = 64 * 1024 * 1024,
        salvage: str = "refuse",
        parallel_verify_bytes: int | None = None,
    ) -> None:
        self.dir = directory
        self.segment_entries = segment_entries
        self.segment_bytes = segment_bytes
        self.salvage = salvage
        self.segments: list[Segment] = []
        self.next_lsn = 1
        self.notes: list[str] = []  # what recovery did, for the log
        self.gaps: list[tuple[int, int]] = []  # LSN ranges skipped (never written)
        self.parallel_verify_bytes = (
            PARALLEL_VERIFY_BYTES if parallel_verify_bytes is None else parallel_verify_bytes
        )
        self._fd = -1
        self._crc = 0  # CRC-32 of the active segment's image, for its index when sealed

    # -- open / recover ----------------------------------------------------------------------

    def open(self) -> None:
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        for stale in self.dir.glob(".*.tmp"):
            stale.unlink()  # a segment creation that never reached its rename
        paths = sorted(self.dir.glob("wal-*.log"))
        for index_file in self.dir.glob("wal-*.idx"):
            if not index_file.with_suffix(".log").exists():
                index_file.unlink()  # its segment was released or set aside
        floor = read_floor(self.dir)
        self.gaps = read_gaps(self.dir)
        helper = start_helper(paths, self.parallel_verify_bytes)
        try:
            self._recover(paths, floor, helper)
        finally:
            if helper is not None:
                helper.close()

    def _recover(self, paths: list[Path], floor: int, helper: VerifyHelper | None) -> None:
        seen = 0  # the highest LSN any segment shows, cut ones included
        expected: int | None = None
        for index, path in enumerate(paths):
            last = index == len(paths) - 1
            first = first_lsn_from_name(path)
            if expected is None and first > floor + 1 and not self._skipped(floor + 1, first):
                raise WALCorruption(
                    path,
                    0,
                    f"segment starts at LSN {first}, but only LSNs through {floor} "
                    f"were released ({FLOOR_FILE}): the segment(s) before it are missing",
                )
            if expected is not None and first != expected and not self._skipped(expected, first):
                raise WALCorruption(path, 0, f"segment starts at LSN {first}, expected {expected}")
            data = b""
            result = helper.result(index) if helper is not None else None
            if result is None:
                data = path.read_bytes()
                result = verified_index(path, data, first, sealed=not last)
            if result.problem is not None:
                data = data or path.read_bytes()
                if self.salvage == "truncate":
                    cut_from = first + len(result.offsets)
                    seen = max(seen, last_lsn_after(data, result.good_end + 1, cut_from))
                self.notes.append(cut_bad(path, data, result, last, self.salvage))
                if not last and self.salvage == "truncate":
                    for later in paths[index + 1 :]:
                        later_scan = scan_segment(later.read_bytes(), first_lsn_from_name(later))
                        seen = max(seen, first_lsn_from_name(later) - 1)
                        if later_scan.records:
                            seen = max(seen, later_scan.records[-1].lsn)
                        keep_broken(later, move=True)
                    fsync_dir(self.dir)
                    paths = paths[: index + 1]
                    last = True
            count = len(result.offsets)
            # A repaired segment with a bad header was cut to a fresh header, not to 0 bytes.
            size = max(result.good_end, SEGMENT_HEADER.size)
            seg = Segment(path, first, first + count - 1, size, count, result.offsets)
            self.segments.append(seg)
            expected = seg.last_lsn + 1
            if last:
                break
        last_lsn = self.segments[-1].last_lsn if self.segments else 0
        self.next_lsn = max(last_lsn, floor) + 1
        if not self.segments or self.segments[-1].count >= self.segment_entries:
            self._new_segment()
        self._open_active()
        if seen >= self.next_lsn:
            self.notes.append(
                f"salvage cut LSNs {self.next_lsn}..{seen}: they will not be handed out again"
            )
            self.skip_through(seen)

    def skip_through(self, lsn: int) -> None:
        """Never hand out LSNs up to ``lsn``: the next record gets ``lsn + 1``. The skipped
        range is recorded (durably, before any record after it is written) so that open()
        accepts the jump in the chain of segments."""
        if lsn < self.next_lsn:
            return
        self.gaps.append((self.next_lsn, lsn))
        atomic_write(self.dir / GAPS_FILE, "".join(f"{a} {b}\n" for a, b in self.gaps).encode())
        self.next_lsn = lsn + 1
        self._new_segment()  # segments are named for their first LSN: the jump starts one
        self._open_active()

    def _skipped(self, expected: int, first: int) -> bool:
        """True if LSNs ``expected .. first - 1`` lie in one recorded gap."""
        return any(a <= expected and first - 1 <= b for a, b in self.gaps)

    def _new_segment(self) -> None:
        if self._fd >= 0 and self.segments and self.segments[-1].count:
            seg = self.segments[-1]  # sealed from now on: index it for the next open
            sidecar.write(seg.path, seg.first_lsn, self._crc, seg.size, seg.offsets)
        path = self.dir / segment_name(self.next_lsn)
        atomic_write(path, SEGMENT_HEADER.pack(SEGMENT_MAGIC, SEGMENT_VERSION, 0))
        self.segments.append(
            Segment(path, self.next_lsn, self.next_lsn - 1, SEGMENT_HEADER.size, 0)
        )

    def _open_active(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        path = self.segments[-1].path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        self._crc = zlib.crc32(path.read_bytes())  # kept up to date by append

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    # -- append ------------------------------------------------------------------------------

    def append(self, payloads: list[bytes]) -> list[int]:
        """Write records for ``payloads`` (one write per segment touched); return their LSNs.

        The data is in the kernel when this returns; :meth:`sync` makes it durable.
        """
        lsns: list[int] = []
        i, total = 0, len(payloads)
        while i < total:
            seg = self.segments[-1]
            room = self.segment_entries - seg.count
            budget = self.segment_bytes - seg.size
            chunk = bytearray()
            starts: list[int] = []
            start = i
            while i < total and i - start < room:
                record = encode_record(self.next_lsn, payloads[i])
                # Never past segment_bytes, except a record larger than that on its own,
                # which gets an empty segment.
                if (chunk or seg.count) and len(chunk) + len(record) > budget:
                    break
                starts.append(seg.size + len(chunk))
                chunk += record
                lsns.append(self.next_lsn)
                self.next_lsn += 1
                i += 1
            if not chunk:  # this segment is full: the rest goes to a new one
                self.sync()
                self._new_segment()
                self._open_active()
                continue
            write_all(self._fd, chunk)
            self._crc = zlib.crc32(chunk, self._crc)
            seg.count += i - start
            seg.last_lsn = self.next_lsn - 1
            seg.size += len(chunk)
            seg.offsets.extend(starts)
        return lsns

    def sync(self) -> None:
        """fdatasync the active segment. An error propagates: callers treat it as fatal."""
        os.fdatasync(self._fd)

    @staticmethod
    def sync_fd(fd: int) -> None:
        """fdatasync a descriptor from :meth:`sync_handle` (on any thread)."""
        os.fdatasync(fd)

    def sync_handle(self) -> int:
        """A duplicate of the active segment's descriptor, for an fdatasync run elsewhere
        (the caller closes it). Every older segment was synced when it was rolled over, so
        syncing this one makes everything written so far durable."""
        return os.dup(self._fd)

    # -- read / truncate ---------------------------------------------------------------------

    def read_after(self, lsn: int, limit: int | None = None) -> Iterator[Record]:
        """Records with LSN > ``lsn``, in order."""
        for span in self.spans_after(lsn, limit):
            data = span.read_file()
            base = span.offsets[0]
            ends = [*span.offsets[1:], span.end]
            for i, (offset, end) in enumerate(zip(span.offsets, ends, strict=True)):
                start = offset - base + RECORD_HEADER.size
                rtype = data[offset - base + 4]
                yield Record(span.first_lsn + i, rtype, data[start : end - base], offset)

    def read_payloads_after(self, lsn: int, limit: int | None = None) -> list[PayloadRun]:
        """The payloads of the records with LSN > ``lsn`` (at most ``limit``), in order, one
        run per segment touched: what :meth:`read_after` yields, minus a Python object per
        record."""
        return [span.payloads(span.read_file()) for span in self.spans_after(lsn, limit)]

    def spans_after(
        self, lsn: int, limit: int | None = None, max_spans: int | None = None
    ) -> list[SegmentSpan]:
        """Where the records with LSN > ``lsn`` (at most ``limit``) are: one span per segment
        (at most ``max_spans``), from this store's index — every record in it was verified
        at open or written here, so nothing is scanned or verified again."""
        spans: list[SegmentSpan] = []
        left = limit
        for seg in self.segments:
            if (left is not None and left <= 0) or len(spans) == max_spans:
                break
            if seg.last_lsn <= lsn or not seg.count:
                continue
            first = max(0, lsn + 1 - seg.first_lsn)
            stop = seg.count if left is None else min(seg.count, first + left)
            end = seg.offsets[stop] if stop < seg.count else seg.size
            spans.append(SegmentSpan(seg.path, seg.first_lsn + first, seg.offsets[first:stop], end))
            if left is not None:
                left -= stop - first
        return spans

    def truncate_through(self, lsn: int) -> list[Path]:
        """Delete segments whose records all have LSN <= ``lsn`` (never the active one)."""
        removed: list[Path] = []
        while len(self.segments) > 1 and self.segments[0].last_lsn <= lsn:
            seg = self.segments[0]
            atomic_write(
                self.dir / FLOOR_FILE, f"{max(seg.last_lsn, read_floor(self.dir))}\n".encode()
            )
            seg.path.unlink()
            sidecar.remove(seg.path)
            self.segments.pop(0)
            removed.append(seg.path)
        if removed:
            fsync_dir(self.dir)
        return removed

    @property
    def last_lsn(self) -> int:
        return self.next_lsn - 1

    def stats(self) -> dict[str, object]:
        return {
            "dir": str(self.dir),
            "segments": len(self.segments),
            "first_lsn": next((s.first_lsn for s in self.segments if s.count), None),
            "last_lsn": self.last_lsn,
            "bytes": sum(s.size for s in self.segments),
            "entries": sum(s.count for s in self.segments),
            "files": [
                {
                    "name": s.path.name,
                    "first_lsn": s.first_lsn,
                    "last_lsn": s.last_lsn,
                    "entries": s.count,
                    "bytes": s.size,
                }
                for s in self.segments
            ],
        }
