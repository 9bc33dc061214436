"""The write-ahead log on disk: segmented files of length- and CRC-checked records.

File layout (all integers big-endian)::

    segment  = file header (16 B: b"OSUPWAL1", version u32, reserved u32) + record*
    record   = header (21 B) + payload
    header   = length u32 | type u8 | lsn u64 | payload crc32 u32 | header crc32 u32

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
import itertools
import os
import pickle
import re
import shutil
import signal
import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from osup_mp.lowlevel.files import atomic_write, fsync_dir, write_all
from osup_mp.storage.wal import sidecar

SEGMENT_MAGIC = b"OSUPWAL1"
SEGMENT_VERSION = 1
SEGMENT_HEADER = struct.Struct(">8sII")
RECORD_HEADER = struct.Struct(">IBQII")  # length, type, lsn, payload crc, header crc
_HEADER_CRC_PART = struct.Struct(">IBQI")
_CRC = struct.Struct(">I")
MAX_RECORD = 64 * 1024 * 1024
FLOOR_FILE = "lsn.floor"
BROKEN_FREE_MARGIN = 64 << 20  # a .broken copy never leaves less free than this
GAPS_FILE = "lsn.gaps"  # LSN ranges never written here: skipped so no LSN is handed out twice

TYPE_ENTRY = 1
# From this many bytes of segments on, open() verifies the newer half in a forked helper.
PARALLEL_VERIFY_BYTES = 8 << 20

_ZERO_HEADER = bytes(RECORD_HEADER.size)  # never intact: its header checksum cannot be 0
_NONZERO = re.compile(rb"[^\x00]")


class WALError(RuntimeError):
    """A WAL problem the operator must see: corruption (file and offset), I/O failure."""


class WALCorruption(WALError):
    def __init__(self, path: Path, offset: int, why: str) -> None:
        self.path, self.offset = path, offset
        super().__init__(
            f"WAL corruption in {path} at offset {offset}: {why}; refusing to start "
            '(set [wal] salvage = "truncate" to drop everything from there on)'
        )


@dataclasses.dataclass(frozen=True, slots=True)
class Record:
    lsn: int
    type: int
    payload: bytes
    offset: int


@dataclasses.dataclass(frozen=True, slots=True)
class PayloadRun:
    """Payloads of records with consecutive LSNs from ``first_lsn``, stored back to back in
    ``data``; payload ``i`` ends at ``ends[i]`` (and starts where the one before ends)."""

    first_lsn: int
    data: bytes
    ends: list[int]

    @classmethod
    def of(cls, first_lsn: int, payloads: list[bytes]) -> PayloadRun:
        return cls(first_lsn, b"".join(payloads), list(itertools.accumulate(map(len, payloads))))

    def __len__(self) -> int:
        return len(self.ends)

    def payloads(self) -> list[bytes]:
        starts = [0, *self.ends[:-1]]
        return [self.data[a:b] for a, b in zip(starts, self.ends, strict=True)]


@dataclasses.dataclass(frozen=True, slots=True)
class SegmentSpan:
    """Records with consecutive LSNs from ``first_lsn`` in the segment file ``path``: where
    each starts, and where the last one ends. Small enough to send between processes with a
    descriptor of the file, so the bytes themselves are read where they are needed."""

    path: Path
    first_lsn: int
    offsets: array.array[int]
    end: int

    def __len__(self) -> int:
        return len(self.offsets)

    def read(self, fd: int) -> bytes:
        """The file's bytes from the first record's start to the last one's end."""
        start = self.offsets[0]
        size = self.end - start
        data = os.pread(fd, size, start)
        while len(data) < size:  # a short read is legal; a short file is not
            more = os.pread(fd, size - len(data), start + len(data))
            if not more:
                raise WALError(
                    f"{self.path} ends at offset {start + len(data)}, but the WAL verified "
                    f"records up to {self.end}: it was cut behind the WAL's back"
                )
            data += more
        return data

    def read_file(self) -> bytes:
        fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            return self.read(fd)
        finally:
            os.close(fd)

    def payloads(self, data: bytes) -> PayloadRun:
        """The records' payloads from ``data`` (what :meth:`read` returned), back to back."""
        head = RECORD_HEADER.size
        base = self.offsets[0]
        starts = [offset - base + head for offset in self.offsets]
        ends = [offset - base for offset in self.offsets[1:]]
        ends.append(self.end - base)
        with memoryview(data) as view:
            blob = b"".join([view[a:b] for a, b in zip(starts, ends, strict=True)])
        sizes = [b - a for a, b in zip(starts, ends, strict=True)]
        return PayloadRun(self.first_lsn, blob, list(itertools.accumulate(sizes)))


def encode_record(lsn: int, payload: bytes, rtype: int = TYPE_ENTRY) -> bytes:
    if len(payload) > MAX_RECORD:
        raise WALError(f"WAL record of {len(payload)} bytes exceeds {MAX_RECORD}")
    head = _HEADER_CRC_PART.pack(len(payload), rtype, lsn, zlib.crc32(payload))
    return b"".join((head, _CRC.pack(zlib.crc32(head)), payload))


def segment_name(first_lsn: int) -> str:
    return f"wal-{first_lsn:020d}.log"


@dataclasses.dataclass(slots=True)
class ScanResult:
    records: list[Record]
    good_end: int  # offset just past the last good record
    problem: str | None  # why scanning stopped early
    valid_after: bool  # a valid record exists after the problem (corruption, not a torn tail)


def scan_segment(data: bytes, expected_lsn: int) -> ScanResult:
    """Decode a whole segment image whose first record should have ``expected_lsn``; stop at
    the first bad record and say why."""
    index = index_segment(data, expected_lsn)
    ends = [*index.offsets[1:], index.good_end] if index.offsets else []
    records = [
        Record(
            expected_lsn + i,
            data[offset + 4],
            bytes(data[offset + RECORD_HEADER.size : end]),
            offset,
        )
        for i, (offset, end) in enumerate(zip(index.offsets, ends, strict=True))
    ]
    return ScanResult(records, index.good_end, index.problem, index.valid_after)


@dataclasses.dataclass(slots=True)
class SegmentIndex:
    """Where the intact records of a segment image start (their LSNs are consecutive from
    the segment's first), and where and why the scan stopped."""

    offsets: array.array[int]
    good_end: int  # offset just past the last good record
    problem: str | None  # why scanning stopped early
    valid_after: bool  # a valid record exists after the problem (corruption, not a torn tail)


def index_segment(data: bytes, expected_lsn: int) -> SegmentIndex:
    """Verify every record of a segment image (both checksums, consecutive LSNs from
    ``expected_lsn``, length within the image) and note where each starts; stop at the
    first bad record and say why.

    The per-record work is one header unpack and two ``crc32`` calls on memoryview slices
    (no copies): the header checksum covers the header's first 17 bytes exactly as they
    are stored, so they are checked in place rather than packed again."""
    offsets: array.array[int] = array.array("Q")
    if len(data) < SEGMENT_HEADER.size:
        return SegmentIndex(offsets, 0, "segment header missing", False)
    magic, version, _ = SEGMENT_HEADER.unpack_from(data, 0)
    if magic != SEGMENT_MAGIC or version != SEGMENT_VERSION:
        # Segments are created atomically, so a bad header followed by intact records is
        # damage, never a torn tail: say so, or the newest segment's records would be cut.
        after = _valid_record_after(data, 0, expected_lsn)
        return SegmentIndex(offsets, 0, "bad segment header", after)
    view = memoryview(data)
    unpack = RECORD_HEADER.unpack_from
    crc = zlib.crc32
    note = offsets.append
    head_size, crc_part = RECORD_HEADER.size, _HEADER_CRC_PART.size
    offset = SEGMENT_HEADER.size
    end = len(data)
    lsn_wanted = expected_lsn
    while offset < end:
        if end - offset >= head_size:
            length, _rtype, lsn, pcrc, hcrc = unpack(data, offset)
            start = offset + head_size
            stop = start + length
            if (
                lsn == lsn_wanted
                and stop <= end
                and crc(view[offset : offset + crc_part]) == hcrc
                and crc(view[start:stop]) == pcrc
            ):
                note(offset)
                offset = stop
                lsn_wanted += 1
                continue
        why = _bad_record(data, offset, lsn_wanted) or "bad record"
        after = _valid_record_after(data, offset + 1, lsn_wanted)
        return SegmentIndex(offsets, offset, why, after)
    return SegmentIndex(offsets, offset, None, False)


def _bad_record(data: bytes, offset: int, expected_lsn: int) -> str | None:
    if len(data) - offset < RECORD_HEADER.size:
        return "incomplete record header"
    length, rtype, lsn, pcrc, hcrc = RECORD_HEADER.unpack_from(data, offset)
    if zlib.crc32(_HEADER_CRC_PART.pack(length, rtype, lsn, pcrc)) != hcrc:
        return "record header checksum mismatch"
    if lsn != expected_lsn:
        return f"LSN {lsn} where {expected_lsn} was expected"
    start = offset + RECORD_HEADER.size
    if start + length > len(data):
        return f"record of {length} bytes runs past the end of the file"
    if zlib.crc32(data[start : start + length]) != pcrc:
        return "record payload checksum mismatch"
    return None


def _valid_record_after(data: bytes, offset: int, expected_lsn: int) -> bool:
    return _next_intact(data, offset, expected_lsn) is not None


def _last_lsn_after(data: bytes, offset: int, expected_lsn: int) -> int:
    """The highest LSN of any intact record at or after ``offset`` (``expected_lsn - 1`` if
    none): what a salvage cut had handed out."""
    last = expected_lsn - 1
    pos = _next_intact(data, offset, expected_lsn)
    while pos is not None:
        length, _rtype, lsn, _pcrc, _hcrc = RECORD_HEADER.unpack_from(data, pos)
        last = max(last, lsn)
        nxt = pos + RECORD_HEADER.size + length
        pos = nxt if _intact(data, nxt) else _next_intact(data, nxt, lsn + 1)
    return last


def _next_intact(data: bytes, offset: int, expected_lsn: int) -> int | None:
    """Where the first intact record (both checksums) at or after ``offset`` starts. Candidates
    are found by the high bytes their LSN must share with ``expected_lsn`` — a C-speed
    ``find``, not a byte-by-byte scan — so this stays fast on large segments."""
    prefixes = {struct.pack(">Q", expected_lsn + step)[:6] for step in (0, 65536)}
    best: int | None = None
    for prefix in prefixes:
        pos = data.find(prefix, offset + 5)
        while pos != -1:
            start = pos - 5  # the LSN sits 5 bytes into a record header
            if start >= offset and _intact(data, start):
                best = start if best is None else min(best, start)
                break
            nxt = pos + 1
            if data[start : start + RECORD_HEADER.size] == _ZERO_HEADER:
                # Inside a run of zeros (an all-zero prefix matches at every byte of it): the
                # next candidate header must reach the run's first non-zero byte.
                found = _NONZERO.search(data, pos)
                nxt = max(nxt, (found.start() if found else len(data)) - 15)
            pos = data.find(prefix, nxt)
    return best


def _looks_torn(data: bytes, offset: int) -> bool:
    """Can the bad last record at ``offset`` be a write a crash cut short? A crash leaves a
    record short of its length, or unwritten (zeroed) sectors; a full-length record with
    other damage is corruption of a record that may have been acknowledged, so cutting it
    silently could lose a write."""
    rest = data[offset:]
    if len(rest) < RECORD_HEADER.size or bytes(RECORD_HEADER.size) == rest[: RECORD_HEADER.size]:
        return True
    length, rtype, lsn, pcrc, hcrc = RECORD_HEADER.unpack_from(rest, 0)
    header_ok = zlib.crc32(_HEADER_CRC_PART.pack(length, rtype, lsn, pcrc)) == hcrc
    if header_ok and RECORD_HEADER.size + length > len(rest):
        return True  # the payload runs past the end of the file
    return bytes(512) in rest


def _intact(data: bytes, start: int) -> bool:
    if len(data) - start < RECORD_HEADER.size:
        return False
    length, rtype, lsn, pcrc, hcrc = RECORD_HEADER.unpack_from(data, start)
    if zlib.crc32(_HEADER_CRC_PART.pack(length, rtype, lsn, pcrc)) != hcrc:
        return False
    body = start + RECORD_HEADER.size
    return bool(body + length <= len(data) and zlib.crc32(data[body : body + length]) == pcrc)


def _index(path: Path, data: bytes, first_lsn: int, sealed: bool) -> SegmentIndex:
    """:func:`index_segment`, or for a sealed segment its index file when that matches the
    image exactly (:mod:`.sidecar`); a sealed segment verified intact gets one."""
    if sealed:
        offsets = sidecar.read(path, first_lsn, data)
        if offsets is not None:
            return SegmentIndex(offsets, len(data), None, False)
    found = index_segment(data, first_lsn)
    if sealed and found.problem is None:
        sidecar.write(path, first_lsn, zlib.crc32(data), len(data), found.offsets)
    return found


class _Helper:
    """:func:`index_segment` for some segments (index ``first`` on) in a forked process.
    The child only reads the files, verifies and writes its results to a pipe; any failure
    of it (or of reading its answer) leaves those segments to the caller."""

    def __init__(self, first: int, jobs: list[tuple[Path, int, bool]]) -> None:
        self.first = first
        self.pid = 0
        self.fd = -1
        self._results: list[SegmentIndex] | None = None
        self._taken = False
        self._status = -1  # the helper's exit status once reaped
        try:
            r, w = os.pipe()
        except OSError:
            return
        try:
            pid = os.fork()
        except OSError:
            os.close(r)
            os.close(w)
            return
        if pid == 0:  # the helper: nothing of the parent's is touched, nothing else runs
            code = 1
            try:
                os.close(r)
                out = []
                for path, lsn, sealed in jobs:
                    found = _index(path, path.read_bytes(), lsn, sealed)
                    out.append(
                        (found.offsets.tobytes(), found.good_end, found.problem, found.valid_after)
                    )
                write_all(w, pickle.dumps(out, pickle.HIGHEST_PROTOCOL))
                code = 0
            finally:
                os._exit(code)
        os.close(w)
        self.pid, self.fd = pid, r

    def result(self, index: int) -> SegmentIndex | None:
        """What the helper found for segment ``index`` (None: verify it yourself)."""
        if index < self.first:
            return None
        if not self._taken:
            self._taken = True
            self._results = self._collect()
        if self._results is None:
            return None
        return self._results[index - self.first]

    def _collect(self) -> list[SegmentIndex] | None:
        if self.pid == 0:
            return None
        chunks = []
        try:
            while chunk := os.read(self.fd, 1 << 20):
                chunks.append(chunk)
        except OSError:
            return None
        finally:
            self.close()
        if self._status != 0:
            return None
        out = []
        for raw, good_end, problem, valid_after in pickle.loads(b"".join(chunks)):
            offsets: array.array[int] = array.array("Q")
            offsets.frombytes(raw)
            out.append(SegmentIndex(offsets, good_end, problem, valid_after))
        return out

    def close(self) -> None:
        """Stop the helper if it still runs, and reap it."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self.pid:
            pid, self.pid = self.pid, 0
            _pid, status = os.waitpid(pid, os.WNOHANG)
            if _pid == 0:  # still verifying: its answer is no longer wanted
                os.kill(pid, signal.SIGKILL)
                _pid, status = os.waitpid(pid, 0)
            self._status = os.waitstatus_to_exitcode(status)


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
        floor = self._read_floor()
        self.gaps = self._read_gaps()
        helper = self._start_helper(paths)
        try:
            self._recover(paths, floor, helper)
        finally:
            if helper is not None:
                helper.close()

    def _recover(self, paths: list[Path], floor: int, helper: _Helper | None) -> None:
        seen = 0  # the highest LSN any segment shows, cut ones included
        expected: int | None = None
        for index, path in enumerate(paths):
            last = index == len(paths) - 1
            first = _first_lsn_from_name(path)
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
                result = _index(path, data, first, sealed=not last)
            if result.problem is not None:
                data = data or path.read_bytes()
                if self.salvage == "truncate":
                    cut_from = first + len(result.offsets)
                    seen = max(seen, _last_lsn_after(data, result.good_end + 1, cut_from))
                self._handle_bad(path, data, result, last)
                if not last and self.salvage == "truncate":
                    for later in paths[index + 1 :]:
                        later_scan = scan_segment(later.read_bytes(), _first_lsn_from_name(later))
                        seen = max(seen, _first_lsn_from_name(later) - 1)
                        if later_scan.records:
                            seen = max(seen, later_scan.records[-1].lsn)
                        self._keep_broken(later, move=True)
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

    def _start_helper(self, paths: list[Path]) -> _Helper | None:
        """For a large log on more than one CPU: verify the newer segments (about half the
        bytes) in a forked helper while :meth:`_recover` walks the older ones here."""
        if len(paths) < 2 or len(os.sched_getaffinity(0)) < 2:
            return None
        try:
            sizes = [path.stat().st_size for path in paths]
            firsts = [_first_lsn_from_name(path) for path in paths]
        except (OSError, WALError):
            return None  # the walk meets it in order and says so
        if sum(sizes) < self.parallel_verify_bytes:
            return None
        split, newer = len(paths), 0
        while split > 1 and newer + sizes[split - 1] <= sum(sizes) // 2:
            split -= 1
            newer += sizes[split]
        if split == len(paths):
            return None
        sealed = [i < len(paths) - 1 for i in range(split, len(paths))]
        return _Helper(split, list(zip(paths[split:], firsts[split:], sealed, strict=True)))

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

    def _read_gaps(self) -> list[tuple[int, int]]:
        try:
            text = (self.dir / GAPS_FILE).read_text()
        except FileNotFoundError:
            return []
        try:
            return [(int(a), int(b)) for a, b in (line.split() for line in text.splitlines())]
        except ValueError as exc:
            raise WALCorruption(self.dir / GAPS_FILE, 0, f"unreadable: {exc}") from exc

    def _skipped(self, expected: int, first: int) -> bool:
        """True if LSNs ``expected .. first - 1`` lie in one recorded gap."""
        return any(a <= expected and first - 1 <= b for a, b in self.gaps)

    def _handle_bad(
        self, path: Path, data: bytes, result: ScanResult | SegmentIndex, last: bool
    ) -> None:
        offset = result.good_end
        torn = last and not result.valid_after and _looks_torn(data, offset)
        if not torn and self.salvage != "truncate":
            raise WALCorruption(path, offset, result.problem or "bad record")
        kept = self._keep_broken(path)
        sidecar.remove(path)
        with open(path, "r+b") as f:
            f.truncate(max(offset, SEGMENT_HEADER.size))
            if offset < SEGMENT_HEADER.size:
                f.seek(0)
                f.write(SEGMENT_HEADER.pack(SEGMENT_MAGIC, SEGMENT_VERSION, 0))
            f.flush()
            os.fsync(f.fileno())
        what = "torn tail" if torn else "corruption (salvage = truncate)"
        self.notes.append(
            f"{what} in {path.name} at offset {offset} ({result.problem}): cut "
            f"{len(data) - offset} bytes, {kept}"
        )

    def _keep_broken(self, path: Path, *, move: bool = False) -> str:
        """Keep the original of a segment that recovery cuts (a copy) or drops (renamed:
        no space needed). A copy is skipped when it would leave less than
        ``BROKEN_FREE_MARGIN`` free: recovering from a full disk must not fill it again."""
        target = path.with_name(path.name + ".broken")
        n = 1
        while target.exists():  # never overwrite the evidence of an earlier repair
            target = path.with_name(f"{path.name}.broken.{n}")
            n += 1
        if move:
            os.rename(path, target)
            fsync_dir(self.dir)
            return f"original kept as {target.name}"
        size = path.stat().st_size
        free = shutil.disk_usage(self.dir).free
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
        fsync_dir(self.dir)
        return f"original kept as {target.name}"

    def _read_floor(self) -> int:
        try:
            return int((self.dir / FLOOR_FILE).read_text().strip())
        except (FileNotFoundError, ValueError):
            return 0

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
                self.dir / FLOOR_FILE, f"{max(seg.last_lsn, self._read_floor())}\n".encode()
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


def _first_lsn_from_name(path: Path) -> int:
    try:
        return int(path.stem.split("-", 1)[1])
    except (IndexError, ValueError) as exc:
        raise WALError(f"unexpected file in the WAL directory: {path}") from exc


def verify_dir(directory: Path) -> dict[str, Any]:
    """Offline check of every segment (``osup-mp wal verify``, ``tools/wal_dump.py``)."""
    problems = []
    files = []
    paths = sorted(directory.glob("wal-*.log"))
    for index, path in enumerate(paths):
        result = scan_segment(path.read_bytes(), _first_lsn_from_name(path))
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
