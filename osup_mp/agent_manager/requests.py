"""Requests in flight to an agent: manager-side ids, answers matched by id, deadlines.

Who gets the answer is either a callback or, for the data plane's hot path, a
``(connection, request id)`` pair answered directly (no closure per request). Deadlines sit
in a heap that is trimmed from the top as answers arrive, so it stays about as large as what
is really in flight however long the timeout is.
"""

from __future__ import annotations

import heapq
import itertools
import time
from typing import Any

from osup_mp.runtime.control import Connection, Respond

Target = Respond | tuple[Connection, Any]


def deliver(target: Target, ok: bool, value: Any) -> None:
    if type(target) is tuple:
        target[0].answer(target[1], ok, value)
    else:
        target(ok, value)  # type: ignore[operator]


class RequestTable:
    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._in_flight: dict[int, Target] = {}
        self._deadlines: list[tuple[float, int]] = []

    def __len__(self) -> int:
        return len(self._in_flight)

    def add(self, target: Target, deadline: float) -> int:
        """A new id for ``target``, answered with an error after ``deadline`` (monotonic)."""
        req_id = next(self._ids)
        self._in_flight[req_id] = target
        heapq.heappush(self._deadlines, (deadline, req_id))
        return req_id

    def pop(self, req_id: Any) -> Target | None:
        target = self._in_flight.pop(req_id, None)
        heap = self._deadlines
        while heap and heap[0][1] not in self._in_flight:
            heapq.heappop(heap)
        return target

    def expire(self, reason: str) -> float | None:
        """Fail what is past its deadline; seconds until the next one (None: nothing left)."""
        now = time.monotonic()
        heap = self._deadlines
        while heap and (heap[0][0] <= now or heap[0][1] not in self._in_flight):
            _, req_id = heapq.heappop(heap)
            target = self._in_flight.pop(req_id, None)
            if target is not None:
                deliver(target, False, reason)
        return max(0.0, heap[0][0] - now) if heap else None

    def fail_all(self, reason: str) -> None:
        in_flight, self._in_flight = self._in_flight, {}
        self._deadlines.clear()
        for target in in_flight.values():
            deliver(target, False, reason)
