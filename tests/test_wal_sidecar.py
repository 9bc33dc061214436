"""Index files of sealed segments: used only when they match the segment image exactly."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from osup_mp.storage.wal import sidecar, verify
from osup_mp.storage.wal import store as wal
from osup_mp.storage.wal.records import WALCorruption
from osup_mp.storage.wal.store import WALStore

pytestmark = pytest.mark.unit  # no process started


def build(directory: Path, n: int) -> list[tuple[int, bytes]]:
    """A closed WAL of ``n`` records, 10 per segment."""
    store = WALStore(directory, segment_entries=10)
    store.open()
    rng = random.Random(n)
    data = [rng.randbytes(rng.randrange(1, 300)) for _ in range(n)]
    for i in range(0, n, 7):  # batches that straddle segment boundaries
        store.append(data[i : i + 7])
    store.sync()
    store.close()
    return list(enumerate(data, start=1))


def reopen(directory: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[WALStore, list[int]]:
    """Open ``directory`` serially, recording the first LSN of every segment scanned record by
    record."""
    monkeypatch.setattr(wal, "PARALLEL_VERIFY_BYTES", 1 << 60)
    scanned: list[int] = []
    real = verify.index_segment

    def counting(data: bytes, first: int) -> Any:
        scanned.append(first)
        return real(data, first)

    monkeypatch.setattr(verify, "index_segment", counting)
    store = WALStore(directory, segment_entries=10)
    store.open()
    return store, scanned


def records(store: WALStore) -> list[tuple[int, bytes]]:
    return [(r.lsn, r.payload) for r in store.read_after(0)]


def test_sealed_segments_are_indexed_and_not_scanned_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = build(tmp_path, 45)
    indexes = sorted(p.name for p in tmp_path.glob("wal-*.idx"))
    assert len(indexes) == 4  # every sealed segment; not the active one (LSNs 41-45)
    store, scanned = reopen(tmp_path, monkeypatch)
    try:
        assert scanned == [41]  # only the active segment is scanned record by record
        assert records(store) == expected
    finally:
        store.close()


@pytest.mark.parametrize("damage", ["flip", "cut", "grow"])
def test_a_segment_changed_since_its_index_is_scanned_and_damage_named(
    damage: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    build(tmp_path, 35)
    segment = sorted(tmp_path.glob("wal-*.log"))[1]  # LSNs 11-20, sealed and indexed
    image = bytearray(segment.read_bytes())
    if damage == "flip":
        image[len(image) // 2] ^= 0x04
    elif damage == "cut":
        del image[-5:]
    else:
        image += b"\0" * 100
    segment.write_bytes(bytes(image))
    with pytest.raises(WALCorruption) as refused:
        reopen(tmp_path, monkeypatch)
    assert segment.name in str(refused.value)


@pytest.mark.parametrize("damage", ["flip", "truncate", "stale"])
def test_a_bad_index_is_ignored_and_rewritten(
    damage: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = build(tmp_path, 35)
    segment = sorted(tmp_path.glob("wal-*.log"))[0]
    index = sidecar.index_path(segment)
    good = index.read_bytes()
    if damage == "flip":
        index.write_bytes(good[:40] + bytes([good[40] ^ 1]) + good[41:])
    elif damage == "truncate":
        index.write_bytes(good[:30])
    else:  # an index of another segment under this name
        index.write_bytes(sidecar.index_path(sorted(tmp_path.glob("wal-*.log"))[1]).read_bytes())
    store, scanned = reopen(tmp_path, monkeypatch)
    try:
        assert scanned == [1, 31]  # the segment with the bad index, and the active one
        assert records(store) == expected
        assert index.read_bytes() == good  # rewritten from the full scan
    finally:
        store.close()


def test_released_segments_take_their_index_along(tmp_path: Path) -> None:
    build(tmp_path, 35)
    orphan = tmp_path / "wal-00000000000000009999.idx"
    orphan.write_bytes(b"left behind")
    store = WALStore(tmp_path, segment_entries=10)
    store.open()
    try:
        assert not orphan.exists()  # no segment of that name: removed at open
        store.truncate_through(20)
        assert sorted(p.stem for p in tmp_path.glob("wal-*.idx")) == sorted(
            p.stem for p in tmp_path.glob("wal-*.log") if p != store.segments[-1].path
        )
    finally:
        store.close()
