"""How the manager knows an agent lives and how it does: heartbeats (as frames, and stamped
in the agent's shared-memory slot by a heartbeat thread), the periodic ``metrics`` and the
figures behind them. A mixin of :class:`osup_mp.agent.sdk.Agent`.

Decision: liveness does not depend on how busy the agent is. With a shared-memory slot, a
small daemon thread stamps the slot's heartbeat (``hb_agent_ns``, ``hb_counter``) on a
timer, also while a long batch of requests runs; it stops stamping when the main loop has
made no progress (no message handled, no loop turn) for ``OSUP_STALL_TIMEOUT_MS`` (default
30 s), so an agent stuck in one handler is still reported hung. Heartbeat frames still leave
between batches (managers without shared memory rely on them).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from osup_mp.agent.process import rss_bytes
from osup_mp.wire.frames import FromAgent

if TYPE_CHECKING:
    from osup_mp.agent.options import AgentOptions

__all__ = ["Liveness", "Window"]


class Window:
    """Request figures since the last metrics report."""

    __slots__ = ("errors", "latency_total", "requests", "started")

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.latency_total = 0.0
        self.started = time.monotonic()


class Liveness:
    """Heartbeats, metrics and the shared-memory slot; see the module docstring."""

    # What this mixin uses of the agent (sdk.Agent sets and defines them).
    options: AgentOptions
    shm: Any
    _slot: Any
    _stop: bool
    _ready_sent: bool
    _progress: int  # bumped by the main loop; the heartbeat thread watches it
    _beater: threading.Thread | None
    _timers: dict[str, float]
    _window: Window

    if TYPE_CHECKING:

        def send(self, msg: Mapping[str, Any]) -> None: ...
        def log(self, text: str) -> None: ...

    def _attach_shm(self) -> None:
        if self.options.shm_name is None or self.options.shm_slot is None:
            return
        from osup_mp.storage.shm.segment import SharedState, ShmError

        try:
            self.shm = SharedState.attach(self.options.shm_name)
        except ShmError as exc:
            self.log(f"shared memory unavailable, heartbeats by frame only: {exc}")
            return
        self._slot = self.shm.slot(self.options.shm_slot)

    def _run_timers(self) -> None:
        now = time.monotonic()
        # No heartbeat before ready: a seed-style manager would take it for "ready", and a
        # restore must finish within the ready timeout, not race the heartbeat timeout.
        if self._ready_sent and now >= self._timers.get("heartbeat", now + 1):
            self._heartbeat()
            self._timers["heartbeat"] = now + self.options.heartbeat_interval
        if now >= self._timers.get("metrics", now + 1):
            self.send({"type": FromAgent.METRICS, "data": self.metrics()})
            self._timers["metrics"] = now + self.options.metrics_interval

    def _heartbeat(self) -> None:
        self.send({"type": FromAgent.HEARTBEAT.value, "timestamp": time.time()})
        slot = self._slot
        if slot is not None and self._beater is None:  # else the thread is the one writer
            slot["hb_agent_ns"] = time.monotonic_ns()
            slot["hb_counter"] += 1

    def _start_heartbeat_thread(self) -> None:
        if self._slot is None or self._beater is not None:
            return
        self._beater = threading.Thread(
            target=self._beat_forever, name="osup-heartbeat", daemon=True
        )
        self._beater.start()

    def _beat_forever(self) -> None:
        """The heartbeat thread: stamp the slot every interval while the loop progresses."""
        interval = self.options.heartbeat_interval
        seen, seen_at = -1, time.monotonic()
        while not self._stop:
            now = time.monotonic()
            if self._progress != seen:
                seen, seen_at = self._progress, now
            # No heartbeat before ready (see _run_timers), none once the loop is stuck.
            if self._ready_sent and now - seen_at <= self.options.stall_timeout:
                slot = self._slot  # a promotion moves it
                slot["hb_agent_ns"] = time.monotonic_ns()
                slot["hb_counter"] += 1
            time.sleep(interval / 2)  # twice per interval: a late wake-up is still in time

    def metrics(self) -> dict[str, Any]:
        """The seed's metrics over the last window; also written to the shm slot."""
        window, self._window = self._window, Window()
        elapsed = max(time.monotonic() - window.started, 1e-9)
        avg_ms = window.latency_total / window.requests * 1000 if window.requests else 0.0
        rss = rss_bytes()
        slot = self._slot
        if slot is not None:
            slot["requests"] += window.requests
            slot["errors"] += window.errors
            slot["latency_us"] = avg_ms * 1000
            slot["rss_bytes"] = rss
        return {
            "avg_latency": avg_ms,
            "error_rate": window.errors / window.requests if window.requests else 0.0,
            "memory_usage": rss,
            "throughput": window.requests / elapsed,
            "requests": window.requests,
        }
