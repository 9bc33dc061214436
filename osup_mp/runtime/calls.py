"""Calls with correlation ids over a :class:`~osup_mp.runtime.channel.Channel`.

A :class:`CallMux` owns the client side of one channel: it numbers outgoing calls, keeps the
ones in flight, and matches replies to them by id, so any number of calls can be pipelined on
one connection. Replies may be consumed two ways — a blocking :meth:`CallMux.call` (OTP's
``gen_server:call``) or a callback registered with :meth:`CallMux.call_async` that the owner's
event loop fires — and both share the same bookkeeping. Deadlines live in a heap so expiring
them costs O(log n), however many calls are in flight.

Message shapes on the wire (tuples, pickled by the channel):
``("call", id, request)``, ``("cast", request)``, ``("reply", id, ok, value)``.
"""

from __future__ import annotations

import heapq
import itertools
import select
import time
from collections.abc import Callable
from typing import Any

from osup_mp.lowlevel.spin import Spinner
from osup_mp.runtime.channel import Channel, ChannelClosed

ReplyCallback = Callable[[bool, Any], None]
_MISSING: Any = object()


class CallError(RuntimeError):
    """A call failed: the callee raised, exited, or did not answer in time."""


class CallTimeout(CallError, TimeoutError):
    pass


class CallInterrupted(CallError):
    """A blocking call was abandoned because the process is shutting down."""


class CallMux:
    """Client side of a channel: pipelined calls correlated by id."""

    #: Blocking calls made in this process: the owner's loop looks for deferred messages
    #: only after this changed, not on every wake-up.
    blocking_calls = 0

    def __init__(self, channel: Channel, peer: str) -> None:
        self.channel = channel
        self.peer = peer
        self._ids = itertools.count(1)
        self._pending: dict[int, ReplyCallback | None] = {}
        self._results: dict[int, tuple[bool, Any]] = {}
        self._deadlines: list[tuple[float, int]] = []
        # Calls, casts and info that arrived on this channel while a blocking call waited:
        # the owner's loop handles them next (dropping them would lose e.g. the parent's calls).
        self.deferred: list[Any] = []
        self._spinner = Spinner()
        # Set by the owner's loop: a blocking call also wakes on this fd (the signal wakeup
        # fd) and gives up when ``interrupted()`` says so — SIGTERM is never left waiting
        # for a slow peer. ``interrupted`` also consumes what woke the fd.
        self.interrupt_fd: int | None = None
        self.interrupted: Callable[[], bool] = lambda: False
        # Set by the owner's loop: told when a call with a deadline is made, so that the
        # loop expires the calls of this mux, not of every mux, after each wake-up.
        self.on_deadline: Callable[[CallMux], object] | None = None

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def cast(self, request: Any) -> None:
        self.channel.send(("cast", request))

    def call_async(
        self,
        request: Any,
        callback: ReplyCallback,
        timeout: float | None = 5.0,
        *,
        fds: list[int] | None = None,
    ) -> int:
        """Queue a call (with ``fds`` attached); ``callback(ok, value)`` runs when the reply,
        an error or the timeout arrives. The caller's loop must flush the channel and feed
        replies to :meth:`dispatch`."""
        call_id = next(self._ids)
        self._pending[call_id] = callback
        if timeout is not None:
            heapq.heappush(self._deadlines, (time.monotonic() + timeout, call_id))
            if self.on_deadline is not None:
                self.on_deadline(self)
        self._send(("call", call_id, request), fds)
        return call_id

    def _send(self, msg: tuple[Any, ...], fds: list[int] | None) -> None:
        # A channel that closed meanwhile fails the call when its end is read (fail_all).
        if fds is None:
            self.channel.send(msg)
        else:
            self.channel.send_with_fds(msg, fds)

    def call(
        self, request: Any, timeout: float | None = 5.0, *, fds: list[int] | None = None
    ) -> Any:
        """Blocking call: send (with ``fds`` attached), then wait for the matching reply.
        Other replies that arrive meanwhile go to their callbacks; anything else waits in
        :attr:`deferred` for the owner's loop. Raises :class:`CallError` on failure."""
        if self.channel.closed:
            raise CallError(f"{self.peer}: not connected")
        call_id = next(self._ids)
        self._pending[call_id] = None
        self._send(("call", call_id, request), fds)
        CallMux.blocking_calls += 1
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            self.channel.flush_blocking(timeout)
            while call_id not in self._results:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise CallTimeout(f"call to {self.peer} timed out after {timeout}s")
                if self._spinner.wait(self._wait, remaining):
                    self.deferred += self.dispatch(self.channel.receive())
                    if self.channel.closed and call_id not in self._results:
                        self.fail_all(f"{self.peer} exited")
        finally:
            self._pending.pop(call_id, None)
        ok, value = self._results.pop(call_id)
        if not ok:
            raise value if isinstance(value, CallError) else CallError(f"{self.peer}: {value}")
        return value

    def _wait(self, timeout: float | None) -> bool:
        """Wait for the channel (True) or the interrupt fd; raise if interrupted."""
        fd = self.channel.fileno()
        if self.interrupt_fd is None:
            return self.channel.wait_readable(timeout)
        poller = select.poll()  # not select(): it fails for descriptors above 1023
        poller.register(fd, select.POLLIN)
        poller.register(self.interrupt_fd, select.POLLIN)
        ready = poller.poll(None if timeout is None else max(0.0, timeout) * 1000)
        readable = {ready_fd for ready_fd, _events in ready}
        if self.interrupt_fd in readable and self.interrupted():
            raise CallInterrupted(f"call to {self.peer} abandoned: shutting down")
        return fd in readable

    def dispatch(self, messages: list[Any]) -> list[Any]:
        """Consume the replies among ``messages``; return the rest (calls, casts, info)."""
        rest: list[Any] = []
        for msg in messages:
            if type(msg) is tuple and msg and msg[0] == "reply":
                # A reply that carried file descriptors has them appended: (value, fds).
                value = msg[3] if len(msg) == 4 else (msg[3], msg[4])
                self._resolve(msg[1], msg[2], value)
            else:
                rest.append(msg)
        return rest

    def _resolve(self, call_id: int, ok: bool, value: Any) -> None:
        callback = self._pending.get(call_id, _MISSING)
        if callback is _MISSING:
            return  # timed out earlier: a late reply is dropped on purpose
        if callback is None:
            self._results[call_id] = (ok, value)  # the blocking caller collects it
        else:
            del self._pending[call_id]
            callback(ok, value)

    def expire(self, now: float | None = None) -> float | None:
        """Fail calls past their deadline; return seconds until the next deadline."""
        now = time.monotonic() if now is None else now
        heap = self._deadlines
        while heap and (heap[0][0] <= now or heap[0][1] not in self._pending):
            _deadline, call_id = heapq.heappop(heap)
            if call_id in self._pending and call_id not in self._results:
                callback = self._pending.pop(call_id)
                if callback is not None:
                    callback(False, CallTimeout(f"call to {self.peer} timed out"))
        return heap[0][0] - now if heap else None

    def fail_all(self, reason: str) -> None:
        """The peer is gone: every call in flight fails with ``reason``."""
        for call_id, callback in list(self._pending.items()):
            if call_id in self._results:
                continue
            if callback is None:
                self._results[call_id] = (False, CallError(reason))
            else:
                del self._pending[call_id]
                callback(False, CallError(reason))
        self._deadlines.clear()


__all__ = [
    "CallError",
    "CallInterrupted",
    "CallMux",
    "CallTimeout",
    "ChannelClosed",
    "ReplyCallback",
]
