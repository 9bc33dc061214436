"""Recordings of live read-only traffic: a sample of the main agent's requests, kept by the
traffic splitter until a client takes them (``osup-mp traffic record`` writes them to a
JSONL file, a workload for ``osup-mp evolve``).

The one decision: a recording is a bounded buffer drained by its client, not a store. The
client takes what was kept every fraction of a second and writes it out; the splitter keeps
at most ``BUFFER_BYTES`` between takes (more is dropped and counted, never queued), so a slow
or vanished client costs a bounded amount of memory, and a recording nobody has taken from
for ``ABANDONED`` seconds is dropped altogether. Pure: the clock is passed in.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack

BUFFER_BYTES = 4 << 20  # kept between two takes, at most
PAGE_BYTES = 512 << 10  # given per take: a control frame holds it with room to spare
ABANDONED = 30.0  # s without a take after which the recording is dropped


@dataclass(slots=True)
class Recording:
    """One recording: what it asked for and what it has kept so far."""

    id: str
    share: float  # of the main's read-only requests
    count: int  # requests to keep in all
    deadline: float  # monotonic: it keeps nothing after this
    taken_at: float  # monotonic: its client's last take
    kept: int = 0
    offered: int = 0  # copies it drew
    dropped: int = 0  # drawn but the buffer was full (its client is not taking)
    too_large: int = 0  # a request larger than a page: it cannot be taken
    stopped: bool = False
    buffer: deque[tuple[Any, int]] = field(default_factory=deque)  # (request, its size)
    buffered: int = 0  # bytes in buffer

    def active(self, now: float) -> bool:
        """Still keeping requests."""
        return not self.stopped and self.kept < self.count and now < self.deadline

    def offer(
        self, data: Any, now: float, draw: float, roll: Callable[[], float] = random.random
    ) -> None:
        """A copy of a read-only request, drawn at the splitter's highest share: keep it
        with probability ``share / draw`` (``draw`` is that highest share)."""
        if not self.active(now) or (self.share < draw and roll() >= self.share / draw):
            return
        self.offered += 1
        size = len(msgpack.packb(data, default=repr))
        if size > PAGE_BYTES:
            self.too_large += 1
        elif self.buffered + size > BUFFER_BYTES:
            self.dropped += 1
        else:
            self.buffer.append((data, size))
            self.buffered += size
            self.kept += 1

    def take(self, now: float) -> tuple[list[Any], bool]:
        """Up to a page of what was kept, oldest first, and whether more is buffered."""
        self.taken_at = now
        page: list[Any] = []
        size = 0
        while self.buffer and (not page or size + self.buffer[0][1] <= PAGE_BYTES):
            data, item = self.buffer.popleft()
            page.append(data)
            size += item
        self.buffered -= size
        return page, bool(self.buffer)

    def finished(self, now: float) -> bool:
        """Done keeping and everything taken: it can go."""
        return not self.active(now) and not self.buffer

    def abandoned(self, now: float) -> bool:
        return now - self.taken_at > ABANDONED

    def figures(self, now: float) -> dict[str, Any]:
        return {
            "id": self.id, "share": self.share, "count": self.count, "kept": self.kept,
            "offered": self.offered, "dropped": self.dropped, "too_large": self.too_large,
            "active": self.active(now), "seconds_left": max(0.0, self.deadline - now),
        }  # fmt: skip
