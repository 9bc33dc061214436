"""The WAL's on-disk format: segments of length- and CRC-checked records, and the scans
that verify them.

File layout (all integers big-endian)::

    segment  = file header (16 B: b"OSUPWAL1", version u32, reserved u32) + record*
    record   = header (21 B) + payload
    header   = length u32 | type u8 | lsn u64 | payload crc32 u32 | header crc32 u32

Decision: a record's header has its own checksum apart from its payload's, so a scan can
tell a torn tail (nothing valid after a bad record) from corruption (a valid record after
it) without trusting a length it has not verified.
"""

from __future__ import annotations

import array
import dataclasses
import itertools
import os
import re
import struct
import zlib
from pathlib import Path

SEGMENT_MAGIC = b"OSUPWAL1"
SEGMENT_VERSION = 1
SEGMENT_HEADER = struct.Struct(">8sII")
RECORD_HEADER = struct.Struct(">IBQII")  # length, type, lsn, payload crc, header crc
_HEADER_CRC_PART = struct.Struct(">IBQI")
_CRC = struct.Struct(">I")
MAX_RECORD = 64 * 1024 * 1024

TYPE_ENTRY = 1

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


def last_lsn_after(data: bytes, offset: int, expected_lsn: int) -> int:
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


def looks_torn(data: bytes, offset: int) -> bool:
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


def first_lsn_from_name(path: Path) -> int:
    try:
        return int(path.stem.split("-", 1)[1])
    except (IndexError, ValueError) as exc:
        raise WALError(f"unexpected file in the WAL directory: {path}") from exc
