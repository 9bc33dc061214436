"""The life of one agent process as its manager runs it: spawn (with its restore), ready,
stop, its pipes, and a deadline on each step. The base of the agent manager, split by
concern: :mod:`.recovery` decides what an exit leads to (a restart, a promotion, FATAL),
:mod:`.manager` serves the component's messages, :mod:`.frames` the agent's.

Decision: one state per agent (:mod:`.states`, transitions checked) and every deadline a
timer record (:mod:`.timers`); nothing here waits: an exit is seen by the agent's pidfd.
"""

from __future__ import annotations

import signal
import time
from typing import Any

from loguru import logger

from osup_mp.components.agent.code import CodeBook
from osup_mp.components.agent.durability import Durability
from osup_mp.components.agent.dying import Dying
from osup_mp.components.agent.follow import Follower
from osup_mp.components.agent.frames import AgentFrames
from osup_mp.components.agent.launch import NO_DEADLINES, Deadlines, Launch
from osup_mp.components.agent.pipes import AgentPipes
from osup_mp.components.agent.planning import PlanInFlight
from osup_mp.components.agent.process import AgentProcess
from osup_mp.components.agent.requests import Requests
from osup_mp.components.agent.restarts import RestartPolicy
from osup_mp.components.agent.standby import Standby
from osup_mp.components.agent.states import AgentState, check_transition
from osup_mp.components.agent.timers import (
    ReadyDeadline,
    ReapStrays,
    Respawn,
    StopDeadline,
    WallDeadline,
)
from osup_mp.components.messages import Execute, RecordTransition
from osup_mp.config import Config
from osup_mp.lowlevel.proc import REAP_RETRY, Strays, signal_group
from osup_mp.runtime.calls import CallError
from osup_mp.runtime.component import Component, on_info
from osup_mp.storage.shm.segment import SharedState, monotonic_ns

S = AgentState


class AgentLifecycle(Component):
    """One agent instance's process, its state and its pipes; see the module docstring."""

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
        self.slot: Any = None  # its shared-memory slot (a numpy record), claimed by init()
        self.dying = Dying(self, self._bury)
        self.strays = Strays()  # leftovers of dead agents, killed, reaped as they die
        self._reaping = False  # a ReapStrays timer is armed
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
        self.frames = AgentFrames(self).table()
        code_file = cfg.o_supervisor.data_dir / "code.json" if role == "main" else None
        self.code = CodeBook(instance_id, self.send_agent, code_file)
        self._timer: int | None = None
        self._planning: PlanInFlight | None = None  # a start's restore being looked up
        self._stop_timer: int | None = None  # SIGTERM sent: SIGKILL when it fires
        self._restart_when_stopped = False

    def _transition(self, new: AgentState, why: str | None = None) -> None:
        check_transition(self.state, new)
        old, self.state = self.state, new
        self.slot["state"] = int(new.slot_state)
        if why is None and new not in (S.STARTING, S.RUNNING):
            why = self.fail_reason or self.last_exit
        self.peer("health").cast(RecordTransition(self.instance_id, old.value, new.value, why))

    def _spawn(self, *, wait: bool = False) -> None:
        """Start a new agent generation: plan its restore, then launch it. The plan's calls
        go through the loop (the manager serves meanwhile), or block with ``wait`` (in
        ``init``, which serves nothing yet)."""
        self._transition(S.STARTING)
        self.fail_reason = None
        self.durability.new_generation()
        if wait:
            try:
                restore = self.durability.plan()
            except (CallError, KeyError) as exc:
                self._plan_failed(exc)
                return
            self._launch(restore)
        else:
            self._planning = plan = self.durability.plan_async(self._on_planned)
            plan.start()

    def _on_planned(self, restore: dict[str, Any] | None, error: Exception | None) -> None:
        self._planning = None
        if error is not None:
            self._plan_failed(error)
        else:
            self._launch(restore)

    def _plan_failed(self, exc: Exception) -> None:
        # Starting empty would lose acknowledged state: fail this start instead.
        logger.error("agent {}: cannot fetch its state to restore: {}", self.instance_id, exc)
        self._after_failure(f"restore unavailable: {exc}")

    def _cancel_plan(self) -> None:
        if self._planning is not None:
            self._planning.cancel()
            self._planning = None

    def _launch(self, restore: dict[str, Any] | None) -> None:
        """Spawn the agent of a planned start, and send it its restore."""
        if self.follower is not None:
            self.follower.restored(self.durability.applied_lsn)
        launch = Launch(
            self.role, self.instance_id, self.shm.name, self.slot_index, self.command,
            self.deadlines,
        )  # fmt: skip
        try:
            agent, argv = AgentProcess.start(self, self.cfg, launch, restore)
        except OSError as exc:
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

    def agent_ready(self) -> None:
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
        if self.state in (S.BACKOFF, S.FATAL, S.STARTING) and self.agent is None:
            self._cancel_plan()  # a start still looking up its state: nothing runs yet
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
            if self._planning is not None:  # plan again: a pinned checkpoint comes first
                self._cancel_plan()
                self._transition(S.STOPPING)
                self._spawn()
            elif self.state in (S.BACKOFF, S.FATAL, S.EXITED):
                if self.state is S.BACKOFF:
                    self._transition(S.STOPPING)
                self._spawn()
            return
        self._restart_when_stopped = True
        if self.state is not S.STOPPING:
            self._stop_agent()

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
            if self.agent is None:
                return  # the agent it was for is dead; its successor has a deadline of its own
            wall = self.deadlines.wall_seconds
            self._deadline_passed(f"killed: wall-clock deadline {wall:g} s")
            self._stop_agent(kill=True)

    def _deadline_passed(self, reason: str) -> None:
        self.last_kill_reason = reason
        logger.warning("agent {}: {}", self.instance_id, reason)

    def _bury(self, pid: int, code: int) -> None:
        """After the agent ``pid`` exited: kill what it left, in its process group or not
        (once it is reaped, if it was noticed dying)."""
        if self.dying.bury_when_reaped(pid):
            return
        if pid != self.pid:  # a replacement started first may (rarely) reuse the pid
            signal_group(pid)
        self.kill_leftovers()
        self.emit("exit", {"code": code})

    def live_pids(self) -> list[int]:
        """The agent processes to spare when killing leftovers: the main, its standby, and
        dead ones not yet reaped (a kill would reap them under their Popen)."""
        standby = self.standby.agent if self.standby is not None else None
        live = [a.pid for a in (self.agent, standby) if a is not None]
        return live + self.dying.pids()

    def kill_leftovers(self, whose: str = "it", *, wait: bool = False) -> None:
        """Kill every process a dead agent (``whose``: the main, "it", or "its standby")
        left behind, in its process group or not (this manager is their subreaper): all but
        the live agents (a promoted standby, and the standby). They are reaped as they die,
        by timers of the loop, or before this returns with ``wait`` (the loop is ending)."""
        killed = self.strays.kill(spare=self.live_pids())
        if wait:
            self.strays.wait()
        else:
            self._reap_strays()
        if killed:
            logger.warning(
                "agent {}: killed {} process(es) {} left behind: pids {}",
                self.instance_id,
                len(killed),
                whose,
                ", ".join(map(str, killed)),
            )

    @on_info(ReapStrays)
    def _reap_strays(self, msg: ReapStrays | None = None) -> None:
        if msg is not None:
            self._reaping = False
        if self.strays.reap() and not self._reaping:
            self._reaping = True
            self.send_after(REAP_RETRY, ReapStrays())

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

    # -- what an exit leads to: .recovery --------------------------------------------------

    def _on_exit(self) -> None:
        """The agent's pidfd is readable (:class:`.recovery.AgentRecovery`)."""
        raise NotImplementedError

    def _after_failure(self, reason: str, died: tuple[int, int] | None = None) -> None:
        """The agent failed; restart, promote or give up (:class:`.recovery.AgentRecovery`)."""
        raise NotImplementedError

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
            self.agent_ready()  # a seed agent's first heartbeat counts as ready
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

    def _on_message(self, msg: dict[str, Any]) -> None:
        handler = self.frames.get(msg["type"])
        if handler is None:
            logger.warning("agent {}: ignored message type {!r}", self.instance_id, msg["type"])
        else:
            handler(msg)

    def _fail_requests(self, reason: str) -> None:
        self.requests.fail_all(reason)
        for caller in self.code.fail_all():
            self.reply_error(caller, reason)

    def emit(self, what: str, measurements: dict[str, Any]) -> None:
        event = ("osup", "agent", what)
        self.peer("telemetry").cast(
            Execute(event, measurements, {"id": self.instance_id, "role": self.role})
        )
