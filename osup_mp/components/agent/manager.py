"""The agent manager component: one per agent instance.

It spawns the agent executable (see :mod:`.launch` for the contract), speaks framed
MessagePack on the agent's stdin/stdout, logs its stderr tagged with the instance name, and
keeps it alive: a crash, a hang reported by the watchdog, a malformed frame or a missed ready
deadline kills the agent and starts it again — at once if it had started up, with backoff
in a crash loop (:mod:`.restarts`) — until too many failed starts make it FATAL.

Design decisions:

* The manager never blocks on the agent: stdout, stderr and a pidfd are watched by the
  component loop, and output to the agent is batched into one write per loop wake-up.
* Requests are pipelined: each gets a manager-side id, many are in flight at once, and the
  agent's ``response`` frames are matched by id (:mod:`.requests`, which also runs the main
  agent's data-plane socket ``run_dir/agent-main.sock`` until the traffic splitter exists).
* The agent runs in its own session (process group) with ``PR_SET_PDEATHSIG``: killing the
  group takes everything it spawned, and the agent dies with its manager.
* Durability (WAL forwarding, response release, checkpoints, restore) is :mod:`.durability`.
* A main agent may have a hot standby (:mod:`.standby`): on the main's death the manager
  promotes it in place of a restart, and re-sends it the requests left unanswered.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from functools import partial
from typing import Any

from loguru import logger

from osup_mp.components.agent.code import CodeBook
from osup_mp.components.agent.durability import Durability
from osup_mp.components.agent.dying import Dying
from osup_mp.components.agent.follow import Follower
from osup_mp.components.agent.launch import (
    NO_DEADLINES,
    Deadlines,
    agent_argv,
    agent_env,
    lift_limits,
    pre_exec,
)
from osup_mp.components.agent.pipes import AgentPipes
from osup_mp.components.agent.process import AgentProcess
from osup_mp.components.agent.requests import Requests
from osup_mp.components.agent.restarts import Decision, RestartPolicy
from osup_mp.components.agent.standby import Standby
from osup_mp.components.agent.states import AgentState, check_transition
from osup_mp.components.agent.timers import (
    CheckpointTick,
    ExpireRequests,
    Promoted,
    ReadyDeadline,
    Respawn,
    StandbyReadyDeadline,
    StandbySpawn,
    StopDeadline,
    WallDeadline,
)
from osup_mp.components.messages import (
    AgentRequest,
    AgentStatus,
    CreateCheckpoint,
    EvolutionResult,
    Execute,
    FollowLost,
    HeartbeatTimeout,
    HotReload,
    LimitExceeded,
    LoadedCode,
    MirrorRequest,
    Propose,
    RecordMetrics,
    RecordTransition,
    RestartAgent,
    RestoreFrom,
    Revert,
    SetMirror,
    WalEntries,
)
from osup_mp.config import Config
from osup_mp.lowlevel.lifelock import dying_status, read_notices
from osup_mp.lowlevel.limits import cpu_deadline_reason
from osup_mp.lowlevel.proc import (
    become_subreaper,
    describe_exit,
    kill_descendants,
    signal_group,
)
from osup_mp.runtime.calls import CallError
from osup_mp.runtime.component import NOREPLY, Caller, Component, on_call, on_cast, on_info
from osup_mp.runtime.messages import PeerDown
from osup_mp.storage.shm.segment import Role, SharedState, monotonic_ns
from osup_mp.wire.frames import FromAgent, ToAgent
from osup_mp.wire.launch import RESTORE_FLAG

S = AgentState
_TIDY_DELAY = 0.005  # seconds from a promotion to the bookkeeping it leaves for later


class AgentManager(Component):
    def __init__(
        self,
        cfg: Config,
        shm: SharedState,
        *,
        role: str,
        instance_id: str,
        slot: int,
        command: list[str] | None = None,
        standby_slot: int | None = None,
        deadlines: Deadlines = NO_DEADLINES,
    ) -> None:
        self.cfg = cfg
        self.shm = shm
        self.role = role
        self.instance_id = instance_id
        self.slot_index = slot
        self.command = command
        self.deadlines = deadlines
        self.state = S.STOPPED
        self.agent: AgentProcess | None = None
        self.notify_fd = -1  # life-lock notices are written here (lowlevel.lifelock)
        self.dying = Dying(self, self._bury)
        self.generation = 0
        self.restarts = 0
        self.policy = RestartPolicy.from_config(cfg.agent)
        self.running_since = 0.0
        self.started_at = 0.0
        self.last_exit: str | None = None
        self.fail_reason: str | None = None
        self.fatal_reason: str | None = None
        self.last_kill_reason: str | None = None
        self.metrics: dict[str, Any] = {}
        self.read_only: frozenset[str] = frozenset()  # ops the agent declared read-only
        self.requests = Requests(self)
        self.durability = Durability(self, durable=role == "main", follower=role != "main")
        self.follower = Follower(self) if role != "main" else None
        self.standby = Standby(self, standby_slot) if standby_slot is not None else None
        self.promotions = 0
        self.pipes = AgentPipes(cfg.agent.max_frame)
        self._frames = self._frame_table()
        code_file = cfg.o_supervisor.data_dir / "code.json" if role == "main" else None
        self.code = CodeBook(instance_id, self.send_agent, code_file)
        self._timer: int | None = None
        self._stop_timer: int | None = None  # SIGTERM sent: SIGKILL when it fires
        self._restart_when_stopped = False

    # -- component callbacks -----------------------------------------------------------------

    def init(self) -> None:
        # Orphans of the agent (double forks, setsid daemons) re-parent here, so each exit
        # of the agent can kill and reap everything it left behind.
        become_subreaper()
        notices, self.notify_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        # A life-lock waiter wakes holding no GIL: it must get it within 0.1 ms of a death,
        # not the default 5 ms while this loop polls. No thread competes for it otherwise.
        sys.setswitchinterval(1e-4)
        self.watch_fd(notices, partial(self._on_life_notices, notices))
        role = Role.MAIN if self.role == "main" else Role.SHADOW
        self.shm.claim_slot(self.slot_index, role, self.instance_id)
        self.slot = self.shm.slot(self.slot_index)
        if self.role == "main":
            self.requests.open_data_plane()
        try:
            self._spawn()
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
        self._kill_leftovers()
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
            handled = self.requests.took_ms  # the agent's own figure, when it gives one
            answer = {"ok": ok, "value": value, "latency_ms": latency_ms, "lsn": lsn}
            self.reply(caller, answer | {"handled_ms": handled})

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
        elif request.generation == self.generation and self.state in (S.STARTING, S.RUNNING):
            logger.warning("agent {}: {}", self.instance_id, request.reason)
            self.last_kill_reason = request.reason
            self._stop_agent(kill=True)
        return True

    def _standby_report(self, slot: int) -> bool:
        return self.standby is not None and slot == self.standby.slot_index

    def _require_running(self) -> None:
        if self.state is not S.RUNNING:
            raise CallError(f"agent {self.instance_id} is {self.state.value}, not RUNNING")

    @on_info(Respawn)
    def _on_respawn(self, msg: Respawn) -> None:
        self._timer = None
        if self.state is S.BACKOFF:
            self._spawn()

    @on_info(ReadyDeadline)
    def _on_ready_deadline(self, msg: ReadyDeadline) -> None:
        self._timer = None
        if self.state is S.STARTING:
            self.kill_for(f"not ready within {self.cfg.agent.ready_timeout} ms")

    @on_info(StopDeadline)
    def _on_stop_deadline(self, msg: StopDeadline) -> None:
        self._stop_timer = None
        if msg.generation == self.generation and self.state is S.STOPPING and self.agent:
            logger.warning(
                "agent {}: did not stop within {} ms of SIGTERM; sent SIGKILL",
                self.instance_id,
                self.cfg.agent.stop_timeout,
            )
            self._signal(signal.SIGKILL)

    @on_info(WallDeadline)
    def _on_wall_deadline(self, msg: WallDeadline) -> None:
        if msg.generation == self.generation and self.state in (S.STARTING, S.RUNNING):
            wall = self.deadlines.wall_seconds
            self._deadline_passed(f"killed: wall-clock deadline {wall:g} s")
            self._stop_agent(kill=True)

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

    # -- state machine -----------------------------------------------------------------------

    def _transition(self, new: AgentState, why: str | None = None) -> None:
        check_transition(self.state, new)
        old, self.state = self.state, new
        self.slot["state"] = int(new.slot_state)
        if why is None and new not in (S.STARTING, S.RUNNING):
            why = self.fail_reason or self.last_exit
        self.peer("health").cast(RecordTransition(self.instance_id, old.value, new.value, why))

    def _spawn(self) -> None:
        self._transition(S.STARTING)
        self.fail_reason = None
        self.durability.new_generation()
        try:
            restore = self.durability.plan()
            if self.follower is not None:
                self.follower.restored(self.durability.applied_lsn)
        except (CallError, KeyError) as exc:
            # Starting empty would lose acknowledged state: fail this start instead.
            logger.error("agent {}: cannot fetch its state to restore: {}", self.instance_id, exc)
            self._after_failure(f"restore unavailable: {exc}")
            return
        try:
            argv = agent_argv(self.cfg, self.role, self.command)
            if restore is not None:
                argv += [RESTORE_FLAG, restore["checkpoint_id"] or "wal"]
            agent = AgentProcess.spawn(
                self,
                argv,
                agent_env(self.cfg, self.shm.name, self.instance_id, self.slot_index, self.role),
                pre_exec(self.cfg, self.role, self.deadlines),
                self.pipes,
            )
        except OSError as exc:
            if restore is not None:
                self.durability.discard(restore)
            what = self.command or self.cfg.o_supervisor.gerbil_executable
            logger.error("agent {}: cannot start {}: {}", self.instance_id, what, exc)
            self._after_failure(f"cannot start: {exc}")
            return
        self._adopt(agent)
        self.slot["hb_frame_ns"] = 0
        self._timer = self.send_after(self.cfg.agent.ready_timeout / 1000, ReadyDeadline())
        if self.deadlines.wall_seconds is not None:
            self.send_after(self.deadlines.wall_seconds, WallDeadline(self.generation))
        logger.info("agent {}: started pid {} ({})", self.instance_id, agent.pid, " ".join(argv))
        if restore is not None:
            try:
                self.durability.send_restore(restore)
            except CallError as exc:
                self.kill_for(f"cannot restore: {exc}")

    def _adopt(self, agent: AgentProcess) -> None:
        """``agent`` is this manager's agent from now on: a new generation."""
        self.agent, self.pipes = agent, agent.pipes
        agent.watch(self._on_stdout, self._on_stderr, self._on_exit)
        self.generation += 1
        self.started_at = time.monotonic()
        self.slot["pid"] = agent.pid
        self.slot["generation"] = self.generation

    def _promote(self, standby: Standby, reason: str, died: tuple[int, int]) -> None:
        """Make the standby the main: its pipes, its process, this slot; then send it, in
        this order, the dead main's last entries (already in its pipe), ``promote``, the
        hot-loaded code and the unanswered requests, and write them out at once."""
        t0 = time.monotonic()
        self.durability.hand_over()
        agent, lsn = standby.take()
        self._adopt(agent)
        self.send_agent({"type": ToAgent.PROMOTE.value, "slot": self.slot_index})
        for caller in self.code.fail_all():  # a reload the dead main never answered
            self.reply_error(caller, f"agent {self.instance_id} exited before answering")
        self.code.reapply()
        resent = self.requests.resend()
        self.slot["hb_frame_ns"] = monotonic_ns()
        self.running_since = time.monotonic()
        self._flush()  # now, not at the end of the wake-up: the answers are waited for
        elapsed = (time.monotonic() - t0) * 1000
        # The rest waits until the promoted agent's first answers are read.
        self.fail_reason = None
        self.restarts += 1
        self.promotions += 1
        self.slot["restarts"] = self.restarts
        early = died[0] in self.dying
        self.send_after(_TIDY_DELAY, Promoted(reason, died, agent.pid, elapsed, lsn, resent, early))

    @on_info(Promoted)
    def _after_promotion(self, msg: Promoted) -> None:
        """Bury the dead main, lift the standby's soft limits, record and log the promotion."""
        self._bury(*msg.died)
        if msg.pid == self.pid and self.state is S.RUNNING:  # else it died too, meanwhile
            lift_limits(self.cfg, msg.pid)
            for state in (S.BACKOFF, S.STARTING, S.RUNNING):  # as health records a restart
                self._transition(state, msg.reason)
        logger.warning(
            "agent {}: pid {} died ({}{}); standby pid {} promoted in {:.2f} ms at LSN {}, "
            "{} unanswered requests re-sent",
            self.instance_id,
            msg.died[0],
            msg.reason,
            ", noticed by its life lock" if msg.early else "",
            msg.pid,
            msg.ms,
            msg.lsn,
            msg.resent,
        )
        self._emit("promoted", {"ms": msg.ms, "resent": msg.resent})
        if self.standby is not None:
            self.standby.start_soon()

    def _on_ready(self) -> None:
        if self.state is not S.STARTING:
            return
        self._cancel_timer()
        self._transition(S.RUNNING)
        self.slot["hb_frame_ns"] = monotonic_ns()  # ready counts as the first heartbeat
        self.running_since = time.monotonic()
        elapsed = (self.running_since - self.started_at) * 1000
        logger.info("agent {}: ready (pid {}, {:.1f} ms)", self.instance_id, self.pid, elapsed)
        if self.durability.checkpoint_soon:
            self.durability.checkpoint_soon = False
            self.durability.request_checkpoint(force=True)
        if self.follower is not None:
            self.follower.start()
        self.code.reapply()

    def kill_for(self, reason: str) -> None:
        """The agent misbehaved: kill it; the exit handler counts the failure."""
        logger.error("agent {}: {}; restarting", self.instance_id, reason)
        self.fail_reason = reason
        self._signal(signal.SIGKILL)

    def _stop_agent(self, *, kill: bool = False) -> None:
        if self.state in (S.BACKOFF, S.FATAL) and self.agent is None:
            self._cancel_timer()
            self._transition(S.STOPPING)
            self._transition(S.EXITED)
            return
        self._transition(S.STOPPING)
        self._signal(signal.SIGKILL if kill else signal.SIGTERM)
        if not kill and self.agent is not None:
            self._stop_timer = self.send_after(
                self.cfg.agent.stop_timeout / 1000, StopDeadline(self.generation)
            )

    def _operator_restart(self) -> None:
        self.policy.reset()
        if self.standby is not None:
            self.standby.reset()
        self.fatal_reason = None
        if self.agent is None:
            self._cancel_timer()
            if self.state in (S.BACKOFF, S.FATAL, S.EXITED):
                if self.state is S.BACKOFF:
                    self._transition(S.STOPPING)
                self._spawn()
            return
        self._restart_when_stopped = True
        if self.state is not S.STOPPING:
            self._stop_agent()

    def _on_exit(self) -> None:
        code = self.agent.exit_status() if self.agent is not None else None
        if self.agent is not None and code is not None:
            self._exited(self.agent, code)

    def _on_life_notices(self, fd: int) -> None:
        """An agent's life lock was released: if it is the running main and it is exiting,
        act on its death now; the kernel reports it only once its memory is freed (and the
        standby's death is no hurry: its pidfd reports it)."""
        for pid in read_notices(fd):
            agent = self.agent
            if agent is None or pid != agent.pid or self.state is not S.RUNNING:
                continue
            code = dying_status(pid)
            if code is None:
                logger.warning(
                    "agent {}: pid {} released its life lock but is not exiting",
                    self.instance_id,
                    pid,
                )
                continue
            self.dying.add(agent.proc, agent.pidfd)
            self._exited(agent, code, reaped=False)

    def live_pids(self) -> list[int]:
        """The agent processes to spare when killing leftovers: the main, its standby, and
        dead ones not yet reaped (a kill would reap them under their Popen)."""
        standby = self.standby.agent if self.standby is not None else None
        live = [a.pid for a in (self.agent, standby) if a is not None]
        return live + self.dying.pids()

    def _exited(self, agent: AgentProcess, code: int, *, reaped: bool = True) -> None:
        """The agent died with ``code``; ``reaped`` unless noticed by its life lock (then its
        pidfd stays watched, to reap it)."""
        if self._stop_timer is not None:
            self.cancel_timer(self._stop_timer)
            self._stop_timer = None
        self._on_stdout()  # frames written just before exiting are still answers
        truncated = self.pipes.truncated()
        if truncated and not self.fail_reason:
            self.fail_reason = truncated
        self._on_stderr(final=True)
        agent.close(reaped=reaped)
        self.agent = None
        self.slot["pid"] = 0
        self._cancel_timer()
        self.last_exit = describe_exit(code)
        if self.state is not S.STOPPING and self._past_cpu_deadline(code):
            self._transition(S.STOPPING)  # final, as a limit is: no restart
        if self.state is S.STOPPING:
            self._bury(agent.pid, code)
            self._agent_lost()
            logger.info("agent {}: stopped ({})", self.instance_id, self.last_exit)
            if self._restart_when_stopped:
                self._restart_when_stopped = False
                self.restarts += 1
                self.slot["restarts"] = self.restarts
                self._spawn()
            else:
                self._transition(S.EXITED)
            return
        self._after_failure(self.fail_reason or self.last_exit, died=(agent.pid, code))

    def _past_cpu_deadline(self, code: int) -> bool:
        """Whether the agent died of its CPU-time deadline (SIGXCPU, or SIGKILL at the hard
        limit a second later); the kill reason says so."""
        reason = cpu_deadline_reason(code, self.deadlines.cpu_seconds)
        if reason is not None:
            self._deadline_passed(reason)
        return reason is not None

    def _deadline_passed(self, reason: str) -> None:
        self.last_kill_reason = reason
        logger.warning("agent {}: {}", self.instance_id, reason)

    def _bury(self, pid: int, code: int) -> None:
        """After the agent ``pid`` exited: kill what it left, in its process group or not
        (once it is reaped, if it was noticed dying)."""
        if self.dying.bury_when_reaped(pid):
            return
        signal_group(pid)
        self._kill_leftovers()
        self._emit("exit", {"code": code})

    def _agent_lost(self) -> None:
        """The agent is gone and nothing takes its place: fail what waited on it."""
        self._fail_requests(f"agent {self.instance_id} exited before answering")
        self.durability.agent_gone()

    def _after_failure(self, reason: str, died: tuple[int, int] | None = None) -> None:
        """The agent failed (``died``: it exited, with this pid and status): promote its
        standby, restart it (at once or after a backoff), or give up (FATAL)."""
        first_start = self.generation <= 1 and self.running_since == 0.0 and self.restarts == 0
        up_since = self.running_since if self.state is S.RUNNING and self.running_since else None
        decision = None if first_start else self.policy.after_failure(time.monotonic(), up_since)
        if decision is not None and died is not None and self._failover(reason, died, decision):
            return
        if died is not None:
            self._bury(*died)
            logger.error("agent {} (pid {}): {}", self.instance_id, died[0], reason)
        if decision is None:
            # The very first start failed: report it (init raises) instead of looping.
            self._agent_lost()
            self.fail_reason = reason
            self._transition(S.BACKOFF)
            return
        self.running_since = 0.0
        self._agent_lost()
        if decision.fatal:
            self.fatal_reason = f"{decision.why}; last: {reason}"
            self._transition(S.FATAL)
            logger.critical("agent {}: FATAL ({})", self.instance_id, self.fatal_reason)
            self._emit("fatal", {"failures": self.policy.start_failures})
            return
        self._transition(S.BACKOFF)
        self.restarts += 1
        self.slot["restarts"] = self.restarts
        if not decision.delay:
            self._spawn()  # restart latency is start-up time
            return
        logger.warning(
            "agent {}: restart {} in {:.2f}s ({})",
            self.instance_id,
            self.restarts,
            decision.delay,
            decision.why,
        )
        self._timer = self.send_after(decision.delay, Respawn())

    def _failover(self, reason: str, died: tuple[int, int], decision: Decision) -> bool:
        """Promote the standby in place of a restart, when there is one ready and the death
        is news, not a loop (a crash loop backs off and restarts as usual, so that a
        poisonous input cannot also burn through standbys). Everything but the promotion
        (burying the dead agent, the log) comes after the promoted agent has its work."""
        standby = self.standby
        if standby is None or self.state is not S.RUNNING or decision.fatal or decision.delay:
            return False
        if not standby.ready:
            why = standby.unsupported or f"it is {standby.state.value}"
            logger.warning(
                "agent {}: the standby cannot take over ({}): restarting the agent instead",
                self.instance_id,
                why,
            )
            return False
        self._promote(standby, reason, died)
        return True

    def _kill_leftovers(self) -> None:
        """Kill and reap every process the dead agent left behind, in its process group or
        not (this manager is their subreaper): all but the live agents (a promoted standby,
        and the standby)."""
        killed = kill_descendants(spare=self.live_pids())
        if killed:
            logger.warning(
                "agent {}: killed {} process(es) it left behind: pids {}",
                self.instance_id,
                len(killed),
                ", ".join(map(str, killed)),
            )

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self.cancel_timer(self._timer)
            self._timer = None

    def _signal(self, sig: int) -> None:
        if self.agent is not None:
            self.agent.signal(sig)

    @property
    def pid(self) -> int | None:
        return self.agent.pid if self.agent is not None else None

    # -- agent I/O ---------------------------------------------------------------------------

    def _on_stdout(self) -> None:
        if self.agent is None:
            return
        messages, error, _eof = self.agent.read_frames()  # at EOF the pidfd reports the exit
        for msg in messages:
            self._on_message(msg)
        if self.pipes.heartbeats:
            # Coalesced: one stamp per read however many heartbeats it held (a flood).
            self.pipes.heartbeats = 0
            self.slot["hb_frame_ns"] = monotonic_ns()
            self._on_ready()  # a seed agent's first heartbeat counts as ready
        if error is not None and self.fail_reason is None:
            self.kill_for(f"malformed frame from the agent: {error}")

    def _on_stderr(self, final: bool = False) -> None:
        if self.agent is not None:
            for text in self.agent.stderr_lines(final=final):
                logger.info("[agent {}] {}", self.instance_id, text)

    def send_agent(self, msg: dict[str, Any]) -> None:
        """Queue a frame for the agent; it leaves at the end of the loop wake-up."""
        self.pipes.queue(msg)

    def send_agent_raw(self, frame: bytes) -> None:
        """Queue an already framed message (restore frames built from stored entries)."""
        self.pipes.out += frame

    def _flush(self) -> None:
        if self.agent is not None:
            self.agent.flush()

    def _frame_table(self) -> dict[str, Callable[[dict[str, Any]], None]]:
        """What each frame type from the agent does (docs/protocol.md). Keyed by the plain
        strings: a lookup with the ``"type"`` a frame carries is then an exact-type hit."""
        durability = self.durability
        table: dict[FromAgent, Callable[[dict[str, Any]], None]] = {
            FromAgent.RESPONSE: self.requests.on_response,
            FromAgent.HEARTBEAT: self._on_heartbeat,
            FromAgent.READY: self._on_ready_frame,
            FromAgent.WAL_ENTRY: lambda msg: durability.log_entry(msg.get("data"), msg.get("ref")),
            FromAgent.WAL_BATCH: self._on_wal_batch,
            FromAgent.CHECKPOINT: lambda msg: durability.on_checkpoint(
                msg.get("data"), msg.get("error")
            ),
            FromAgent.METRICS: self._on_metrics,
            FromAgent.RELOAD_RESULT: self._on_reload_result,
            FromAgent.EVOLUTION_INTENT: self._on_evolution_intent,
        }
        return {kind.value: handler for kind, handler in table.items()}

    def _on_message(self, msg: dict[str, Any]) -> None:
        handler = self._frames.get(msg["type"])
        if handler is None:
            logger.warning("agent {}: ignored message type {!r}", self.instance_id, msg["type"])
        else:
            handler(msg)

    def _on_ready_frame(self, msg: dict[str, Any]) -> None:
        declared = msg.get("read_only")
        if isinstance(declared, list) and all(isinstance(op, str) for op in declared[:1024]):
            self.read_only = frozenset(declared[:1024])
        self._on_ready()
        if self.agent is not None:
            self.agent.watch_life(msg, self.notify_fd)

    def _on_heartbeat(self, msg: dict[str, Any]) -> None:
        self.pipes.heartbeats += 1  # stamped once per read by _on_stdout

    def _on_wal_batch(self, msg: dict[str, Any]) -> None:
        entries = msg.get("data")
        entries = entries if isinstance(entries, list) else [entries]
        for entry in entries:
            self.durability.log_entry(entry, msg.get("ref"))
        self.send_agent({"type": ToAgent.WAL_FLUSH_ACK, "count": len(entries)})

    def _on_metrics(self, msg: dict[str, Any]) -> None:
        data = msg.get("data")
        if isinstance(data, dict):
            self.metrics = data
            self._emit("metrics", {k: v for k, v in data.items() if isinstance(v, int | float)})
            self.peer("health").cast(RecordMetrics(self.instance_id, data))

    def _on_reload_result(self, msg: dict[str, Any]) -> None:
        caller, result = self.code.result(msg)
        if caller is not None:
            self.reply(caller, result)

    def _on_evolution_intent(self, msg: dict[str, Any]) -> None:
        hypothesis = msg.get("hypothesis")
        hypothesis = hypothesis if isinstance(hypothesis, dict) else {}
        target, code = hypothesis.get("target"), hypothesis.get("new_code")
        reason = hypothesis.get("reason")
        logger.info(
            "agent {}: evolution intent {} for {!r}", self.instance_id, msg.get("id"), target
        )
        proposal = msg.get("id")

        def refused(ok: bool, value: Any) -> None:  # accepted: the verdict comes later
            if not ok and self.agent is not None:
                result = {"type": ToAgent.EVOLUTION_RESULT, "id": proposal, "success": False}
                self.send_agent(result | {"verdict": None, "error": str(value)})

        if not isinstance(target, str) or not isinstance(code, str):
            refused(False, "evolution_intent needs hypothesis.target and new_code as text")
            return
        propose = Propose(self.instance_id, proposal, target, code, str(reason or ""))
        try:
            self.peer("arbiter").call_async(propose, refused, 10.0)
        except CallError as exc:
            refused(False, f"evolution arbiter not available: {exc}")

    # -- requests ----------------------------------------------------------------------------

    def _answer(self, caller: Caller, ok: bool, value: Any) -> None:
        if ok:
            self.reply(caller, value)
        else:
            self.reply_error(caller, str(value))

    def _fail_requests(self, reason: str) -> None:
        self.requests.fail_all(reason)
        for caller in self.code.fail_all():
            self.reply_error(caller, reason)

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

    def _emit(self, what: str, measurements: dict[str, Any]) -> None:
        event = ("osup", "agent", what)
        self.peer("telemetry").cast(
            Execute(event, measurements, {"id": self.instance_id, "role": self.role})
        )
