"""The layout of the shared-memory segment: header, slot table and state region as numpy
record types at fixed offsets, the slot roles and states, and the names of the segment.

Decision: the layout is a contract with every agent and with ``tools/shm_dump.py``, so it
is declared once, here, with explicit offsets and item sizes (never left to numpy's
packing), and versioned by ``LAYOUT_VERSION``: a reader of another version refuses the
segment instead of misreading it.
"""

from __future__ import annotations

import enum
import time

import numpy as np

MAGIC = b"OSUPSHM1"
LAYOUT_VERSION = 2
HEADER_SIZE = 128
SLOT_SIZE = 128
SLOT_COUNT = 64
# Reserved slots: the main agent's, and its hot standby's (shadows take the others).
MAIN_SLOT = 0
STANDBY_SLOT = 1
STATE_HEADER_SIZE = 64
BUFFER_HEADER_SIZE = 64

HEADER_DTYPE = np.dtype(
    {
        "names": [
            "magic",
            "version",
            "header_size",
            "total_size",
            "creator_pid",
            "slot_count",
            "slot_size",
            "epoch",
            "slots_offset",
            "state_offset",
            "state_size",
            "created_ns",
        ],
        "formats": [
            "S8",
            "<u4",
            "<u4",
            "<u8",
            "<i4",
            "<u4",
            "<u4",
            "<u8",
            "<u8",
            "<u8",
            "<u8",
            "<u8",
        ],
        "offsets": [0, 8, 12, 16, 24, 28, 32, 40, 48, 56, 64, 72],
        "itemsize": HEADER_SIZE,
    }
)

SLOT_DTYPE = np.dtype(
    {
        "names": [
            "in_use",
            "role",
            "state",
            "pid",
            "generation",
            "restarts",
            "instance_id",
            "hb_counter",
            "hb_agent_ns",
            "hb_frame_ns",
            "requests",
            "errors",
            "latency_us",
            "rss_bytes",
            "state_overflow",
            "applied_lsn",
        ],
        "formats": [
            "<u4",
            "u1",
            "u1",
            "<i4",
            "<u4",
            "<u4",
            "S32",
            "<u8",
            "<u8",
            "<u8",
            "<u8",
            "<u8",
            "<f8",
            "<u8",
            "<u8",
            "<u8",
        ],
        "offsets": [0, 4, 5, 8, 12, 16, 24, 56, 64, 72, 80, 88, 96, 104, 112, 120],
        "itemsize": SLOT_SIZE,
    }
)

STATE_HEADER_DTYPE = np.dtype(
    {
        "names": ["seq", "active", "buffer_size"],
        "formats": ["<u8", "<u8", "<u8"],
        "offsets": [0, 8, 16],
        "itemsize": STATE_HEADER_SIZE,
    }
)

BUFFER_HEADER_DTYPE = np.dtype(
    {
        "names": ["version", "length", "rows", "dim", "crc32", "kind", "published_ns"],
        "formats": ["<u8", "<u8", "<u4", "<u4", "<u4", "<u4", "<u8"],
        "offsets": [0, 8, 16, 20, 24, 28, 32],
        "itemsize": BUFFER_HEADER_SIZE,
    }
)


class Role(enum.IntEnum):
    NONE = 0
    MAIN = 1
    SHADOW = 2
    STANDBY = 3  # a hot standby of the main: follows its writes, serves nothing until promoted


class SlotState(enum.IntEnum):
    """Mirror of the agent manager's state machine, for readers of the segment."""

    FREE = 0
    STARTING = 1
    RUNNING = 2
    BACKOFF = 3
    STOPPING = 4
    EXITED = 5
    FATAL = 6


class ShmError(RuntimeError):
    """The segment is missing, foreign, of another layout version, or in use."""


def monotonic_ns() -> int:
    """CLOCK_MONOTONIC in ns: one clock for every process on the host."""
    return time.monotonic_ns()


def shm_path(name: str) -> str:
    return "/dev/shm/" + name.lstrip("/")
