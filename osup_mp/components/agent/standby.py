"""The hot standby of the main agent: a second agent process, started, restored and kept in
step with every WAL entry the main writes, so that the main's death costs a promotion (a
frame and a pipe swap, milliseconds) instead of a start and a restore.

Decisions:

* The standby lives in the main's manager, beside the main. Entries reach it from the
  manager in the loop step they leave for the WAL (:meth:`Standby.follow`; what it is fed and
  how its position is checked: :mod:`.standby_feed`). An entry that then fails to become
  durable replaces the standby with the main.
* It is planned through the manager's loop while the main goes on writing: entries the
  main writes meanwhile are held, and those sent to the WAL after the plan's last read
  follow the restore (:meth:`Standby._on_planned`).
* It never serves (its frames: :mod:`.standby_frames`).
* Its failures never touch the main: it is killed and restarted (a crash loop backs off with
  its own :class:`RestartPolicy`, and FATAL leaves the main without a standby until the next
  promotion or operator restart). The manager adopts its process on promotion with
  :meth:`Standby.take`.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from loguru import logger

from osup_mp.components.agent.durability import Durability
from osup_mp.components.agent.launch import Launch
from osup_mp.components.agent.planning import PlanInFlight
from osup_mp.components.agent.process import AgentProcess
from osup_mp.components.agent.restarts import RestartPolicy
from osup_mp.components.agent.standby_feed import StandbyFeed
from osup_mp.components.agent.standby_frames import ROLE, StandbyFrames
from osup_mp.components.agent.states import AgentState, check_transition
from osup_mp.components.agent.timers import StandbyReadyDeadline, StandbySpawn
from osup_mp.lowlevel.proc import describe_exit
from osup_mp.runtime.calls import CallError
from osup_mp.storage.shm.segment import Role, monotonic_ns

if TYPE_CHECKING:
    from osup_mp.components.agent.lifecycle import AgentLifecycle

S = AgentState
_RESPAWN_DELAY = 0.1  # seconds


class Standby:
    def __init__(self, host: AgentLifecycle, slot: int) -> None:
        self.host = host
        self.cfg = host.cfg
        self.slot_index = slot
        self.slot: Any = None
        self.state = S.STOPPED
        self.agent: AgentProcess | None = None
        self.policy = RestartPolicy.from_config(host.cfg.agent)
        self.generation = 0
        self.restarts = 0
        self.started_at = 0.0
        self.ready_at = 0.0
        self.last_exit: str | None = None
        self.fail_reason: str | None = None  # why the current standby is being killed
        self.last_kill_reason: str | None = None
        self.unsupported: str | None = None  # why this agent cannot be a standby
        self.feed = StandbyFeed(self)
        self.frames = StandbyFrames(self)
        label = f"{host.instance_id} standby"
        self._planner = Durability(host, durable=False, follower=True, label=label)
        self._timer: int | None = None
        self._planning: PlanInFlight | None = None

    @property
    def ready(self) -> bool:
        """Running, restored and following: it can be promoted (not one being killed)."""
        return self.state is S.RUNNING and self.agent is not None and self.fail_reason is None

    @property
    def applied_lsn(self) -> int:
        """The newest entry the standby agent says (in its slot) it has applied."""
        return int(self.slot["applied_lsn"]) if self.slot is not None else 0

    # -- life cycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Claim the slot and start a standby (the main is running)."""
        if self.unsupported or self.state not in (S.STOPPED, S.EXITED):
            return
        self.host.shm.claim_slot(self.slot_index, Role.STANDBY, self.host.instance_id)
        self.slot = self.host.shm.slot(self.slot_index)
        self._spawn()

    def start_soon(self) -> None:
        """Start one shortly (after a promotion: the promoted agent's first answers come
        first; planning and spawning a standby takes the manager's loop for a while)."""
        self._arm(_RESPAWN_DELAY, StandbySpawn())

    def _spawn(self) -> None:
        """Plan the restore (through the loop: the main serves meanwhile), then launch."""
        self._transition(S.STARTING)
        self.fail_reason = None
        self._planner.new_generation()
        self.feed.drop_held()
        self._planning = plan = self._planner.plan_async(self._on_planned)
        plan.start()

    def _on_planned(self, restore: dict[str, Any] | None, error: Exception | None) -> None:
        plan, self._planning = self._planning, None
        assert plan is not None
        held = self.feed.release_held(plan.calls)
        if error is not None:
            self._failed(f"cannot fetch the main's state: {error}")
            return
        host = self.host
        self.feed.restored(self._planner.applied_lsn)
        self.slot["applied_lsn"] = 0
        launch = Launch(ROLE, host.instance_id, host.shm.name, self.slot_index, host.command)
        try:
            agent, _argv = AgentProcess.start(host, self.cfg, launch, restore)
        except OSError as exc:
            self._failed(f"cannot start: {exc}")
            return
        self.agent = agent
        agent.watch(self.frames.on_stdout, self.frames.on_stderr, self._on_exit)
        self.generation += 1
        self.started_at = time.monotonic()
        self.slot["pid"] = agent.pid
        self.slot["generation"] = self.generation
        self.slot["hb_frame_ns"] = 0
        self._arm(self.cfg.agent.ready_timeout / 1000, StandbyReadyDeadline(self.generation))
        logger.info("agent {}: standby started pid {}", host.instance_id, agent.pid)
        if restore is not None:
            try:
                self._planner.send_restore(restore, send=agent.pipes.out.extend)
            except CallError as exc:
                self.kill_for(f"cannot restore: {exc}")
                return
        for entries in held:
            self.feed.pass_on(entries)

    def _cancel_plan(self) -> None:
        if self._planning is not None:
            self._planning.cancel()
            self._planning = None
        self.feed.drop_held()

    def on_spawn_due(self) -> None:
        self._timer = None
        if self.state in (S.BACKOFF, S.STOPPED, S.EXITED):
            if self.slot is None:
                self.start()
            else:
                self._spawn()

    def on_ready_deadline(self, generation: int) -> None:
        self._timer = None
        if generation == self.generation and self.state is S.STARTING:
            self.kill_for(f"not ready within {self.cfg.agent.ready_timeout} ms")

    def agent_ready(self, msg: dict[str, Any]) -> None:
        """Its ready frame names the standby role: it runs, following the main."""
        host = self.host
        self._cancel_timer()
        self._transition(S.RUNNING)
        assert self.agent is not None
        self.agent.watch_life(msg, host.notify_fd)
        self.ready_at = time.monotonic()
        self.slot["hb_frame_ns"] = monotonic_ns()
        logger.info(
            "agent {}: standby ready (pid {}, {:.1f} ms, following from LSN {})",
            host.instance_id,
            self.agent.pid,
            (self.ready_at - self.started_at) * 1000,
            self.feed.sent_lsn,
        )

    def kill_for(self, reason: str) -> None:
        """Replace the standby (the main is not touched)."""
        if self.agent is None:
            if self._planning is not None:
                # Not started yet, but what it holds may be what the reason condemns (the
                # main's entries that did not become durable): start again from scratch.
                logger.error("agent {}: standby: {}; starting anew", self.host.instance_id, reason)
                self._cancel_plan()
                self.last_kill_reason = reason
                self._failed(reason)
            return
        host, pid = self.host.instance_id, self.agent.pid
        logger.error("agent {}: standby pid {}: {}; replacing it", host, pid, reason)
        self.fail_reason = self.last_kill_reason = reason
        self.agent.signal()

    def on_report(self, generation: int, reason: str) -> None:
        """The watchdog's report about the standby's slot: a hang or a broken limit."""
        # No agent: the report is about the dead one, and the next one is being planned.
        live = self.agent is not None and self.state in (S.STARTING, S.RUNNING)
        if generation == self.generation and live:
            self.kill_for(reason)

    def _on_exit(self) -> None:
        agent = self.agent
        code = agent.exit_status() if agent is not None else None
        if agent is None or code is None:
            return
        agent.signal()  # what is left of its process group
        self._close(agent)
        self.last_exit = describe_exit(code)
        if self.state is S.STOPPING:
            self._transition(S.EXITED)
            return
        self._failed(self.fail_reason or self.last_exit)

    def _failed(self, reason: str) -> None:
        host = self.host
        up_since = self.ready_at if self.state is S.RUNNING else None
        decision = self.policy.after_failure(time.monotonic(), up_since)
        if decision.fatal:
            self._transition(S.FATAL)
            logger.critical(
                "agent {}: standby FATAL ({}; last: {}): the main runs without one until it "
                "is restarted",
                host.instance_id,
                decision.why,
                reason,
            )
            return
        self._transition(S.BACKOFF)
        self.restarts += 1
        self.slot["restarts"] = self.restarts
        logger.warning(
            "agent {}: standby failed ({}); a new one in {:.2f}s",
            host.instance_id,
            reason,
            decision.delay,
        )
        self._arm(decision.delay, StandbySpawn())

    def stop(self) -> None:
        """Stop it for good (the manager stops): it holds nothing durable, so SIGKILL."""
        self._cancel_timer()
        if self._planning is not None:
            self._cancel_plan()
            self._transition(S.STOPPING)
            self._transition(S.EXITED)
        agent = self.agent
        if agent is not None:
            self._transition(S.STOPPING)
            agent.signal()
            agent.proc.wait()
            self._close(agent)
            self._transition(S.EXITED)
        if self.slot is not None:
            self.host.shm.release_slot(self.slot_index)
            self.slot = None

    def reset(self) -> None:
        """The main was restarted by hand: a FATAL standby may try again."""
        self.policy.reset()
        if self.state is S.FATAL:
            self._transition(S.STOPPING)
            self._transition(S.EXITED)
            self.start_soon()

    def take(self) -> tuple[AgentProcess, int]:
        """Hand the process over to the manager (a promotion), with the LSN passed on to
        it. The slot is freed for the next standby."""
        agent = self.agent
        assert agent is not None and self.ready
        self._cancel_timer()
        agent.unwatch()
        taken = (agent, self.feed.sent_lsn)
        self.agent = None
        self.policy.reset()  # the next standby starts a new count
        self._transition(S.STOPPING)
        self._transition(S.EXITED)
        self.host.shm.release_slot(self.slot_index)
        self.slot = None
        return taken

    # -- following ---------------------------------------------------------------------------

    def follow(self, entries: list[bytes]) -> int:
        """Pass on entries the main wrote (about to go to the WAL); the standby generation
        that got them, or 0."""
        if self._planning is not None:  # sorted out once the plan is in (_on_planned)
            self.feed.hold(entries, self._planning.calls)
            return self.generation + 1
        if self.agent is None or self.state not in (S.STARTING, S.RUNNING):
            return 0  # the next standby restores them
        return self.feed.pass_on(entries)

    def numbered(self, generation: int, first_lsn: int, count: int) -> None:
        """The WAL numbered entries this standby got: they must be the LSNs it was told."""
        self.feed.numbered(generation, first_lsn, count)

    def flush(self) -> None:
        if self.agent is not None:
            self.agent.flush()

    # -- helpers -----------------------------------------------------------------------------

    def _close(self, agent: AgentProcess) -> None:
        self.host.kill_leftovers("its standby")
        self.frames.on_stdout()
        self.frames.on_stderr(final=True)
        agent.close()
        self.agent = None
        if self.slot is not None:
            self.slot["pid"] = 0
        self._cancel_timer()

    def _transition(self, new: AgentState) -> None:
        check_transition(self.state, new)
        self.state = new
        if self.slot is not None:
            self.slot["state"] = int(new.slot_state)

    def _arm(self, delay: float, msg: StandbySpawn | StandbyReadyDeadline) -> None:
        self._cancel_timer()
        self._timer = self.host.send_after(delay, msg)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self.host.cancel_timer(self._timer)
            self._timer = None

    def status(self) -> dict[str, Any]:
        slot = self.slot
        hb = max(int(slot["hb_agent_ns"]), int(slot["hb_frame_ns"])) if slot is not None else 0
        age = round((monotonic_ns() - hb) / 1e6, 1) if hb and self.agent is not None else None
        return {
            "role": ROLE,
            "id": self.host.instance_id,
            "pid": self.agent.pid if self.agent is not None else None,
            "state": self.state.value,
            "slot": self.slot_index,
            "restarts": self.restarts,
            "generation": self.generation,
            "heartbeat_age_ms": age,
            "applied_lsn": self.applied_lsn,
            "lag": self.feed.sent_lsn - self.applied_lsn if self.ready else None,
            "life_lock": self.agent is not None
            and bool(self.agent.life and self.agent.life.watching),
            "last_exit": self.last_exit,
            "last_kill_reason": self.last_kill_reason,
            "unsupported": self.unsupported,
        }
