"""Tests for osup_mp.storage.checkpoints.store (CheckpointStore and BytesOnlyDisk on real
files in tmp_path).

Covered: save/load round trips (small rows in SQLite, large ones in diskcache files) with the
file and the cache row holding the same image; the catalog order; pruning to ``generations``;
delete; 0700 directories; a process killed (``os._exit(9)`` in a forked child) right after
every I/O step of ``save()`` leaves the old or the new checkpoint, never a partial one, and
no temp file; corrupt or truncated newest checkpoints (fall back to the cache copy, the file
or the previous generation, and say why); checkpoint ids the header cannot hold; pickled rows
and keys planted in the cache directory are refused, never unpickled; BytesOnlyDisk refuses
anything but bytes.
"""

from __future__ import annotations

import functools
import os
import pickle
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import diskcache
import pytest

from osup_mp.storage.checkpoints.store import (
    _HEADER,
    Checkpoint,
    CheckpointStore,
    VaultError,
    decode,
    encode,
)

pytestmark = pytest.mark.unit  # no process started

OpenStore = Callable[..., CheckpointStore]

SMALL = b"small checkpoint payload"
LARGE = bytes(range(256)) * 300  # 76,800 bytes: diskcache keeps it in a file, not in SQLite
ID_OFFSET = 8 + 4 + 8 + 8  # magic, version, lsn, created: where the id starts in the header


@pytest.fixture
def open_store(tmp_path: Path) -> Iterator[OpenStore]:
    """Open a CheckpointStore (default tmp_path/"vault", 3 generations); closed afterwards."""
    stores: list[CheckpointStore] = []

    def make(directory: Path | None = None, generations: int = 3) -> CheckpointStore:
        store = CheckpointStore(directory or tmp_path / "vault", generations)
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close()


def flip(path: Path, offset: int, mask: int = 0x01) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= mask
    path.write_bytes(bytes(data))


def flip_cache_row(store: CheckpointStore, checkpoint_id: str, offset: int) -> None:
    image = bytearray(store.cache.get(checkpoint_id))
    image[offset] ^= 0x01
    store.cache.set(checkpoint_id, bytes(image))


def ids(store: CheckpointStore) -> list[str]:
    return [meta["id"] for meta in store.catalog()]


def cache_keys(store: CheckpointStore) -> set[str]:
    return set(store.cache)


# ------------------------------------------------------------------------ basics


@pytest.mark.parametrize("payload", [SMALL, LARGE, b""], ids=["small", "large", "empty"])
def test_save_load_round_trip(payload: bytes, open_store: OpenStore) -> None:
    store = open_store()
    before = time.time_ns()
    saved = store.save("c1", 42, payload)
    assert (saved.id, saved.lsn, saved.payload) == ("c1", 42, payload)
    assert before <= saved.created_ns <= time.time_ns()

    loaded, problems = store.load("c1")
    assert loaded == saved
    assert problems == []
    file_image = store._path("c1").read_bytes()
    assert store.cache.get("c1") == file_image == encode(saved)  # both copies identical
    assert decode(file_image, "file") == saved
    store.close()

    reopened = open_store()
    assert reopened.load("c1") == (saved, [])
    assert reopened.latest() == (saved, [])
    assert saved.meta() == {
        "id": "c1",
        "lsn": 42,
        "created": saved.created_ns / 1e9,
        "bytes": len(payload),
    }


def test_catalog_is_sorted_by_lsn_then_creation(open_store: OpenStore) -> None:
    store = open_store(generations=10)
    for checkpoint_id, lsn in [("e", 50), ("a", 10), ("c", 30), ("c2", 30), ("b", 20)]:
        store.save(checkpoint_id, lsn, checkpoint_id.encode())
    catalog = store.catalog()
    assert [m["id"] for m in catalog] == ["a", "b", "c", "c2", "e"]
    assert [m["lsn"] for m in catalog] == [10, 20, 30, 30, 50]
    assert catalog[2]["created"] <= catalog[3]["created"]
    assert all(m["bytes"] == len(m["id"]) for m in catalog)
    assert store.oldest_kept_lsn() == 10
    assert store.latest()[0] == store.load("e")[0]


def test_prune_keeps_generations(open_store: OpenStore) -> None:
    store = open_store(generations=2)
    for n in range(1, 6):
        store.save(f"c{n}", n, b"x" * n)
        assert ids(store) == [f"c{k}" for k in range(max(1, n - 1), n + 1)]
    assert cache_keys(store) == {"c4", "c5"}
    assert sorted(p.name for p in store.files.iterdir()) == ["c4.ckpt", "c5.ckpt"]
    assert store.oldest_kept_lsn() == 4
    assert store.prune() == []


def test_delete_removes_file_and_cache_row(open_store: OpenStore) -> None:
    store = open_store()
    store.save("keep", 1, b"k")
    store.save("gone", 2, b"g")
    assert store.delete("gone") is True
    assert not store._path("gone").exists()
    assert store.cache.get("gone") is None
    assert store.delete("gone") is False
    with pytest.raises(VaultError, match="missing"):
        store.load("gone")
    assert ids(store) == ["keep"]
    assert store.latest()[0] == store.load("keep")[0]


def test_directories_are_private(tmp_path: Path, open_store: OpenStore) -> None:
    directory = tmp_path / "vault"
    directory.mkdir(mode=0o755)
    os.chmod(directory, 0o755)
    store = open_store(directory)
    store.save("c", 1, b"x")
    for path in (directory, directory / "files", directory / "cache"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
    assert stat.S_IMODE(store._path("c").stat().st_mode) == 0o600


def test_empty_store_has_no_latest(open_store: OpenStore) -> None:
    assert open_store().latest() == (None, [])


@pytest.mark.parametrize(
    "bad_id",
    ["x" * 37, "é" * 19, "", " padded", "padded "],
    ids=["37 chars", "38 bytes", "empty", "leading space", "trailing space"],
)
def test_ids_the_header_cannot_hold_are_refused(bad_id: str, open_store: OpenStore) -> None:
    """The header keeps 36 bytes, stripped: such an id would be listed under a name that
    loads nothing, and prune would then delete the good generations."""
    store = open_store(generations=1)
    good = store.save("good", 1, b"good")
    with pytest.raises(VaultError, match="checkpoint id"):
        store.save(bad_id, 2, b"bad")
    assert ids(store) == ["good"]
    assert store.latest() == (good, [])
    assert store.save("0" * 36, 3, b"36 bytes is fine").id == "0" * 36


# ------------------------------------------------- kill -9 between each step of save()


@pytest.mark.parametrize("cache", ["flipped", "deleted"])
def test_corrupt_newest_falls_back_to_the_previous_generation(
    cache: str, open_store: OpenStore
) -> None:
    store = open_store()
    previous = store.save("previous", 1, SMALL)
    store.save("newest", 2, SMALL + b"!")
    flip(store._path("newest"), _HEADER.size + 3)  # a payload byte of the file
    if cache == "flipped":
        flip_cache_row(store, "newest", _HEADER.size + 3)
    else:
        store.cache.delete("newest")

    checkpoint, problems = store.latest()
    assert checkpoint == previous
    assert len(problems) == 1
    assert str(store._path("newest")) in problems[0]
    assert "checksum mismatch" in problems[0]
    if cache == "flipped":
        assert "cache row newest: checksum mismatch" in problems[0]
    else:
        assert "newest: not in the cache" in problems[0]
    with pytest.raises(VaultError, match="checksum mismatch"):
        store.load("newest")


def test_corrupt_cache_row_falls_back_to_the_file(open_store: OpenStore) -> None:
    store = open_store()
    saved = store.save("c", 7, LARGE)
    flip_cache_row(store, "c", len(store.cache.get("c")) - 1)  # a digest byte
    path = store._path("c")
    assert store.load("c") == (
        saved,
        ["cache row c: checksum mismatch", f"cache row c repaired from {path}"],
    )
    assert store.latest() == (saved, [])  # repaired: both copies verify again


def test_corrupt_file_is_served_from_the_cache(open_store: OpenStore) -> None:
    store = open_store()
    saved = store.save("c", 7, SMALL)
    flip(store._path("c"), _HEADER.size + 1)
    # Served from the verified cache copy, but never silently: the file is reported and
    # rewritten from the row, so the next load finds both copies good.
    assert store.load("c") == (
        saved,
        [f"{store._path('c')}: checksum mismatch; repaired from the cache row"],
    )
    assert store.load("c") == (saved, [])
    assert decode(store._path("c").read_bytes(), "file") == saved


def test_files_in_the_vault_are_private(open_store: OpenStore, tmp_path: Path) -> None:
    store = open_store()
    store.save("big", 1, LARGE)  # large enough for diskcache to keep a file of its own
    store.save("small", 2, SMALL)
    for root, dirs, files in os.walk(store.dir):
        for name in dirs:
            assert os.stat(os.path.join(root, name)).st_mode & 0o777 == 0o700, name
        for name in files:
            assert os.stat(os.path.join(root, name)).st_mode & 0o777 == 0o600, name


@pytest.mark.parametrize(
    "keep, why",
    [
        (_HEADER.size + 32 + 5, "does not match its header"),
        (10, "truncated checkpoint"),
        (0, r"truncated checkpoint \(0 bytes\)"),
    ],
    ids=["mid-payload", "mid-header", "empty"],
)
def test_truncated_file_is_a_clear_error(keep: int, why: str, open_store: OpenStore) -> None:
    store = open_store()
    previous = store.save("previous", 1, b"p")
    store.save("c", 2, SMALL)
    store.cache.delete("c")
    os.truncate(store._path("c"), keep)
    with pytest.raises(VaultError, match=why) as info:
        store.load("c")
    assert str(store._path("c")) in str(info.value)
    checkpoint, problems = store.latest()
    assert checkpoint == previous
    assert problems  # the truncated newest is reported, never silently skipped


@pytest.mark.parametrize(
    "offset, mask, reported",
    [
        (0, 0x01, "abcdef.ckpt: unreadable header"),
        (ID_OFFSET, 0x80, "abcdef.ckpt: unreadable header"),
        (ID_OFFSET + 3, 0x01, "abceef.ckpt: missing"),
    ],
    ids=["magic", "id: invalid UTF-8", "id: another letter"],
)
def test_damaged_newest_header_is_reported(
    offset: int, mask: int, reported: str, open_store: OpenStore
) -> None:
    store = open_store(generations=3)
    previous = store.save("previous", 1, b"p")
    newest = store.save("abcdef", 2, b"n")
    store.cache.delete(newest.id)
    flip(store._path(newest.id), offset, mask)

    checkpoint, problems = store.latest()
    assert checkpoint == previous
    assert len(problems) == 1 and reported in problems[0]
    # Saving still works: the damaged file is listed (first) instead of breaking the catalog.
    store.save("later", 3, b"l")
    assert store.latest()[0] == store.load("later")[0]


def test_every_generation_corrupt(open_store: OpenStore) -> None:
    store = open_store()
    for n in (1, 2):
        store.save(f"c{n}", n, SMALL)
        store.cache.delete(f"c{n}")
        flip(store._path(f"c{n}"), _HEADER.size)
    checkpoint, problems = store.latest()
    assert checkpoint is None
    assert len(problems) == 2


# ---------------------------------------------- pickled rows and keys: never unpickled


class Evil:
    """Unpickling this creates ``marker`` (stands in for arbitrary code execution)."""

    def __init__(self, marker: Path, padding: int = 0) -> None:
        self.call = functools.partial(open, str(marker), "w")
        self.call.padding = b"x" * padding  # type: ignore[attr-defined]

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return (self.call, ())


@pytest.mark.parametrize("padding", [0, 40_000], ids=["row in sqlite", "row in a file"])
def test_pickled_row_is_refused_not_executed(
    padding: int, tmp_path: Path, open_store: OpenStore
) -> None:
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(Evil(probe)))
    assert probe.exists()  # the payload is live: unpickling it really runs code

    directory = tmp_path / "vault"
    store = open_store(directory)
    saved = store.save("victim", 1, SMALL)
    store.close()
    marker = tmp_path / "pwned"
    with diskcache.Cache(str(directory / "cache")) as plain:  # the default, pickling Disk
        plain.set("victim", Evil(marker, padding))

    store = open_store(directory)
    checkpoint, problems = store.load("victim")
    assert checkpoint == saved  # fell back to the file
    assert len(problems) == 2 and "refusing to unpickle" in problems[0]
    assert problems[1].startswith("cache row victim repaired from")
    assert store.latest() == (saved, [])  # the row now holds the verified bytes
    assert not marker.exists()
    assert not marker.exists()


def test_pickled_key_is_refused_not_executed(tmp_path: Path, open_store: OpenStore) -> None:
    directory = tmp_path / "vault"
    store = open_store(directory, generations=1)
    saved = store.save("victim", 1, SMALL)
    store.close()
    marker = tmp_path / "pwned"
    with diskcache.Cache(str(directory / "cache")) as plain:
        plain.set(Evil(marker), b"a value under a pickled key")
        plain.set(("tuple", "key"), b"another")

    store = open_store(directory, generations=1)
    assert store.load("victim") == (saved, [])
    later = store.save("later", 2, b"l")  # prune deletes "victim"; keys stay untouched
    assert store.latest() == (later, [])
    with pytest.raises(VaultError, match="refusing to unpickle a key"):
        list(store.cache)
    assert not marker.exists()


@pytest.mark.parametrize(
    "value", ["text", bytearray(b"b"), memoryview(b"m"), 7, 1.5, None, {"a": 1}, [b"x"]]
)
def test_bytes_only_disk_refuses_other_values(value: Any, open_store: OpenStore) -> None:
    store = open_store()
    with pytest.raises(TypeError, match="bytes only"):
        store.cache.set("k", value)
    assert store.cache.get("k") is None
    store.cache.set("k", b"bytes are fine")
    assert store.cache.get("k") == b"bytes are fine"


def test_checkpoint_image_layout() -> None:
    checkpoint = Checkpoint("id", 9, 123, b"payload")
    image = encode(checkpoint)
    assert len(image) == _HEADER.size + len(b"payload") + 32
    assert decode(image, "x") == checkpoint
    with pytest.raises(VaultError, match="not a checkpoint"):
        decode(b"X" + image[1:], "x")
