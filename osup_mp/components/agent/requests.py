"""Requests to an agent: the data-plane socket, manager-side ids, answers, deadlines.

:class:`Requests` is the agent manager's request path: it owns the data-plane socket of the
main agent (``run_dir/agent-main.sock``), sends ``process_request`` frames with ids of its
own, matches the agent's ``response`` frames to them and fails what misses its deadline.

Design decisions:

* Who gets the answer is either a callback or, for the data plane's hot path, a
  ``(connection, request id)`` pair answered directly (no closure per request).
* When a data-plane client goes away, its requests still in flight leave the table at once
  (:meth:`RequestTable.drop_connection`); the agent's late answers to them are recognised
  and discarded quietly, and never reach a closed connection.
* Deadlines sit in a heap that is trimmed from the top as answers arrive, so it stays about
  as large as what is really in flight; one loop timer is armed for the earliest deadline,
  never one per request.
* Mirroring for shadow experiments costs the main path nothing until it is on, and then
  only for the requests drawn: their target is wrapped so that the caller gets the answer
  first, then a copy goes to the splitter over a connection whose backlog is bounded.
"""

from __future__ import annotations

import heapq
import itertools
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from loguru import logger

from osup_mp.components.agent.states import AgentState
from osup_mp.components.agent.timers import ExpireRequests
from osup_mp.components.messages import Mirrored
from osup_mp.runtime.calls import CallError
from osup_mp.runtime.control import Connection, ControlServer, Respond
from osup_mp.wire import digest
from osup_mp.wire.frames import ToAgent

if TYPE_CHECKING:
    from osup_mp.components.agent.lifecycle import AgentLifecycle

Target = Respond | tuple[Connection, Any]
MIRROR_BACKLOG = 4 << 20  # bytes queued to the splitter beyond which copies are dropped
_PROCESS_REQUEST = ToAgent.PROCESS_REQUEST.value  # a plain str: packed without a lookup


def deliver(target: Target, ok: bool, value: Any) -> None:
    if type(target) is tuple:
        target[0].answer(target[1], ok, value)
    else:
        target(ok, value)  # type: ignore[operator]


def discard(_ok: bool, _value: Any) -> None:
    """The target of a request whose client went away."""


class RequestTable:
    """Requests in flight by manager id (their target and data: a promoted standby is sent
    them again), and a heap of their deadlines."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._ids = itertools.count(1)
        self._in_flight: dict[int, tuple[Target, Any]] = {}
        self._deadlines: list[tuple[float, int]] = []
        # Ids whose client went away: their late answers are dropped without a warning.
        self._cancelled: set[int] = set()

    def __len__(self) -> int:
        return len(self._in_flight)

    def add(self, target: Target, deadline: float, data: Any = None) -> int:
        """A new id for ``target``, answered with an error after ``deadline`` (monotonic)."""
        req_id = next(self._ids)
        self._in_flight[req_id] = (target, data)
        heapq.heappush(self._deadlines, (deadline, req_id))
        return req_id

    def pop(self, req_id: Any) -> Target | None:
        """The target of ``req_id`` (None: unknown; :func:`discard` if it was cancelled)."""
        entry = self._in_flight.pop(req_id, None)
        target = None if entry is None else entry[0]
        if target is None and self._cancelled:
            try:
                self._cancelled.remove(req_id)
            except (KeyError, TypeError):
                pass
            else:
                target = discard
        heap = self._deadlines
        while heap and heap[0][1] not in self._in_flight:
            heapq.heappop(heap)
        return target

    def expire(self, reason: str) -> float | None:
        """Fail what is past its deadline; seconds until the next one (None: nothing left)."""
        now = self._clock()
        heap = self._deadlines
        while heap and (heap[0][0] <= now or heap[0][1] not in self._in_flight):
            _, req_id = heapq.heappop(heap)
            entry = self._in_flight.pop(req_id, None)
            if entry is not None:
                deliver(entry[0], False, reason)
            else:
                self._cancelled.discard(req_id)  # its client left; no answer came in time
        return max(0.0, heap[0][0] - now) if heap else None

    def drop_connection(self, conn: Connection) -> int:
        """Forget the requests of a closed data-plane connection; how many there were."""
        gone = [i for i, (t, _data) in self._in_flight.items() if type(t) is tuple and t[0] is conn]
        for req_id in gone:
            del self._in_flight[req_id]
        if len(self._cancelled) > 100_000:
            self._cancelled.clear()  # answers that never came: keep the set bounded
        self._cancelled.update(gone)
        return len(gone)

    def fail_all(self, reason: str) -> None:
        in_flight, self._in_flight = self._in_flight, {}
        self._deadlines.clear()
        self._cancelled.clear()  # the agent is gone: no late answer will come
        for target, _data in in_flight.values():
            deliver(target, False, reason)

    def unanswered(self) -> list[tuple[int, Any]]:
        """``(id, data)`` of every request in flight, oldest first."""
        return [(req_id, data) for req_id, (_target, data) in self._in_flight.items()]


class Requests:
    """The request path of one agent manager (see the module docstring)."""

    def __init__(self, manager: AgentLifecycle) -> None:
        self.manager = manager
        self.table = RequestTable()
        self.data_plane: ControlServer | None = None
        self._default_timeout = manager.cfg.agent.request_timeout / 1000
        self._timer: int | None = None
        self._timer_due = 0.0
        self.mirror_ratio = 0.0  # the share of read-only requests the splitter gets a copy of
        self.mirror_dropped = 0
        self.took_ms: float | None = None  # see send(timed=True)
        self.waited_ms: float | None = None

    def __len__(self) -> int:
        return len(self.table)

    def open_data_plane(self) -> None:
        m = self.manager
        self.data_plane = ControlServer(
            m.cfg.data_socket(m.instance_id),
            {"ping": lambda _args, respond: respond(True, "pong")},
            max_frame=m.cfg.agent.max_frame,
            direct={"request": self._data_request},
            label=f"data-plane (agent:{m.instance_id})",
        )
        self.data_plane.attach(lambda sock, r, w: m._loop.set_watch(sock.fileno(), r, w))
        self.data_plane.on_close = self._client_gone

    def send(
        self, data: Any, target: Target, timeout: float | None = None, timed: bool = False
    ) -> None:
        """Send one ``process_request``; the answer goes to ``target``. ``timed``: ask the
        agent how long it took (:attr:`took_ms` and :attr:`waited_ms` hold its figures while
        ``target`` is answered)."""
        m = self.manager
        if self.mirror_ratio and self._mirrors(data):
            target = self._tap(data, target)
        if m.state is not AgentState.RUNNING:
            deliver(target, False, f"agent {m.instance_id} is {m.state.value}, not RUNNING")
            return
        deadline = time.monotonic() + (timeout or self._default_timeout)
        req_id = self.table.add(target, deadline, data)
        if self._timer is None or deadline < self._timer_due:
            self._arm(deadline)
        frame = {"type": _PROCESS_REQUEST, "id": req_id, "data": data}
        if timed:
            frame["timed"] = True
        m.pipes.queue(frame)

    def _mirrors(self, data: Any) -> bool:
        """Eligible (a read-only op the agent declared) and drawn for mirroring."""
        return (
            type(data) is dict
            and data.get("op") in self.manager.read_only
            and random.random() < self.mirror_ratio
        )

    def _tap(self, data: Any, target: Target) -> Respond:
        """``target``, then a copy to the splitter: the caller is answered first, and the
        copy is dropped (counted) when the splitter's connection is backed up."""
        m, sent = self.manager, time.monotonic()

        def answered(ok: bool, value: Any) -> None:
            deliver(target, ok, value)
            latency_ms = (time.monotonic() - sent) * 1000
            lsn = m.durability.applied_lsn if m.durability.settled else None
            splitter = m.peer("splitter")
            try:
                if splitter.mux().channel.backlog > MIRROR_BACKLOG:
                    self.mirror_dropped += 1
                    return
            except CallError:
                self.mirror_ratio = 0.0  # no splitter: stop until one says otherwise
                return
            answer = digest(value) if ok else None
            full = value if ok and m.cfg.evolution.compare else None  # for the compare hook
            splitter.cast(Mirrored(data, ok, answer, latency_ms, lsn, full))

        return answered

    def on_response(self, msg: dict[str, Any]) -> None:
        m = self.manager
        target = self.table.pop(msg.get("id"))
        if target is None:
            logger.warning("agent {}: response to unknown id {!r}", m.instance_id, msg.get("id"))
            return
        ok = "error" not in msg
        value = msg.get("data") if ok else msg.get("error")
        if m.durability.settled:
            # A timed request's own handling time, and how much of it went waiting for a CPU
            self.took_ms, self.waited_ms = msg.get("took_ms"), msg.get("waited_ms")
            deliver(target, ok, value)  # nothing it wrote is still on its way to the WAL
            self.took_ms = self.waited_ms = None
            return
        # Released only once every WAL entry the agent wrote before it is durable.
        gone = f"agent {m.instance_id} exited before its changes were durable"
        m.durability.after_wal(
            lambda lsn: deliver(target, *((ok, value) if lsn is not None else (False, gone)))
        )

    def on_timer(self) -> None:
        self._timer = None
        nxt = self.table.expire(f"agent {self.manager.instance_id} did not answer in time")
        if nxt is not None:
            self._arm(time.monotonic() + nxt)

    def fail_all(self, reason: str) -> None:
        self.table.fail_all(reason)

    def resend(self) -> int:
        """Send every unanswered request again (to a promoted standby), under its id; how
        many there were. None was acknowledged, so none was answered twice."""
        pending = self.table.unanswered()
        queue = self.manager.pipes.queue
        for req_id, data in pending:
            queue({"type": _PROCESS_REQUEST, "id": req_id, "data": data})
        return len(pending)

    def flush(self) -> None:
        if self.data_plane is not None:
            self.data_plane.flush()

    def close(self) -> None:
        if self.data_plane is not None:
            self.data_plane.shutdown()

    def _arm(self, deadline: float) -> None:
        m = self.manager
        if self._timer is not None:
            m.cancel_timer(self._timer)
        self._timer_due = deadline
        self._timer = m.send_after(max(0.0, deadline - time.monotonic()), ExpireRequests())

    def _client_gone(self, conn: Connection) -> None:
        dropped = self.table.drop_connection(conn)
        if dropped:
            logger.info(
                "agent {}: data-plane client pid {} left with {} requests in flight; "
                "their answers will be discarded",
                self.manager.instance_id,
                conn.pid,
                dropped,
            )

    def _data_request(self, conn: Connection, req_id: Any, args: dict[str, Any]) -> None:
        timeout = args.get("timeout")
        self.send(args.get("data"), (conn, req_id), float(timeout) if timeout else None)
