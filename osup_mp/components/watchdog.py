"""The watchdog component: hung agents and shadows that break their resource limits.

Every ``heartbeat_interval`` it reads the heartbeat slots of the shared segment; an agent in
RUNNING whose newest heartbeat (from its shared-memory slot or, for agents that only send
frames, the one its manager stamped) is older than ``heartbeat_timeout`` is reported to its
manager, which kills and restarts it. A SIGSTOPped agent is therefore replaced within
timeout + one interval.

It also samples every shadow with psutil — RSS, CPU averaged over a window, open fds,
threads, wall time — against the ``[watchdog]`` limits. On a breach it asks the shadow's
manager to kill the shadow's process group and record the reason (``killed: rss 612 MB >
limit 512 MB``), which ``status`` (and later the evolution arbiter) shows; if the manager
does not answer, the watchdog kills the group itself. A hot standby is sampled like a
shadow (but for wall time); the main agent never is. ``setrlimit`` at spawn is the hard backstop.

Design decision: the watchdog is its own process and reads only shared memory, so a stuck
manager or agent cannot stop it from noticing; every report carries the agent generation,
so a report that races with a restart never kills the new agent.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from loguru import logger

from osup_mp.components.messages import HeartbeatTimeout, LimitExceeded, WatchdogKills
from osup_mp.config import Config
from osup_mp.lowlevel.limits import Sampler
from osup_mp.lowlevel.proc import signal_group
from osup_mp.runtime.calls import CallError
from osup_mp.runtime.component import Caller, Component, on_call, on_info
from osup_mp.storage.shm.segment import Role, SharedState, SlotState, monotonic_ns

_LIMITED = frozenset({Role.SHADOW, Role.STANDBY})  # roles sampled against the shadow limits


def manager_name(instance_id: str) -> str:
    return f"agent:{instance_id}"


@dataclass(frozen=True, slots=True)
class _Scan:
    """Time to scan the slots again."""


class Watchdog(Component):
    def __init__(self, cfg: Config, shm: SharedState) -> None:
        self.cfg = cfg
        self.shm = shm
        self.interval = cfg.o_supervisor.heartbeat_interval / 1000
        self.timeout_ns = cfg.o_supervisor.heartbeat_timeout * 1_000_000
        self._reported: set[tuple[int, int]] = set()  # (slot, generation) already acted on
        self.limits = cfg.watchdog.limits()
        self._samplers: dict[tuple[int, int], Sampler] = {}  # per (slot, generation)
        self.kills: deque[dict[str, Any]] = deque(maxlen=100)  # bounded: a long-lived tree

    def init(self) -> None:
        self.send_after(self.interval, _Scan())

    @on_info(_Scan)
    def _on_scan(self, msg: _Scan) -> None:
        self.scan()
        self.send_after(self.interval, _Scan())

    @on_call(WatchdogKills)
    def _on_kills(self, request: WatchdogKills, caller: Caller) -> list[Any]:
        return list(self.kills)

    def scan(self) -> None:
        now = monotonic_ns()
        live: set[tuple[int, int]] = set()
        for index, slot in enumerate(self.shm.slots):
            if not slot["in_use"] or not slot["pid"]:
                continue
            key = (index, int(slot["generation"]))
            live.add(key)
            if key in self._reported:
                continue
            state = int(slot["state"])
            if state == SlotState.RUNNING:
                beat = max(int(slot["hb_agent_ns"]), int(slot["hb_frame_ns"]))
                if beat and now - beat > self.timeout_ns:
                    self._report_hang(index, slot, (now - beat) / 1e6)
                    continue
            role = int(slot["role"])
            if role in _LIMITED and state in (SlotState.STARTING, SlotState.RUNNING):
                reason = self._check_limits(key, int(slot["pid"]), role == Role.SHADOW)
                if reason is not None:
                    self._enforce(index, slot, reason)
        self._reported &= live
        for key in list(self._samplers):
            if key not in live:
                del self._samplers[key]

    def _report_hang(self, index: int, slot: Any, age_ms: float) -> None:
        instance = _instance(slot)
        generation = int(slot["generation"])
        self._reported.add((index, generation))
        logger.warning(
            "agent {}: heartbeat is {:.0f} ms old (timeout {} ms)",
            instance,
            age_ms,
            self.cfg.o_supervisor.heartbeat_timeout,
        )
        try:
            self.peer(manager_name(instance)).call(HeartbeatTimeout(generation, age_ms, index))
        except CallError as exc:
            logger.error("watchdog: manager of {} did not take the report: {}", instance, exc)
            signal_group(int(slot["pid"]))

    def _check_limits(self, key: tuple[int, int], pid: int, timed: bool) -> str | None:
        """Why the process breaks a limit, or None; ``timed``: its wall time is limited too
        (a shadow's, not a standby's: a standby waits as long as the main lives)."""
        sampler = self._samplers.get(key)
        if sampler is None or sampler.pid != pid:
            sampler = self._samplers[key] = Sampler(self.limits, pid)
        return sampler.check(timed=timed)

    def _enforce(self, index: int, slot: Any, reason: str) -> None:
        instance = _instance(slot)
        generation = int(slot["generation"])
        pid = int(slot["pid"])
        self._reported.add((index, generation))
        self.kills.append({"id": instance, "pid": pid, "reason": reason, "at": time.time()})
        logger.warning("shadow {} (pid {}) {}", instance, pid, reason)
        try:
            self.peer(manager_name(instance)).call(LimitExceeded(generation, reason, index))
        except CallError as exc:
            logger.error(
                "watchdog: manager of {} did not answer ({}): killing it here", instance, exc
            )
            signal_group(pid)


def _instance(slot: Any) -> str:
    return bytes(slot["instance_id"]).decode(errors="replace")
