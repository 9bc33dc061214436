"""Checkpoint storage: every checkpoint in diskcache *and* as a checksummed file.

A checkpoint image is ``header | payload | sha256(header + payload)``; the header holds a
magic, the layout version, the LSN the checkpoint covers, its creation time and its id. The
same image is stored twice: as a file written atomically (temp → fsync → rename → fsync
dir: the durable copy, and the source of the listing) and as a diskcache row (the fast
path). Loading verifies the digest and falls back from the cache to the file; choosing the
newest checkpoint falls back to the previous generation when the newest is corrupt.

Design decision: diskcache must never unpickle. Values are stored as raw bytes and keys as
text through :class:`BytesOnlyDisk`, which refuses any pickled row or key it is asked to
read — someone who can write the cache directory must not get code execution.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import re
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import diskcache
from diskcache.core import MODE_PICKLE

from osup_mp.lowlevel.files import atomic_write, fsync_dir

MAGIC = b"OSUPCKP1"
VERSION = 1
_HEADER = struct.Struct(">8sIQQ36sQ")  # magic, version, lsn, created_ns, id, payload length
_DIGEST = 32
ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,36}")  # ids name files: nothing like a path


class VaultError(RuntimeError):
    """A checkpoint is missing or corrupt, or the cache holds something it must not."""


class BytesOnlyDisk(diskcache.Disk):  # type: ignore[misc]
    """A diskcache Disk that stores bytes and text only and refuses to unpickle anything."""

    def store(self, value: Any, read: bool, key: Any = diskcache.core.UNKNOWN) -> Any:
        if not isinstance(value, bytes):
            raise TypeError("the checkpoint cache stores bytes only")
        return super().store(value, read, key=key)

    def fetch(self, mode: int, filename: Any, value: Any, read: bool) -> Any:
        if mode == MODE_PICKLE:
            raise VaultError("refusing to unpickle a row of the checkpoint cache")
        return super().fetch(mode, filename, value, read)

    def get(self, key: Any, raw: bool) -> Any:
        if not raw:
            raise VaultError("refusing to unpickle a key of the checkpoint cache")
        return super().get(key, raw)


@dataclasses.dataclass(frozen=True, slots=True)
class Checkpoint:
    id: str
    lsn: int
    created_ns: int
    payload: bytes

    def meta(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "lsn": self.lsn,
            "created": self.created_ns / 1e9,
            "bytes": len(self.payload),
        }


def encode(checkpoint: Checkpoint) -> bytes:
    raw_id = checkpoint.id.encode()
    if not raw_id or len(raw_id) > 36 or checkpoint.id != checkpoint.id.strip():
        # The header holds 36 bytes, stripped on read: any other id would be listed under a
        # name that loads nothing, and prune would then delete the good generations.
        raise VaultError(f"checkpoint id {checkpoint.id!r}: need 1-36 bytes, no outer spaces")
    header = _HEADER.pack(
        MAGIC,
        VERSION,
        checkpoint.lsn,
        checkpoint.created_ns,
        raw_id.ljust(36),
        len(checkpoint.payload),
    )
    digest = hashlib.sha256(header)
    digest.update(checkpoint.payload)
    return header + checkpoint.payload + digest.digest()


def decode(image: bytes, where: str) -> Checkpoint:
    if len(image) < _HEADER.size + _DIGEST:
        raise VaultError(f"{where}: truncated checkpoint ({len(image)} bytes)")
    magic, version, lsn, created, raw_id, length = _HEADER.unpack_from(image, 0)
    if magic != MAGIC or version != VERSION:
        raise VaultError(f"{where}: not a checkpoint of this osup-mp (magic {magic!r})")
    if len(image) != _HEADER.size + length + _DIGEST:
        raise VaultError(f"{where}: size {len(image)} does not match its header")
    body = memoryview(image)[: _HEADER.size + length]
    if hashlib.sha256(body).digest() != image[-_DIGEST:]:
        raise VaultError(f"{where}: checksum mismatch")
    payload = bytes(image[_HEADER.size : _HEADER.size + length])
    return Checkpoint(raw_id.decode().strip(), lsn, created, payload)


@contextlib.contextmanager
def _private() -> Iterator[None]:
    """Files created inside are 0600 and directories 0700 (the vault process has no other
    thread that could create a file meanwhile)."""
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


def _why_bad(image: bytes, where: str) -> str:
    try:
        decode(image, where)
    except VaultError as exc:
        return str(exc).removeprefix(f"{where}: ")
    return "differs from the cache row"


class CheckpointStore:
    def __init__(self, directory: Path, generations: int) -> None:
        self.dir = directory
        self.files = directory / "files"
        self.generations = generations
        for path in (directory, self.files):
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(path, 0o700)
        for stale in self.files.glob(".*.tmp"):
            stale.unlink()  # a save that died before its rename
        with _private():
            self.cache = diskcache.Cache(str(directory / "cache"), disk=BytesOnlyDisk)
        for root, _dirs, files in os.walk(directory):  # what an older version left readable
            os.chmod(root, 0o700)
            for name in files:
                os.chmod(os.path.join(root, name), 0o600)

    def close(self) -> None:
        self.cache.close()

    def _path(self, checkpoint_id: str) -> Path:
        return self.files / f"{checkpoint_id}.ckpt"

    def save(self, checkpoint_id: str, lsn: int, payload: bytes) -> Checkpoint:
        """Durable when this returns (the file is fsynced); then old generations go."""
        checkpoint = Checkpoint(checkpoint_id, lsn, time.time_ns(), payload)
        image = encode(checkpoint)
        atomic_write(self._path(checkpoint_id), image)
        with _private():  # diskcache writes large values as files of its own
            self.cache.set(checkpoint_id, image)
        self.prune()
        return checkpoint

    def catalog(self) -> list[dict[str, Any]]:
        """Every checkpoint file's header, oldest first (by LSN, then creation time)."""
        metas = []
        for path in self.files.glob("*.ckpt"):
            try:
                with open(path, "rb") as f:
                    head = f.read(_HEADER.size)
                magic, _v, lsn, created, raw_id, length = _HEADER.unpack(head)
                checkpoint_id = raw_id.decode().strip()
            except (OSError, struct.error, UnicodeDecodeError):  # a flipped bit in the id
                metas.append(
                    {"id": path.stem, "lsn": -1, "created": 0.0, "bytes": 0, "unreadable": True}
                )
                continue
            if magic != MAGIC:
                metas.append(
                    {"id": path.stem, "lsn": -1, "created": 0.0, "bytes": 0, "unreadable": True}
                )
                continue
            metas.append(
                {
                    "id": checkpoint_id,
                    "lsn": lsn,
                    "created": created / 1e9,
                    "bytes": length,
                }
            )
        return sorted(metas, key=lambda m: (m["lsn"], m["created"]))

    def load(self, checkpoint_id: str) -> tuple[Checkpoint, list[str]]:
        """The verified checkpoint, from the cache or else the file; plus what went wrong.

        Both copies are checked: one that is damaged or missing while the other verifies
        is rewritten from it (and reported), so a damaged copy is never silently masked."""
        problems: list[str] = []
        path = self._path(checkpoint_id)
        try:
            file_image: bytes | None = path.read_bytes()
        except FileNotFoundError:
            file_image = None
        try:
            image = self.cache.get(checkpoint_id)
            if image is None:
                problems.append(f"{checkpoint_id}: not in the cache")
            else:
                checkpoint = decode(image, f"cache row {checkpoint_id}")
                if file_image != image:  # equal bytes: the file verifies as the row did
                    problems.append(self._repair_file(path, image, file_image))
                return checkpoint, problems
        except VaultError as exc:
            problems.append(str(exc))
        except Exception as exc:  # a damaged cache database is not fatal: the file remains
            problems.append(f"cache row {checkpoint_id}: {type(exc).__name__}: {exc}")
        if file_image is None:
            problems.append(f"{path}: missing")
            raise VaultError("; ".join(problems))
        try:
            checkpoint = decode(file_image, str(path))
        except VaultError as exc:
            problems.append(str(exc))
            raise VaultError("; ".join(problems)) from None
        try:
            with _private():
                self.cache.set(checkpoint_id, file_image)
            problems.append(f"cache row {checkpoint_id} repaired from {path}")
        except Exception as exc:
            problems.append(f"cache row {checkpoint_id} not repaired: {exc}")
        return checkpoint, problems

    def _repair_file(self, path: Path, image: bytes, old: bytes | None) -> str:
        why = "missing" if old is None else _why_bad(old, str(path))
        try:
            atomic_write(path, image)
        except OSError as exc:
            return f"{path}: {why}; not repaired from the cache row: {exc}"
        return f"{path}: {why}; repaired from the cache row"

    def latest(self) -> tuple[Checkpoint | None, list[str]]:
        """The newest checkpoint that verifies, falling back generation by generation."""
        metas = self.catalog()
        problems = [
            f"{self._path(m['id'])}: unreadable header" for m in metas if m.get("unreadable")
        ]
        for meta in reversed(metas):
            try:
                checkpoint, more = self.load(meta["id"])
            except VaultError as exc:
                problems.append(str(exc))
                continue
            return checkpoint, problems + more
        return None, problems

    def delete(self, checkpoint_id: str) -> bool:
        existed = self._path(checkpoint_id).exists()
        # The row first: killed in between, a file without a row is still listed, loaded
        # and pruned later; a row without its file would never be seen again.
        self.cache.delete(checkpoint_id)
        self._path(checkpoint_id).unlink(missing_ok=True)
        if existed:
            fsync_dir(self.files)
        return existed

    def prune(self) -> list[str]:
        metas = self.catalog()
        doomed = metas[: max(0, len(metas) - self.generations)]
        for meta in doomed:
            self.delete(meta["id"])
        return [m["id"] for m in doomed]

    def oldest_kept_lsn(self) -> int | None:
        metas = self.catalog()
        return metas[0]["lsn"] if metas else None
