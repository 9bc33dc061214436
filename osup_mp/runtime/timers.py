"""Deadlines for a single-threaded event loop: a heap of callbacks that can be cancelled.

The supervisor drives every child start and stop as steps of its one loop; a start timeout
or a SIGKILL escalation is a timer here, never a nested wait. Cancelling only marks the
entry (removing from the middle of a heap costs O(n)); marked entries are dropped when they
reach the top.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(order=True, slots=True)
class Timer:
    """One scheduled callback; :meth:`cancel` it to make it a no-op."""

    when: float
    seq: int
    callback: Callable[[], None] = field(compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        self.cancelled = True


class Timers:
    """A heap of :class:`Timer`; the loop asks :meth:`timeout` and calls :meth:`run_due`."""

    def __init__(self) -> None:
        self._heap: list[Timer] = []
        self._seq = itertools.count()

    def at(self, when: float, callback: Callable[[], None]) -> Timer:
        """Call ``callback`` once the loop's clock passes ``when``."""
        timer = Timer(when, next(self._seq), callback)
        heapq.heappush(self._heap, timer)
        return timer

    def timeout(self, now: float) -> float | None:
        """Seconds until the next live timer is due (0 if overdue), None if there is none."""
        heap = self._heap
        while heap and heap[0].cancelled:
            heapq.heappop(heap)
        return max(0.0, heap[0].when - now) if heap else None

    def run_due(self, now: float) -> None:
        """Run every live timer due at ``now``, earliest first. A callback may add timers;
        those due already run in this same call."""
        heap = self._heap
        while heap and (heap[0].cancelled or heap[0].when <= now):
            timer = heapq.heappop(heap)
            if not timer.cancelled:
                timer.cancelled = True  # a timer fires once
                timer.callback()

    def __len__(self) -> int:
        return sum(1 for t in self._heap if not t.cancelled)
