"""Tests for osup_mp.storage.wal.store (WALStore on real files in tmp_path).

Covered: append/close/reopen round trips and LSN continuity; rotation by entry count and by
size; truncate_through and the ``lsn.floor`` file; torn-tail recovery at every byte offset of
the last segment (which holds the last 3 records) and with a zeroed 512-byte sector; single
bit flips in earlier records (refused with file and exact offset, or salvaged with
``salvage="truncate"``); garbage segments, short headers, unexpected names and LSN gaps;
appends after a repair; verify_dir; fdatasync errors; and the speed of the corruption scan.
"""

from __future__ import annotations

import errno
import os
import random
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from osup_mp.storage.wal import records, recovery, verify
from osup_mp.storage.wal import store as wal
from osup_mp.storage.wal.records import (
    RECORD_HEADER,
    SEGMENT_HEADER,
    SEGMENT_MAGIC,
    SEGMENT_VERSION,
    WALCorruption,
    WALError,
    encode_record,
    scan_segment,
    segment_name,
)
from osup_mp.storage.wal.recovery import FLOOR_FILE, verify_dir
from osup_mp.storage.wal.store import WALStore

HDR = RECORD_HEADER.size  # 21
SEG_HDR = SEGMENT_HEADER.size  # 16

OpenWAL = Callable[..., WALStore]


def payload(lsn: int, size: int) -> bytes:
    """Deterministic, incompressible bytes for the record with this LSN."""
    return random.Random(lsn).randbytes(size)


def contents(store: WALStore, after: int = 0) -> list[tuple[int, bytes]]:
    return [(r.lsn, r.payload) for r in store.read_after(after)]


def segment_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("wal-*.log"))


def names(directory: Path) -> list[str]:
    return [p.name for p in segment_files(directory)]


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file of a WAL directory, to prove a refused open changed nothing."""
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def record_offset(path: Path, lsn: int) -> int:
    data = path.read_bytes()
    result = scan_segment(data, int(path.stem.split("-")[1]))
    assert result.problem is None
    return next(r.offset for r in result.records if r.lsn == lsn)


def flip_bit(path: Path, offset: int, mask: int = 0x10) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= mask
    path.write_bytes(bytes(data))


# The serial run is a unit test; the parallel one forks a helper process, so it is not.
@pytest.fixture(autouse=True, params=[pytest.param("serial", marks=pytest.mark.unit), "parallel"])
def verify_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test twice: open() verifying every segment itself, and with the newer half
    verified by its forked helper (from any size on); the outcome must be the same."""
    if request.param == "parallel":
        monkeypatch.setattr(wal, "PARALLEL_VERIFY_BYTES", 0)
    return str(request.param)


@pytest.fixture
def open_wal(tmp_path: Path) -> Iterator[OpenWAL]:
    """Open a WALStore (default directory tmp_path/"wal"); every store is closed afterwards."""
    stores: list[WALStore] = []

    def make(directory: Path | None = None, **options: Any) -> WALStore:
        store = WALStore(directory or tmp_path / "wal", **options)
        stores.append(store)
        store.open()
        return store

    yield make
    for store in stores:
        store.close()


def build(directory: Path, sizes: list[int], **options: Any) -> list[tuple[int, bytes]]:
    """A closed WAL in ``directory`` holding one record per size, appended one at a time."""
    store = WALStore(directory, **options)
    store.open()
    expected = []
    for lsn, size in enumerate(sizes, start=1):
        data = payload(lsn, size)
        assert store.append([data]) == [lsn]
        expected.append((lsn, data))
    store.sync()
    store.close()
    return expected


# ------------------------------------------------------------------- basics


def test_reopen_returns_every_record_in_order_and_continues_lsns(open_wal: OpenWAL) -> None:
    payloads = [payload(lsn, (lsn % 7) * 5) for lsn in range(1, 31)]  # some are empty
    store = open_wal()
    lsns: list[int] = []
    for batch in (payloads[:1], payloads[1:10], [], payloads[10:]):
        lsns += store.append(batch)
    assert lsns == list(range(1, 31))
    assert store.last_lsn == 30
    store.sync()
    store.close()

    again = open_wal()
    assert again.notes == []
    assert contents(again) == list(zip(range(1, 31), payloads, strict=True))
    assert again.last_lsn == 30
    assert again.append([b"next"]) == [31]  # continues, no restart at 1
    assert [r.lsn for r in again.read_after(25)] == [26, 27, 28, 29, 30, 31]
    assert [r.lsn for r in again.read_after(5, limit=3)] == [6, 7, 8]
    assert list(again.read_after(31)) == []
    again.close()

    third = open_wal()
    assert contents(third)[-1] == (31, b"next")
    assert third.append([b"more", b"again"]) == [32, 33]
    stats = third.stats()
    assert stats["entries"] == 33 and stats["last_lsn"] == 33 and stats["first_lsn"] == 1


def test_rotation_by_entry_count(open_wal: OpenWAL, tmp_path: Path) -> None:
    directory = tmp_path / "wal"
    store = open_wal(segment_entries=4)
    expected = []
    lsn = 1
    for batch_size in (3, 6, 1, 2):  # batches straddle segment boundaries
        batch = [payload(lsn + i, 10) for i in range(batch_size)]
        assert store.append(batch) == list(range(lsn, lsn + batch_size))
        expected += list(zip(range(lsn, lsn + batch_size), batch, strict=True))
        lsn += batch_size
    assert names(directory) == [segment_name(1), segment_name(5), segment_name(9)]
    for path, first in zip(segment_files(directory), (1, 5, 9), strict=True):
        records = scan_segment(path.read_bytes(), first).records
        assert [r.lsn for r in records] == list(range(first, first + 4))
    assert contents(store) == expected
    store.close()

    again = open_wal(segment_entries=4)  # the newest segment is full: a fresh one starts
    assert names(directory)[-1] == segment_name(13)
    assert again.append([b"x"]) == [13]
    assert contents(again) == [*expected, (13, b"x")]


def test_rotation_by_size(open_wal: OpenWAL, tmp_path: Path) -> None:
    directory = tmp_path / "wal"
    store = open_wal(segment_bytes=4096)
    expected = []
    for lsn in range(1, 11):  # 16 + 4 * 1021 > 4096: three 1000-byte records per segment
        data = payload(lsn, 1000)
        assert store.append([data]) == [lsn]
        expected.append((lsn, data))
    assert names(directory) == [segment_name(n) for n in (1, 4, 7, 10)]
    sizes = [p.stat().st_size for p in segment_files(directory)]
    assert sizes == [SEG_HDR + 3 * (HDR + 1000)] * 3 + [SEG_HDR + HDR + 1000]
    assert contents(store) == expected
    store.close()
    again = open_wal(segment_bytes=4096)
    assert contents(again) == expected
    assert again.append([b"y"]) == [11]


def test_a_batch_is_split_at_the_size_limit(open_wal: OpenWAL, tmp_path: Path) -> None:
    directory = tmp_path / "wal"
    store = open_wal(segment_bytes=4096)
    batch = [payload(lsn, 1000) for lsn in range(1, 8)]
    assert store.append(batch) == list(range(1, 8))  # one append, three segments
    assert names(directory) == [segment_name(n) for n in (1, 4, 7)]
    assert all(p.stat().st_size <= 4096 for p in segment_files(directory))
    big = payload(8, 5000)  # larger than a segment: it gets one of its own
    assert store.append([big, payload(9, 10)]) == [8, 9]
    assert names(directory)[-2:] == [segment_name(8), segment_name(9)]
    assert contents(store) == [*zip(range(1, 8), batch, strict=True), (8, big), (9, payload(9, 10))]


def test_truncate_through_keeps_the_active_segment_and_lsns_grow(
    open_wal: OpenWAL, tmp_path: Path
) -> None:
    directory = tmp_path / "wal"
    store = open_wal(segment_entries=3)
    store.append([payload(lsn, 8) for lsn in range(1, 11)])
    assert names(directory) == [segment_name(n) for n in (1, 4, 7, 10)]

    assert store.truncate_through(5) == [directory / segment_name(1)]  # 4..6 not covered
    assert (directory / FLOOR_FILE).read_text().strip() == "3"
    assert store.truncate_through(10_000) == [
        directory / segment_name(4),
        directory / segment_name(7),
    ]
    assert names(directory) == [segment_name(10)]  # never the active segment
    assert (directory / FLOOR_FILE).read_text().strip() == "9"
    assert contents(store) == [(10, payload(10, 8))]
    assert store.append([b"a"]) == [11]
    store.close()

    again = open_wal(segment_entries=3)
    assert again.notes == []
    assert contents(again) == [(10, payload(10, 8)), (11, b"a")]
    assert again.append([b"b"]) == [12]
    assert again.stats()["first_lsn"] == 10


def test_lsns_grow_from_the_floor_when_every_segment_is_deleted(
    open_wal: OpenWAL, tmp_path: Path
) -> None:
    directory = tmp_path / "wal"
    store = open_wal(segment_entries=3)
    store.append([payload(lsn, 8) for lsn in range(1, 7)])
    store.close()
    store = open_wal(segment_entries=3)  # full newest segment: an empty wal-7 is active
    assert names(directory) == [segment_name(n) for n in (1, 4, 7)]
    assert len(store.truncate_through(6)) == 2
    store.close()
    for path in segment_files(directory):
        path.unlink()

    again = open_wal(segment_entries=3)
    assert again.last_lsn == 6
    assert again.append([b"after"]) == [7]
    assert names(directory) == [segment_name(7)]
    assert contents(again) == [(7, b"after")]


def test_open_removes_stale_temp_files(open_wal: OpenWAL, tmp_path: Path) -> None:
    directory = tmp_path / "wal"
    expected = build(directory, [5, 5])
    stale = directory / f".{segment_name(3)}.tmp"
    stale.write_bytes(b"half a segment")
    store = open_wal()
    assert not stale.exists()
    assert contents(store) == expected


def test_oversized_record_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(records, "MAX_RECORD", 8)
    encode_record(1, b"12345678")
    with pytest.raises(WALError, match="exceeds"):
        encode_record(1, b"123456789")


# --------------------------------------------------------- torn tail: every offset

# Segment 1 holds LSNs 1-4; the last segment (wal-5) holds exactly the last 3 records, so
# cutting at every offset of it covers every offset inside the last 3 records plus the
# segment header itself.
TORN_ENTRIES = 4
TORN_SIZES = [7, 30, 1, 12, 9, 2, 23]
_LAST_SIZES = TORN_SIZES[TORN_ENTRIES:]
TORN_BOUNDARIES = [SEG_HDR]  # record ends in the last segment
for _size in _LAST_SIZES:
    TORN_BOUNDARIES.append(TORN_BOUNDARIES[-1] + HDR + _size)
TORN_CUTS = list(range(TORN_BOUNDARIES[-1] + 1))


@pytest.fixture(scope="module")
def torn_reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Any]]:
    directory = tmp_path_factory.mktemp("torn") / "wal"
    expected = build(directory, TORN_SIZES, segment_entries=TORN_ENTRIES)
    assert names(directory) == [segment_name(1), segment_name(5)]
    assert (directory / segment_name(5)).stat().st_size == TORN_BOUNDARIES[-1]
    return directory, expected


@pytest.mark.parametrize("cut", TORN_CUTS)
def test_torn_tail_at_every_offset_of_the_last_segment(
    cut: int, torn_reference: tuple[Path, list[Any]], open_wal: OpenWAL, tmp_path: Path
) -> None:
    reference, all_records = torn_reference
    directory = tmp_path / "wal"
    shutil.copytree(reference, directory)
    last = directory / segment_name(5)
    original = last.read_bytes()
    os.truncate(last, cut)

    complete = sum(1 for end in TORN_BOUNDARIES[1:] if end <= cut)
    boundary = TORN_BOUNDARIES[complete]
    expected = all_records[: TORN_ENTRIES + complete]
    store = open_wal(directory, segment_entries=TORN_ENTRIES)

    assert contents(store) == expected
    assert store.last_lsn == TORN_ENTRIES + complete
    broken = directory / f"{last.name}.broken"
    if cut == boundary:  # nothing torn: a clean end of file
        assert store.notes == []
        assert not broken.exists()
    else:
        assert len(store.notes) == 1
        assert "torn tail" in store.notes[0] and last.name in store.notes[0]
        assert broken.read_bytes() == original[:cut]  # the evidence, byte for byte
        assert last.stat().st_size == boundary
        assert last.read_bytes()[:SEG_HDR] == original[:SEG_HDR]

    # The next record gets the next LSN and is written exactly at the cut point.
    assert store.append([b"after"]) == [TORN_ENTRIES + complete + 1]
    assert last.stat().st_size == boundary + HDR + len(b"after")
    assert contents(store) == [*expected, (TORN_ENTRIES + complete + 1, b"after")]
    assert verify_dir(directory)["ok"]
    store.close()

    again = open_wal(directory, segment_entries=TORN_ENTRIES)
    assert again.notes == []
    assert contents(again) == [*expected, (TORN_ENTRIES + complete + 1, b"after")]


def test_repeated_repairs_keep_every_broken_copy(open_wal: OpenWAL, tmp_path: Path) -> None:
    directory = tmp_path / "wal"
    build(directory, [10, 10])
    last = directory / segment_name(1)
    for round_ in range(2):
        with open(last, "ab") as f:
            f.write(b"\x01torn" * (round_ + 1))
        store = open_wal()
        assert "torn tail" in store.notes[0]
        store.close()
    assert (directory / f"{last.name}.broken").exists()
    assert (directory / f"{last.name}.broken.1").read_bytes().endswith(b"\x01torn" * 2)
    assert verify_dir(directory)["ok"]


# ----------------------------------------------------------- a zeroed 512-byte sector

SECTOR_SIZES = [2000] * 6  # ~2 KB records: a 512-byte sector fits inside one
_SECTOR_LAST = SEG_HDR + 5 * (HDR + 2000)  # offset of the last record
_SECTOR_END = _SECTOR_LAST + HDR + 2000
ALIGNED_SECTORS = [
    s for s in range(0, _SECTOR_END, 512) if s >= _SECTOR_LAST and s + 512 <= _SECTOR_END
]


@pytest.mark.parametrize("start", [*ALIGNED_SECTORS, _SECTOR_LAST])  # + one over its header
def test_zeroed_sector_in_the_last_record_is_a_torn_tail(
    start: int, open_wal: OpenWAL, tmp_path: Path
) -> None:
    assert len(ALIGNED_SECTORS) >= 3
    directory = tmp_path / "wal"
    expected = build(directory, SECTOR_SIZES)
    path = directory / segment_name(1)
    data = bytearray(path.read_bytes())
    data[start : start + 512] = bytes(512)
    path.write_bytes(bytes(data))

    store = open_wal()
    assert contents(store) == expected[:-1]
    assert "torn tail" in store.notes[0]
    assert f"offset {_SECTOR_LAST}" in store.notes[0]
    assert (directory / f"{path.name}.broken").read_bytes() == bytes(data)
    assert store.append([b"z"]) == [6]
    assert path.stat().st_size == _SECTOR_LAST + HDR + 1


def test_zeroed_sector_in_an_earlier_record_is_corruption(tmp_path: Path) -> None:
    directory = tmp_path / "wal"
    build(directory, SECTOR_SIZES)
    path = directory / segment_name(1)
    bad = SEG_HDR + 4 * (HDR + 2000)  # the second-to-last record
    data = bytearray(path.read_bytes())
    data[bad + 512 : bad + 1024] = bytes(512)
    path.write_bytes(bytes(data))
    with pytest.raises(WALCorruption) as info:
        WALStore(directory).open()
    assert (info.value.path, info.value.offset) == (path, bad)


# ----------------------------------------------------------------------- bit flips

FLIP_ENTRIES = 5
FLIP_SIZES = [30] * 12  # segments wal-1 (1-5), wal-6 (6-10), wal-11 (11-12)
FIELDS = {  # byte offset inside the record
    "length": 2,
    "type": 4,
    "lsn": 12,
    "payload crc": 15,
    "header crc": 19,
    "payload": HDR + 7,
}
TARGETS = {  # (segment's first LSN, LSN of the damaged record)
    "last segment": (11, 11),
    "earlier segment": (1, 3),
    "end of an earlier segment": (6, 10),
}


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize("target", TARGETS)
def test_bit_flip_is_refused_with_file_and_offset(field: str, target: str, tmp_path: Path) -> None:
    directory = tmp_path / "wal"
    build(directory, FLIP_SIZES, segment_entries=FLIP_ENTRIES)
    first, lsn = TARGETS[target]
    path = directory / segment_name(first)
    offset = record_offset(path, lsn)
    flip_bit(path, offset + FIELDS[field])
    before = snapshot(directory)

    why = "payload checksum mismatch" if field == "payload" else "header checksum mismatch"
    with pytest.raises(WALCorruption, match=why) as info:
        WALStore(directory, segment_entries=FLIP_ENTRIES).open()
    assert info.value.path == path
    assert info.value.offset == offset
    assert f"{path} at offset {offset}:" in str(info.value)
    assert snapshot(directory) == before  # refusing touches nothing

    report = verify_dir(directory)
    assert not report["ok"]
    assert report["problems"] == [
        {"file": str(path), "offset": offset, "kind": "corruption", "problem": f"record {why}"}
    ]
    assert snapshot(directory) == before


@pytest.mark.parametrize("field", ["length", "payload", "header crc"])
@pytest.mark.parametrize("target", TARGETS)
def test_bit_flip_with_salvage_truncate(
    field: str, target: str, open_wal: OpenWAL, tmp_path: Path
) -> None:
    directory = tmp_path / "wal"
    expected = build(directory, FLIP_SIZES, segment_entries=FLIP_ENTRIES)
    first, lsn = TARGETS[target]
    path = directory / segment_name(first)
    offset = record_offset(path, lsn)
    flip_bit(path, offset + FIELDS[field])
    before = snapshot(directory)
    later = [p.name for p in segment_files(directory) if int(p.stem.split("-")[1]) > first]

    store = open_wal(directory, segment_entries=FLIP_ENTRIES, salvage="truncate")
    assert contents(store) == expected[: lsn - 1]
    assert path.stat().st_size == offset
    # later segments removed (a fresh one starts past the cut LSNs) ...
    assert names(directory)[-2:] == [path.name, segment_name(len(FLIP_SIZES) + 1)]
    for name in [path.name, *later]:  # ... and every original kept as .broken
        assert (directory / f"{name}.broken").read_bytes() == before[name]
    assert any(f"offset {offset}" in note and "salvage" in note for note in store.notes)
    # LSNs lsn..12 were handed out before the cut: they are never handed out again.
    highest = len(FLIP_SIZES)
    assert any(f"salvage cut LSNs {lsn}..{highest}" in note for note in store.notes)
    assert store.append([b"fresh"]) == [highest + 1]
    store.close()

    again = open_wal(directory, segment_entries=FLIP_ENTRIES)  # refuse mode: clean now
    assert again.notes == []
    assert contents(again) == [*expected[: lsn - 1], (highest + 1, b"fresh")]
    assert again.append([b"more"]) == [highest + 2]
    assert verify_dir(directory)["ok"]


def test_skip_through_never_reuses_lsns_and_survives_reopen(
    open_wal: OpenWAL, tmp_path: Path
) -> None:
    directory = tmp_path / "wal"
    expected = build(directory, [10] * 7, segment_entries=5)
    store = open_wal(directory, segment_entries=5)
    store.skip_through(3)  # already handed out: nothing to skip
    assert store.append([b"a"]) == [8]
    store.skip_through(100)  # a checkpoint covers through 100
    assert store.append([b"b", b"c"]) == [101, 102]
    store.close()
    again = open_wal(directory, segment_entries=5)
    assert contents(again) == [*expected, (8, b"a"), (101, b"b"), (102, b"c")]
    assert again.append([b"d"]) == [103]


@pytest.mark.parametrize("reopen", [False, True], ids=["written here", "verified at open"])
def test_spans_and_payload_runs_hold_what_read_after_yields(
    reopen: bool, open_wal: OpenWAL, tmp_path: Path
) -> None:
    """The index the reads use — from the open's scan, or kept while appending — gives the
    same records as scanning; runs are per segment, with consecutive LSNs, and a skipped
    range of LSNs starts a new one."""
    directory = tmp_path / "wal"
    store = open_wal(directory, segment_entries=5)
    sizes = [(lsn * 37) % 90 for lsn in range(1, 13)]  # some payloads are empty
    store.append([payload(lsn, size) for lsn, size in enumerate(sizes, start=1)])
    store.skip_through(20)
    store.append([payload(lsn, 50) for lsn in range(21, 25)])
    if reopen:
        store.close()
        store = open_wal(directory, segment_entries=5)
    every = [(lsn, payload(lsn, size)) for lsn, size in enumerate(sizes, start=1)]
    every += [(lsn, payload(lsn, 50)) for lsn in range(21, 25)]
    assert [(r.lsn, r.payload) for r in store.read_after(0)] == every
    for after, limit in [(0, None), (3, 4), (4, 100), (9, 1), (12, None), (22, 5), (24, 3)]:
        expected = [(lsn, data) for lsn, data in every if lsn > after][:limit]
        assert [(r.lsn, r.payload) for r in store.read_after(after, limit)] == expected
        runs = store.read_payloads_after(after, limit)
        got = [(run.first_lsn + i, p) for run in runs for i, p in enumerate(run.payloads())]
        assert got == expected
        assert all(len(run) and run.ends[-1] == len(run.data) for run in runs)
        spans = store.spans_after(after, limit)
        assert [(s.first_lsn, len(s)) for s in spans] == [(r.first_lsn, len(r)) for r in runs]
    assert [s.first_lsn for s in store.spans_after(0)] == [1, 6, 11, 21]
    assert [s.first_lsn for s in store.spans_after(0, max_spans=2)] == [1, 6]
    assert store.read_payloads_after(0, 0) == [] and store.read_payloads_after(24) == []


def test_a_segment_cut_behind_the_stores_back_is_an_error_on_read(
    open_wal: OpenWAL, tmp_path: Path
) -> None:
    directory = tmp_path / "wal"
    build(directory, [40] * 4)
    store = open_wal(directory)
    path = directory / segment_name(1)
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size - 10)
    with pytest.raises(WALError, match="cut behind the WAL's back"):
        store.read_payloads_after(0)


def _reference_walk(data: bytes, lsn: int) -> tuple[list[int], int, str | None]:
    """Record by record with the full per-record check, as the scan was first written."""
    offsets, offset = [], SEG_HDR
    while offset < len(data):
        why = records._bad_record(data, offset, lsn)
        if why is not None:
            return offsets, offset, why
        offsets.append(offset)
        offset += HDR + RECORD_HEADER.unpack_from(data, offset)[0]
        lsn += 1
    return offsets, offset, None


def test_the_helper_verifies_the_newer_half_and_is_always_reaped(
    verify_mode: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if verify_mode == "serial":
        pytest.skip("the helper is tested in the parallel mode")
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("the helper runs only with more than one CPU")
    directory = tmp_path / "wal"
    expected = build(directory, [200] * 40, segment_entries=4)
    helpers: list[verify.VerifyHelper] = []
    monkeypatch.setattr(
        verify.VerifyHelper, "__init__", _recording(verify.VerifyHelper.__init__, helpers)
    )
    store = WALStore(directory, segment_entries=4)
    store.open()
    assert contents(store) == expected
    store.close()
    ((helper,),) = [helpers]
    assert 0 < helper.first < 10 and helper.pid == 0 and helper.fd == -1  # reaped, closed

    flip_bit(directory / segment_name(1), SEG_HDR + HDR + 3)  # an older segment: found here
    with pytest.raises(WALCorruption) as info:
        WALStore(directory, segment_entries=4).open()
    assert info.value.offset == SEG_HDR
    assert helpers[-1].pid == 0 and helpers[-1].fd == -1  # stopped and reaped all the same
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)  # nothing left to reap


def _recording(init: Callable[..., None], made: list[Any]) -> Callable[..., None]:
    def record(self: Any, *args: Any) -> None:
        init(self, *args)
        made.append(self)

    return record


def test_the_fast_scan_accepts_and_refuses_exactly_what_the_full_check_does() -> None:
    image = SEGMENT_HEADER.pack(SEGMENT_MAGIC, SEGMENT_VERSION, 0)
    image += b"".join(encode_record(lsn, payload(lsn, lsn * 3)) for lsn in range(7, 12))
    damaged = [image[:cut] for cut in range(SEG_HDR, len(image) + 1)]
    for pos in range(SEG_HDR, len(image)):
        for mask in (0x01, 0x80):
            flipped = bytearray(image)
            flipped[pos] ^= mask
            damaged.append(bytes(flipped))
    for data in damaged:
        index = records.index_segment(data, 7)
        assert (list(index.offsets), index.good_end, index.problem) == _reference_walk(data, 7)
        scan = scan_segment(data, 7)
        assert [(r.lsn, r.offset) for r in scan.records] == [
            (7 + i, offset) for i, offset in enumerate(index.offsets)
        ]


def test_an_unrecorded_jump_in_the_chain_is_still_a_gap(tmp_path: Path) -> None:
    directory = tmp_path / "wal"
    build(directory, [10] * 7, segment_entries=5)
    store = WALStore(directory, segment_entries=5)
    store.open()
    store.skip_through(100)
    store.append([b"x"])
    store.close()
    (directory / recovery.GAPS_FILE).unlink()
    with pytest.raises(WALCorruption, match="segment starts at LSN 101, expected"):
        WALStore(directory, segment_entries=5).open()


def test_bit_flip_in_the_very_last_record_is_corruption(open_wal: OpenWAL, tmp_path: Path) -> None:
    """A crash cuts a record short or leaves zeroed sectors; a full-length last record with a
    flipped bit was written whole and may have been acknowledged: refuse, never cut it."""
    directory = tmp_path / "wal"
    expected = build(directory, FLIP_SIZES, segment_entries=FLIP_ENTRIES)
    path = directory / segment_name(11)
    offset = record_offset(path, 12)
    flip_bit(path, offset + HDR + 3)
    with pytest.raises(WALCorruption) as info:
        WALStore(directory, segment_entries=FLIP_ENTRIES).open()
    assert (info.value.path, info.value.offset) == (path, offset)
    store = open_wal(directory, segment_entries=FLIP_ENTRIES, salvage="truncate")
    assert contents(store) == expected[:11]  # the operator's choice


# ------------------------------------------- garbage, short headers, names, LSN gaps


def test_unexpected_file_name_is_an_error(tmp_path: Path) -> None:
    directory = tmp_path / "wal"
    build(directory, [4])
    odd = directory / "wal-latest.log"
    odd.write_bytes(b"")
    with pytest.raises(WALError, match="unexpected file") as info:
        WALStore(directory).open()
    assert str(odd) in str(info.value)


@pytest.mark.parametrize(
    "content, why",
    [
        (random.Random(1).randbytes(300), "bad segment header"),
        (SEGMENT_MAGIC[:5], "segment header missing"),
        (b"", "segment header missing"),
        (SEGMENT_HEADER.pack(SEGMENT_MAGIC, SEGMENT_VERSION + 1, 0), "bad segment header"),
    ],
    ids=["garbage", "short header", "empty", "unknown version"],
)
def test_damaged_earlier_segment_is_corruption(content: bytes, why: str, tmp_path: Path) -> None:
    directory = tmp_path / "wal"
    build(directory, [10] * 6, segment_entries=3)
    first = directory / segment_name(1)
    first.write_bytes(content)
    with pytest.raises(WALCorruption, match=why) as info:
        WALStore(directory, segment_entries=3).open()
    assert (info.value.path, info.value.offset) == (first, 0)


def test_bad_header_of_the_newest_segment_with_records_is_corruption(
    open_wal: OpenWAL, tmp_path: Path
) -> None:
    """A segment is created atomically: a bad header is damage, not a torn tail, so its
    intact records must not be cut silently."""
    directory = tmp_path / "wal"
    expected = build(directory, [10] * 5, segment_entries=3)
    newest = directory / segment_name(4)
    flip_bit(newest, 2)
    before = snapshot(directory)
    with pytest.raises(WALCorruption, match="bad segment header") as info:
        WALStore(directory, segment_entries=3).open()
    assert (info.value.path, info.value.offset) == (newest, 0)
    assert snapshot(directory) == before

    store = open_wal(directory, segment_entries=3, salvage="truncate")
    assert contents(store) == expected[:3]
    assert (directory / f"{newest.name}.broken").read_bytes() == before[newest.name]
    assert store.append([b"p", b"q"]) == [6, 7]  # 4 and 5 were handed out before the cut
    assert contents(store) == [*expected[:3], (6, b"p"), (7, b"q")]


def test_garbage_newest_segment_is_corruption(tmp_path: Path) -> None:
    """Segments are created atomically: full-length garbage where records were is damage,
    and cutting it could lose acknowledged writes."""
    directory = tmp_path / "wal"
    build(directory, [10] * 5, segment_entries=3)
    newest = directory / segment_name(4)
    newest.write_bytes(random.Random(2).randbytes(100))
    with pytest.raises(WALCorruption, match="bad segment header"):
        WALStore(directory, segment_entries=3).open()


@pytest.mark.parametrize("content", [b"", b"OSUP"], ids=["empty", "short"])
def test_newest_segment_without_any_record_is_reset(
    content: bytes, open_wal: OpenWAL, tmp_path: Path
) -> None:
    directory = tmp_path / "wal"
    expected = build(directory, [10] * 5, segment_entries=3)
    newest = directory / segment_name(4)
    newest.write_bytes(content)
    store = open_wal(directory, segment_entries=3)
    assert contents(store) == expected[:3]
    assert "torn tail" in store.notes[0]
    assert (directory / f"{newest.name}.broken").read_bytes() == content
    assert newest.read_bytes() == SEGMENT_HEADER.pack(SEGMENT_MAGIC, SEGMENT_VERSION, 0)
    assert store.append([b"p", b"q"]) == [4, 5]
    assert contents(store) == [*expected[:3], (4, b"p"), (5, b"q")]
    assert verify_dir(directory)["ok"]


def test_missing_middle_segment_is_a_gap(tmp_path: Path) -> None:
    directory = tmp_path / "wal"
    build(directory, [10] * 8, segment_entries=3)
    (directory / segment_name(4)).unlink()
    with pytest.raises(WALCorruption, match="starts at LSN 7, expected 4") as info:
        WALStore(directory, segment_entries=3).open()
    assert (info.value.path, info.value.offset) == (directory / segment_name(7), 0)


def test_missing_oldest_segment_is_a_gap(tmp_path: Path) -> None:
    directory = tmp_path / "wal"
    build(directory, [10] * 8, segment_entries=3)
    (directory / segment_name(1)).unlink()  # not released by truncate_through: no floor
    with pytest.raises(WALCorruption, match="missing") as info:
        WALStore(directory, segment_entries=3).open()
    assert (info.value.path, info.value.offset) == (directory / segment_name(4), 0)


def test_renamed_segment_is_a_gap(tmp_path: Path) -> None:
    directory = tmp_path / "wal"
    build(directory, [10] * 8, segment_entries=3)
    (directory / segment_name(7)).rename(directory / segment_name(8))
    with pytest.raises(WALCorruption, match="expected 7"):
        WALStore(directory, segment_entries=3).open()


# ----------------------------------------------------------------------- verify_dir


def test_verify_dir_reports_kinds_and_offsets(tmp_path: Path) -> None:
    directory = tmp_path / "wal"
    build(directory, [20] * 7, segment_entries=3)
    assert verify_dir(directory)["ok"]

    newest = directory / segment_name(7)
    with open(newest, "ab") as f:
        f.write(b"\x00\x00\x00\x05\x01")  # a torn header after record 7
    report = verify_dir(directory)
    assert report["problems"] == [
        {
            "file": str(newest),
            "offset": SEG_HDR + HDR + 20,
            "kind": "torn tail",
            "problem": "incomplete record header",
        }
    ]

    middle = directory / segment_name(4)
    offset = record_offset(middle, 5)
    flip_bit(middle, offset + HDR)
    report = verify_dir(directory)
    assert not report["ok"]
    assert report["problems"][0] == {  # type: ignore[index]
        "file": str(middle),
        "offset": offset,
        "kind": "corruption",
        "problem": "record payload checksum mismatch",
    }
    files = report["files"]
    assert [f["records"] for f in files] == [3, 1, 1]  # type: ignore[attr-defined]


# -------------------------------------------------------------------- fsync errors


def test_sync_propagates_fdatasync_errors(
    open_wal: OpenWAL, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_wal(segment_entries=2)
    store.append([b"a"])

    def fail(fd: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "fdatasync", fail)
    with pytest.raises(OSError) as info:
        store.sync()
    assert info.value.errno == errno.EIO
    with pytest.raises(OSError) as info:  # rotation syncs the full segment first
        store.append([b"b", b"c"])
    assert info.value.errno == errno.EIO


# ------------------------------------------------------------------------- speed


def test_corrupt_first_record_of_a_large_segment_is_found_fast(tmp_path: Path) -> None:
    directory = tmp_path / "wal"
    directory.mkdir()
    image = bytearray(SEGMENT_HEADER.pack(SEGMENT_MAGIC, SEGMENT_VERSION, 0))
    for lsn in range(1, 10_001):
        image += encode_record(lsn, payload(lsn, 16))
    image[SEG_HDR + HDR] ^= 0x01  # first record's payload
    path = directory / segment_name(1)
    path.write_bytes(bytes(image))

    started = time.monotonic()
    with pytest.raises(WALCorruption) as info:
        WALStore(directory, segment_entries=20_000).open()
    assert time.monotonic() - started < 2.0
    assert (info.value.path, info.value.offset) == (path, SEG_HDR)


def test_torn_tail_followed_by_megabytes_of_zeros_is_cut_fast(
    open_wal: OpenWAL, tmp_path: Path
) -> None:
    """A crash can leave a zero-filled tail; small LSNs make every zero byte a candidate."""
    directory = tmp_path / "wal"
    expected = build(directory, [100] * 50)
    path = directory / segment_name(1)
    with open(path, "ab") as f:
        f.write(bytes(8 << 20))
    started = time.monotonic()
    store = open_wal()
    assert time.monotonic() - started < 2.0
    assert contents(store) == expected
    assert "torn tail" in store.notes[0]


def test_a_nearly_full_disk_gets_no_broken_copy(
    open_wal: OpenWAL, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Recovering from a full disk must not fill it again with a copy of the evidence."""
    directory = tmp_path / "wal"
    expected = build(directory, [30] * 12, segment_entries=5)
    last = directory / segment_name(11)
    with open(last, "ab") as f:
        f.write(b"\x00torn")
    usage = shutil.disk_usage(directory)
    monkeypatch.setattr(
        recovery.shutil, "disk_usage", lambda _p: usage._replace(free=recovery.BROKEN_FREE_MARGIN)
    )
    store = open_wal(directory, segment_entries=5)
    assert contents(store) == expected
    assert not list(directory.glob("*.broken*"))
    assert any("original NOT kept" in note for note in store.notes)
