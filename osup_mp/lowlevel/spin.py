"""Adaptive busy polling: poll briefly before sleeping when the next message is due soon.

On a virtual machine, waking a process whose CPU has gone idle costs tens of microseconds —
the idle vCPU halts and the host has to schedule it back — which is more than a whole call
between two processes that stay awake. So a process that has just handled a message polls
its descriptors for a short while before it blocks, the way the kernel's ``busy_poll``
sockets and KVM's halt polling do.

Design decisions:

* The window adapts, as in KVM's halt polling: it grows (doubling, up to the configured
  maximum) when the previous wait ended within the maximum — an event came soon, so polling
  would have caught it — and halves when an event took longer, down to zero. A busy
  exchange therefore polls and an idle or sparse one sleeps at once, so an idle tree costs
  nothing and a lightly loaded one wastes at most a few windows before it stops polling.
* A poll that finds nothing yields the CPU (``sched_yield``), so a poller gives way to a
  process that shares its CPU — typically the very process it waits for. The scheduler
  still charges the poller for the time it burned, and a busier process sharing its CPU can
  end up waiting for its fair share: that is why SDK agents do not poll by default.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

DEFAULT_MAX_US = 200
_MIN_NS = 5_000  # the smallest window: below this a poll costs more than it saves

_max_ns = DEFAULT_MAX_US * 1000


def configure(max_us: int) -> None:
    """Set the maximum window for spinners made from now on (0 turns polling off). The tree
    calls this from its config before it forks, so every component inherits it."""
    global _max_ns
    _max_ns = max(0, max_us) * 1000


def max_us() -> int:
    return _max_ns // 1000


class Spinner:
    """The polling window of one waiting loop."""

    __slots__ = ("_max_ns", "window_ns")

    def __init__(self, max_us: int | None = None) -> None:
        self._max_ns = _max_ns if max_us is None else max(0, max_us) * 1000
        self.window_ns = 0

    def wait(self, block: Callable[[float | None], T], timeout: float | None) -> T:
        """Poll with ``block(0)`` until it returns something truthy or the window ends, then
        ``block(timeout)``; ``block`` waits at most its argument, in seconds."""
        clock = time.monotonic_ns
        if self.window_ns and timeout != 0:
            end = clock() + self.window_ns
            while True:
                found = block(0)
                if found:
                    self._grow()
                    return found
                if clock() >= end:
                    break
                os.sched_yield()
        if not self._max_ns or timeout == 0:
            return block(timeout)
        started = clock()
        found = block(timeout)
        if found and clock() - started + self.window_ns <= self._max_ns:
            self._grow()  # polling a little longer would have caught it
        else:
            self.window_ns = 0 if self.window_ns < 2 * _MIN_NS else self.window_ns // 2
        return found

    def _grow(self) -> None:
        self.window_ns = min(self._max_ns, max(_MIN_NS, self.window_ns * 2))
