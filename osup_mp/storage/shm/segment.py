"""The shared-memory segment ``/o_shared_state``: creation, attachment, seqlock (the layout
itself is declared in :mod:`.layout`).

One POSIX segment (``posix_ipc`` + ``mmap``, viewed with numpy) holds:

* a **header** — magic, layout version, sizes, creator pid, a random epoch (a reader can
  tell a rebuilt segment from the one it attached to);
* a fixed **slot table**, one 128-byte slot per agent instance: who it is (role, id, pid,
  state) and what it does (heartbeat, request/error counters, latency, RSS, the newest main
  WAL entry a follower has applied). Every field has
  exactly one writer — the agent writes its heartbeat and counters, its manager the identity
  and state — and all fields are naturally aligned, so a reader never sees half a number;
* a **state region** the main agent publishes into (its embedding matrix) and shadows read
  zero-copy, as a seqlock over two buffers: the writer fills the buffer readers are not
  using, then flips. A read is valid when the sequence was even before it and moved by at
  most 2 after it (one complete publish may overlap a read; its buffer was the other one).
  Each buffer also carries a CRC so tests (and paranoid readers) can verify it.

Design decision: ``posix_ipc`` rather than ``multiprocessing.shared_memory``, whose resource
tracker unlinks segments when an attaching process exits (Python 3.11). This module imports
only numpy, posix_ipc and the standard library: agents import it, and it must start fast.
"""

from __future__ import annotations

import mmap
import os
import secrets
import time
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import posix_ipc

from osup_mp.lowlevel.proc import pid_alive
from osup_mp.storage.shm.layout import (
    BUFFER_HEADER_DTYPE,
    BUFFER_HEADER_SIZE,
    HEADER_DTYPE,
    HEADER_SIZE,
    LAYOUT_VERSION,
    MAGIC,
    MAIN_SLOT,
    SLOT_COUNT,
    SLOT_DTYPE,
    SLOT_SIZE,
    STANDBY_SLOT,
    STATE_HEADER_DTYPE,
    STATE_HEADER_SIZE,
    Role,
    ShmError,
    SlotState,
    monotonic_ns,
    shm_path,
)

# The layout's names are the segment's too: agents and tools import them from here.
__all__ = [
    "BUFFER_HEADER_DTYPE",
    "BUFFER_HEADER_SIZE",
    "HEADER_DTYPE",
    "HEADER_SIZE",
    "LAYOUT_VERSION",
    "MAGIC",
    "MAIN_SLOT",
    "Published",
    "Role",
    "SLOT_COUNT",
    "SLOT_DTYPE",
    "SLOT_SIZE",
    "STANDBY_SLOT",
    "STATE_HEADER_DTYPE",
    "STATE_HEADER_SIZE",
    "SharedState",
    "ShmError",
    "SlotState",
    "monotonic_ns",
    "shm_path",
]


@dataclass(frozen=True, slots=True)
class Published:
    """One consistent read of the state region."""

    matrix: np.ndarray[Any, np.dtype[np.float32]]
    version: int
    seq: int  # pass to :meth:`SharedState.still_valid` when holding a zero-copy view
    crc_ok: bool | None


class SharedState:
    """A mapped segment. Create it with :meth:`create` (the supervisor) or :meth:`attach`."""

    def __init__(self, name: str, mapping: mmap.mmap, owner: bool) -> None:
        self.name = name
        self.owner = owner
        self._mm = mapping
        self.size = len(mapping)
        self.header = np.frombuffer(mapping, HEADER_DTYPE, 1, 0)[0]
        self.slots = np.frombuffer(mapping, SLOT_DTYPE, SLOT_COUNT, HEADER_SIZE)
        state_offset = int(self.header["state_offset"])
        self.state = np.frombuffer(mapping, STATE_HEADER_DTYPE, 1, state_offset)[0]
        self._buffers_offset = state_offset + STATE_HEADER_SIZE
        self.buffer_size = int(self.state["buffer_size"])
        self.epoch = int(self.header["epoch"])
        # The writer's knowledge, per state buffer: how many leading rows still equal the
        # newest matrix this process published, and whether that buffer's CRC is real (a
        # publish without checksum leaves 0). Unknown (0) until this process writes it.
        self._same_rows = [0, 0]
        self._crc_real = [False, False]

    # -- creation ----------------------------------------------------------------------------

    @classmethod
    def create(cls, name: str, size: int) -> tuple[SharedState, str | None]:
        """Create the segment (mode 0600); rebuild one left by a dead tree.

        Returns the segment and a note to log when a stale one was rebuilt. Raises
        :class:`ShmError` for a foreign, wrong-version or live segment.
        """
        note = None
        min_size = HEADER_SIZE + SLOT_COUNT * SLOT_SIZE + STATE_HEADER_SIZE + 2 * 4096
        if size < min_size:
            raise ShmError(f"shared_memory_size {size} is too small: at least {min_size} bytes")
        try:
            existing = posix_ipc.SharedMemory(name)
        except posix_ipc.ExistentialError:
            existing = None
        if existing is not None:
            note = cls._check_stale(name, existing)
            posix_ipc.unlink_shared_memory(name)
        seg = posix_ipc.SharedMemory(name, posix_ipc.O_CREX, mode=0o600, size=size)
        try:
            mapping = mmap.mmap(seg.fd, size)
        finally:
            seg.close_fd()
        hdr = np.frombuffer(mapping, HEADER_DTYPE, 1, 0)
        state_offset = HEADER_SIZE + SLOT_COUNT * SLOT_SIZE
        state_size = size - state_offset
        hdr["version"] = LAYOUT_VERSION
        hdr["header_size"] = HEADER_SIZE
        hdr["total_size"] = size
        hdr["creator_pid"] = os.getpid()
        hdr["slot_count"] = SLOT_COUNT
        hdr["slot_size"] = SLOT_SIZE
        hdr["epoch"] = secrets.randbits(63)
        hdr["slots_offset"] = HEADER_SIZE
        hdr["state_offset"] = state_offset
        hdr["state_size"] = state_size
        hdr["created_ns"] = time.time_ns()
        st = np.frombuffer(mapping, STATE_HEADER_DTYPE, 1, state_offset)
        st["buffer_size"] = (state_size - STATE_HEADER_SIZE) // 2 // 64 * 64
        hdr["magic"] = MAGIC  # last: a segment without magic was never finished
        del hdr, st
        return cls(name, mapping, owner=True), note

    @staticmethod
    def _check_stale(name: str, seg: Any) -> str:
        try:
            if seg.size < HEADER_SIZE:
                raise ShmError(_foreign(name, "too small"))
            mapping = mmap.mmap(seg.fd, HEADER_SIZE, prot=mmap.PROT_READ)
        finally:
            seg.close_fd()
        try:
            hdr = np.frombuffer(mapping, HEADER_DTYPE, 1, 0)[0].copy()
        finally:
            mapping.close()
        if bytes(hdr["magic"]) != MAGIC:
            raise ShmError(_foreign(name, f"magic {bytes(hdr['magic'])!r}"))
        if int(hdr["version"]) != LAYOUT_VERSION:
            raise ShmError(
                f"shared memory {name} has layout version {int(hdr['version'])}, this osup-mp "
                f"uses {LAYOUT_VERSION}: stop the tree that made it, or remove {shm_path(name)}"
            )
        creator = int(hdr["creator_pid"])
        if pid_alive(creator) and creator != os.getpid():
            raise ShmError(
                f"shared memory {name} is in use by a running tree (pid {creator}); "
                "give this tree another shared_memory_name"
            )
        return f"rebuilt stale shared memory {name} left by dead pid {creator}"

    @classmethod
    def attach(cls, name: str, *, writable: bool = True) -> SharedState:
        """Map an existing segment; raise :class:`ShmError` if it is absent or not ours."""
        try:
            seg = posix_ipc.SharedMemory(name, read_only=not writable)
        except posix_ipc.ExistentialError:
            raise ShmError(f"no shared memory named {name}") from None
        except posix_ipc.PermissionsError as exc:
            raise ShmError(f"shared memory {name}: {exc}") from None
        try:
            if seg.size < HEADER_SIZE:
                raise ShmError(_foreign(name, "too small"))
            prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
            mapping = mmap.mmap(seg.fd, seg.size, prot=prot)
        finally:
            seg.close_fd()
        hdr = np.frombuffer(mapping, HEADER_DTYPE, 1, 0)[0]
        problem = None
        if bytes(hdr["magic"]) != MAGIC:
            problem = _foreign(name, f"magic {bytes(hdr['magic'])!r}")
        elif int(hdr["version"]) != LAYOUT_VERSION:
            problem = f"shared memory {name} has layout version {int(hdr['version'])}"
        elif int(hdr["total_size"]) != len(mapping):
            problem = f"shared memory {name} size {len(mapping)} != header {hdr['total_size']}"
        elif (
            int(hdr["slot_count"]) != SLOT_COUNT
            or int(hdr["slot_size"]) != SLOT_SIZE
            or int(hdr["state_offset"]) != HEADER_SIZE + SLOT_COUNT * SLOT_SIZE
            or int(hdr["state_offset"]) + STATE_HEADER_SIZE > len(mapping)
        ):
            problem = f"shared memory {name} has a corrupt header (slot table or state offsets)"
        if problem:
            del hdr
            mapping.close()
            raise ShmError(problem)
        del hdr
        shared = cls(name, mapping, owner=False)
        if shared.buffer_size * 2 > len(mapping) - shared._buffers_offset:
            shared.close()
            raise ShmError(f"shared memory {name} has a corrupt state header")
        return shared

    def close(self) -> None:
        """Unmap (views into the mapping must be gone); the owner also unlinks. Idempotent."""
        if self._mm.closed:
            return
        del self.header, self.slots, self.state
        try:
            self._mm.close()
        except BufferError:
            pass  # a caller still holds a zero-copy view; the mapping goes with the process
        if self.owner:
            self.unlink()

    def unlink(self) -> None:
        try:
            posix_ipc.unlink_shared_memory(self.name)
        except posix_ipc.ExistentialError:
            pass

    # -- slots -------------------------------------------------------------------------------

    def slot(self, index: int) -> np.void:
        return self.slots[index]  # type: ignore[no-any-return]

    def claim_slot(self, index: int, role: Role, instance_id: str) -> None:
        s = self.slots[index]
        for field in (
            "pid",
            "generation",
            "restarts",
            "hb_counter",
            "hb_agent_ns",
            "hb_frame_ns",
            "requests",
            "errors",
            "rss_bytes",
            "state_overflow",
            "applied_lsn",
        ):
            s[field] = 0
        s["latency_us"] = 0.0
        s["role"] = int(role)
        s["state"] = int(SlotState.STARTING)
        s["instance_id"] = instance_id.encode()[:32]
        s["in_use"] = 1

    def release_slot(self, index: int) -> None:
        s = self.slots[index]
        s["in_use"] = 0
        s["state"] = int(SlotState.FREE)
        s["pid"] = 0

    # -- state region ------------------------------------------------------------------------

    @property
    def capacity(self) -> int:
        """Largest payload (bytes) one publish can hold."""
        return self.buffer_size - BUFFER_HEADER_SIZE

    def _buffer(self, index: int) -> tuple[np.void, int]:
        offset = self._buffers_offset + index * self.buffer_size
        header = np.frombuffer(self._mm, BUFFER_HEADER_DTYPE, 1, offset)[0]
        return header, offset + BUFFER_HEADER_SIZE

    def publish(
        self, matrix: np.ndarray[Any, Any], *, checksum: bool = True, unchanged_rows: int = 0
    ) -> int:
        """Publish a float32 matrix (rows x dim); return its version.

        ``unchanged_rows`` is the caller's promise that the first so many rows equal those of
        the matrix it published last (an append-only state passes the row count it
        published): the buffer written then already holds them, so only the rest is copied
        and its checksum is extended, not recomputed — a publish costs what was added, not
        the whole state. Raises :class:`ValueError` when the matrix does not fit: nothing is
        written past the end.
        """
        data = np.ascontiguousarray(matrix, dtype=np.float32)
        if data.ndim != 2:
            raise ValueError("publish takes a 2-D matrix (rows x dim)")
        if data.nbytes > self.capacity:
            raise ValueError(
                f"state of {data.nbytes} bytes does not fit the {self.capacity}-byte region "
                f"(raise shared_memory_size)"
            )
        rows, dim = data.shape
        self._same_rows = [min(same, unchanged_rows) for same in self._same_rows]
        st = self.state
        target = 1 - int(st["active"])
        header, payload_at = self._buffer(target)
        kept = self._same_rows[target] if int(header["dim"]) == dim else 0
        kept = min(kept, int(header["rows"]), rows)
        st["seq"] += 1  # odd: a publish is in progress (into the inactive buffer)
        dest = np.frombuffer(self._mm, np.float32, data.size, payload_at)
        dest[kept * dim :] = data[kept:].reshape(-1)
        crc = 0
        if checksum:
            whole = kept == int(header["rows"]) and self._crc_real[target]
            start = int(header["crc32"]) if whole else zlib.crc32(data[:kept].data)
            crc = zlib.crc32(data[kept:].data, start)
        version = int(self._buffer(1 - target)[0]["version"]) + 1
        header["version"] = version
        header["length"] = data.nbytes
        header["rows"], header["dim"] = rows, dim
        header["crc32"] = crc
        header["kind"] = 1
        header["published_ns"] = time.time_ns()
        st["active"] = target
        st["seq"] += 1  # even: published
        self._same_rows[target] = rows
        self._crc_real[target] = checksum
        return version

    def read(self, *, copy: bool = True, verify: bool = False, patience: float = 0.5) -> Published:
        """A consistent snapshot of the published matrix (``copy=False``: a zero-copy view,
        valid until :meth:`still_valid` says otherwise). Retries while a publish overlaps,
        yielding the CPU to the writer, for up to ``patience`` seconds."""
        st = self.state
        deadline = time.monotonic() + patience
        while time.monotonic() < deadline:
            s1 = int(st["seq"])
            if s1 & 1:
                os.sched_yield()  # a publish is in progress: let the writer finish
                continue
            header, payload_at = self._buffer(int(st["active"]) & 1)
            rows, dim = int(header["rows"]), int(header["dim"])
            version, crc = int(header["version"]), int(header["crc32"])
            if rows * dim * 4 > self.capacity:
                continue  # a header torn by a writer that lapped us: read again
            view = np.frombuffer(self._mm, np.float32, rows * dim, payload_at).reshape(rows, dim)
            matrix = view.copy() if copy else view
            crc_ok = (zlib.crc32(matrix.data) == crc) if verify else None
            if int(st["seq"]) - s1 <= 2:
                return Published(matrix, version, s1, crc_ok)
            os.sched_yield()
        raise ShmError(f"state region kept changing for {patience}s during the read")

    def still_valid(self, seq_at_read: int) -> bool:
        """For zero-copy readers: the buffer read at ``seq_at_read`` is not yet overwritten."""
        return int(self.state["seq"]) - seq_at_read <= 2

    @property
    def seq(self) -> int:
        return int(self.state["seq"])

    def buffer_header(self, index: int) -> np.void:
        """The header of state buffer ``index`` (0 or 1): version, shape, length, CRC, time."""
        return self._buffer(index)[0]


def _foreign(name: str, why: str) -> str:
    return (
        f"shared memory {name} exists but is not an osup-mp segment ({why}); "
        f"remove {shm_path(name)} if nothing uses it, or pick another shared_memory_name"
    )
