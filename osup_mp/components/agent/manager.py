"""The agent manager component: one per agent instance.

It spawns the agent executable (see :mod:`.launch` for the contract), speaks framed
MessagePack on the agent's stdin/stdout, logs its stderr tagged with the instance name, and
keeps it alive: a crash, a hang reported by the watchdog, a malformed frame or a missed ready
deadline kills the agent and starts it again — at once if it had started up, with backoff
in a crash loop (:mod:`.restarts`) — until too many failed starts make it FATAL.

Design decisions:

* The manager never blocks on the agent: stdout, stderr and a pidfd are watched by the
  component loop, and output to the agent is batched into one write per loop wake-up. Nor
  on the vault and the WAL when an agent restarts: its restore is planned through the loop
  (:mod:`.planning`).
* Requests are pipelined: each gets a manager-side id, many are in flight at once, and the
  agent's ``response`` frames are matched by id (:mod:`.requests`, which also runs the main
  agent's data-plane socket ``run_dir/agent-main.sock`` until the traffic splitter exists).
* The agent runs in its own session (process group) with ``PR_SET_PDEATHSIG``: killing the
  group takes everything it spawned, and the agent dies with its manager.
* Durability (WAL forwarding, response release, checkpoints, restore) is :mod:`.durability`.
* A main agent may have a hot standby (:mod:`.standby`): on the main's death the manager
  promotes it in place of a restart, and re-sends it the requests left unanswered.
* The class is built in layers, one concern per module: :mod:`.lifecycle` (the agent
  process: spawn, ready, stop, pipes, deadlines), :mod:`.recovery` (what an exit leads to),
  this module (the component: its start, its stop, the messages it serves and its status);
  :mod:`.frames` says what each frame from the agent does.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from functools import partial
from typing import Any

from loguru import logger

from osup_mp.components.agent.launch import NO_DEADLINES
from osup_mp.components.agent.recovery import AgentRecovery
from osup_mp.components.agent.states import AgentState
from osup_mp.components.agent.timers import (
    CheckpointTick,
    ExpireRequests,
    StandbyReadyDeadline,
    StandbySpawn,
)
from osup_mp.components.messages import (
    AgentRequest,
    AgentStatus,
    CreateCheckpoint,
    EvolutionResult,
    FollowLost,
    HeartbeatTimeout,
    HotReload,
    LimitExceeded,
    LoadedCode,
    MirrorRequest,
    RestartAgent,
    RestoreFrom,
    Revert,
    SetMirror,
    WalEntries,
)
from osup_mp.lowlevel.proc import become_subreaper, lower_priority, pin_cpus
from osup_mp.runtime.calls import CallError
from osup_mp.runtime.component import NOREPLY, Caller, on_call, on_cast, on_info
from osup_mp.runtime.messages import PeerDown
from osup_mp.storage.shm.segment import Role, monotonic_ns
from osup_mp.wire.frames import ToAgent

S = AgentState


class AgentManager(AgentRecovery):
    """The agent manager component; see the module docstring."""

    # -- component callbacks -----------------------------------------------------------------

    def init(self) -> None:
        # First, so that the agent, its standby and this process's threads inherit it.
        main = self.role == "main"
        pin_cpus(self.cfg.agent.main_cpus if main else self.cfg.watchdog.shadow_cpus)
        if not main:  # a shadow's manager relays experiment work: the main's spare cycles
            lower_priority(self.cfg.watchdog.shadow_nice)
        # Orphans of the agent (double forks, setsid daemons) re-parent here, so each exit
        # of the agent can kill and reap everything it left behind.
        become_subreaper()
        notices, self.notify_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        # A life-lock waiter wakes holding no GIL: it must get it within 0.1 ms of a death,
        # not the default 5 ms while this loop polls. No thread competes for it otherwise.
        sys.setswitchinterval(1e-4)
        self.watch_fd(notices, partial(self._on_life_notices, notices))
        role = Role.MAIN if main else Role.SHADOW
        self.shm.claim_slot(self.slot_index, role, self.instance_id)
        self.slot = self.shm.slot(self.slot_index)
        if main:
            self.requests.open_data_plane()
        try:
            self._spawn(wait=True)
            self._await_first_ready()
        except BaseException:
            # As in OTP, a failed init gets no terminate: undo here what it got to (the
            # agent, its data-plane socket file, the slot), or a failed start leaves them.
            self.terminate("init failed")
            raise
        if self.durability.durable and self.cfg.vault.checkpoint_interval:
            self.send_after(self.cfg.vault.checkpoint_interval / 1000, CheckpointTick())
        if self.standby is not None:
            self.standby.start()

    def _await_first_ready(self) -> None:
        """Start-up is ordered: this component is up only when its agent is ready, and an
        agent that cannot get ready the first time fails the start with the reason."""
        deadline = time.monotonic() + self.cfg.agent.ready_timeout / 1000
        while self.state is S.STARTING:
            self._flush()  # first: the restore frames must be on their way before we wait
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._signal(signal.SIGKILL)
                raise RuntimeError(
                    f"agent {self.instance_id} not ready within {self.cfg.agent.ready_timeout} ms"
                )
            self._loop.wait_on(self._agent_fds(), remaining)
        if self.state is not S.RUNNING:
            tail = self.pipes.stderr_tail
            last = f"; agent stderr: {tail[-1]}" if tail else ""
            why = f"{self.fail_reason}{last}"
            raise RuntimeError(f"agent {self.instance_id} failed to start: {why}")

    def _agent_fds(self) -> set[int]:
        return self.agent.fds() if self.agent is not None else set()

    def terminate(self, reason: str) -> None:
        self._cancel_plan()
        if self.standby is not None:
            self.standby.stop()
        agent = self.agent
        if agent is not None:
            agent.signal(signal.SIGTERM)
            try:
                agent.proc.wait(self.cfg.agent.stop_timeout / 1000)
            except subprocess.TimeoutExpired:
                logger.warning(
                    "agent {}: did not stop within {} ms of SIGTERM; sent SIGKILL",
                    self.instance_id,
                    self.cfg.agent.stop_timeout,
                )
                agent.signal()
                agent.proc.wait()
            agent.signal()  # what is left of its process group
        self.kill_leftovers(wait=True)
        self.dying.reap_all()
        self._fail_requests("agent manager stopping")
        self.requests.close()
        self.shm.release_slot(self.slot_index)

    def after_events(self) -> None:
        self.durability.flush()
        self._flush()
        if self.standby is not None:
            self.standby.flush()
        self.requests.flush()

    @on_call(AgentStatus)
    def _on_status(self, request: AgentStatus, caller: Caller) -> dict[str, Any]:
        return self.status()

    @on_call(AgentRequest)
    def _on_request(self, request: AgentRequest, caller: Caller) -> Any:
        self.requests.send(request.data, lambda ok, v: self._answer(caller, ok, v), request.timeout)
        return NOREPLY

    @on_call(MirrorRequest)
    def _on_mirror_request(self, request: MirrorRequest, caller: Caller) -> Any:
        lsn = self.durability.applied_lsn if self.follower is None else self.follower.applied_lsn
        sent = time.monotonic()

        def answered(ok: bool, value: Any) -> None:
            latency_ms = (time.monotonic() - sent) * 1000
            # The agent's own figures, when it gives them: its handling, and its waits for
            # a CPU meanwhile
            handled, waited = self.requests.took_ms, self.requests.waited_ms
            answer = {"ok": ok, "value": value, "latency_ms": latency_ms, "lsn": lsn}
            self.reply(caller, answer | {"handled_ms": handled, "waited_ms": waited})

        self.requests.send(request.data, answered, request.timeout, timed=True)
        return NOREPLY

    @on_cast(SetMirror)
    def _on_set_mirror(self, request: SetMirror) -> None:
        self.requests.mirror_ratio = min(1.0, max(0.0, float(request.ratio)))

    @on_call(HotReload)
    def _on_hot_reload(self, request: HotReload, caller: Caller) -> Any:
        self._require_running()
        if not isinstance(request.code, str):
            raise CallError("hot_reload needs the module's source code as text")
        self.code.reload(caller, request.code, request.module)
        return NOREPLY

    @on_call(LoadedCode)
    def _on_loaded_code(self, request: LoadedCode, caller: Caller) -> dict[str, str]:
        return self.code.current()

    @on_call(Revert)
    def _on_revert(self, request: Revert, caller: Caller) -> dict[str, Any]:
        restart = self.code.revert(request.module)
        logger.warning(
            "agent {}: reverting {}{}",
            self.instance_id,
            request.module,
            ": restarting the agent on its own code" if restart else " to its previous source",
        )
        if restart:
            self._operator_restart()
        return {"module": request.module, "restarted": restart}

    @on_cast(EvolutionResult)
    def _on_evolution_result(self, request: EvolutionResult) -> None:
        result = {"type": ToAgent.EVOLUTION_RESULT, "id": request.id, "success": request.success}
        extra = {"verdict": request.verdict, "experiment": request.experiment}
        if self.agent is not None:
            self.send_agent(result | extra | {"reason": request.reason, "error": None})

    @on_call(RestartAgent)
    def _on_restart(self, request: RestartAgent, caller: Caller) -> bool:
        self._operator_restart()
        return True

    @on_call(CreateCheckpoint)
    def _on_checkpoint(self, request: CreateCheckpoint, caller: Caller) -> Any:
        self._require_running()
        if not self.durability.durable:
            raise CallError(f"agent {self.instance_id} is a shadow: shadows are not durable")
        self.durability.create(caller)
        return NOREPLY

    @on_call(RestoreFrom)
    def _on_restore_from(self, request: RestoreFrom, caller: Caller) -> dict[str, Any]:
        if not self.durability.durable:
            raise CallError("only the main agent restores from checkpoints")
        self.durability.pinned = request.id
        self._operator_restart()
        return {"restarting": self.instance_id, "checkpoint_id": request.id}

    @on_call(HeartbeatTimeout)
    def _on_heartbeat_timeout(self, request: HeartbeatTimeout, caller: Caller) -> bool:
        if self._standby_report(request.slot):
            assert self.standby is not None
            self.standby.on_report(
                request.generation, f"heartbeat timeout: no heartbeat for {request.age_ms:.0f} ms"
            )
        elif request.generation == self.generation and self.state is S.RUNNING:
            self.kill_for(f"heartbeat timeout: no heartbeat for {request.age_ms:.0f} ms")
        return True

    @on_call(LimitExceeded)
    def _on_limit_exceeded(self, request: LimitExceeded, caller: Caller) -> bool:
        if self._standby_report(request.slot):
            assert self.standby is not None
            logger.warning("agent {}: standby {}", self.instance_id, request.reason)
            self.standby.on_report(request.generation, request.reason)
        elif (
            request.generation == self.generation
            and self.state in (S.STARTING, S.RUNNING)
            and self.agent is not None  # else it was about the dead one; another is planned
        ):
            logger.warning("agent {}: {}", self.instance_id, request.reason)
            self.last_kill_reason = request.reason
            self._stop_agent(kill=True)
        return True

    def _standby_report(self, slot: int) -> bool:
        return self.standby is not None and slot == self.standby.slot_index

    def _require_running(self) -> None:
        if self.state is not S.RUNNING:
            raise CallError(f"agent {self.instance_id} is {self.state.value}, not RUNNING")

    @on_info(ExpireRequests)
    def _on_expire(self, msg: ExpireRequests) -> None:
        self.requests.on_timer()

    @on_info(StandbySpawn)
    def _on_standby_spawn(self, msg: StandbySpawn) -> None:
        if self.standby is not None:
            self.standby.on_spawn_due()

    @on_info(StandbyReadyDeadline)
    def _on_standby_ready_deadline(self, msg: StandbyReadyDeadline) -> None:
        if self.standby is not None:
            self.standby.on_ready_deadline(msg.generation)

    @on_info(CheckpointTick)
    def _on_checkpoint_tick(self, msg: CheckpointTick) -> None:
        self.durability.request_checkpoint()
        self.send_after(self.cfg.vault.checkpoint_interval / 1000, CheckpointTick())

    @on_info(PeerDown)
    def _on_peer_down(self, msg: PeerDown) -> None:
        if msg.name == "splitter":
            self.requests.mirror_ratio = 0.0  # a new splitter says again what it wants
        elif msg.name == "wal" and self.follower is not None and self.state is S.RUNNING:
            self.follower.start()  # the WAL restarted: follow the new one from here

    @on_cast(WalEntries)
    def _on_wal_entries(self, request: WalEntries) -> None:
        if self.follower is not None:
            self.follower.on_entries(request)

    @on_cast(FollowLost)
    def _on_follow_lost(self, request: FollowLost) -> None:
        if self.follower is not None:
            self.follower.on_lost(request)

    def _answer(self, caller: Caller, ok: bool, value: Any) -> None:
        if ok:
            self.reply(caller, value)
        else:
            self.reply_error(caller, str(value))

    # -- reporting ---------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        hb = max(int(self.slot["hb_agent_ns"]), int(self.slot["hb_frame_ns"]))
        age = round((monotonic_ns() - hb) / 1e6, 1) if hb and self.agent is not None else None
        uptime = time.monotonic() - self.running_since if self.running_since else None
        return {
            "role": self.role,
            "id": self.instance_id,
            "pid": self.pid,
            "state": self.state.value,
            "restarts": self.restarts,
            "generation": self.generation,
            "heartbeat_age_ms": age,
            "uptime_s": None if uptime is None else round(uptime, 3),
            "in_flight": len(self.requests),
            "wal_pending": self.durability.pending,
            "mirror_ratio": self.requests.mirror_ratio,
            "mirror_dropped": self.requests.mirror_dropped,
            "last_exit": self.last_exit,
            "last_kill_reason": self.last_kill_reason,
            "fatal_reason": self.fatal_reason,
            "deadlines": asdict(self.deadlines) if self.deadlines != NO_DEADLINES else None,
            "state_overflow_bytes": int(self.slot["state_overflow"]),
            "applied_lsn": (
                self.durability.applied_lsn if self.follower is None else self.follower.applied_lsn
            ),
            "metrics": self.metrics,
            "read_only": sorted(self.read_only),
            "life_lock": self.agent is not None and self.agent.life_watched,
            "slot": self.slot_index,
            "promotions": self.promotions,
            "standby": self.standby.status() if self.standby is not None else None,
        }
