"""What an agent's exit leads to: noticed by its pidfd, or earlier by its life lock; then
the standby promoted in its place, a restart at once or after a backoff, or FATAL
(:mod:`.restarts` decides which).

Decision: a death that is news, with a standby ready, is a promotion (the promoted agent
gets its work first, the bookkeeping comes a few milliseconds later); a crash loop backs
off and restarts as usual, so a poisonous input cannot burn through standbys too.
"""

from __future__ import annotations

import time

from loguru import logger

from osup_mp.components.agent.launch import lift_limits
from osup_mp.components.agent.lifecycle import AgentLifecycle
from osup_mp.components.agent.process import AgentProcess
from osup_mp.components.agent.restarts import Decision
from osup_mp.components.agent.standby import Standby
from osup_mp.components.agent.states import AgentState
from osup_mp.components.agent.timers import Promoted, Respawn
from osup_mp.lowlevel.lifelock import dying_status, read_notices
from osup_mp.lowlevel.limits import cpu_deadline_reason
from osup_mp.lowlevel.proc import describe_exit
from osup_mp.runtime.component import on_info
from osup_mp.storage.shm.segment import monotonic_ns
from osup_mp.wire.frames import ToAgent

S = AgentState
_TIDY_DELAY = 0.005  # seconds from a promotion to the bookkeeping it leaves for later


class AgentRecovery(AgentLifecycle):
    """The agent's exits and what each leads to; see the module docstring."""

    def _on_exit(self) -> None:
        code = self.agent.exit_status() if self.agent is not None else None
        if self.agent is not None and code is not None:
            self._exited(self.agent, code)

    def _on_life_notices(self, fd: int) -> None:
        """An agent's life lock was released: if it is the running main and it is exiting,
        act on its death now; the kernel reports it only once its memory is freed (and the
        standby's death is no hurry: its pidfd reports it)."""
        for pid, code in read_notices(fd):
            agent = self.agent
            if agent is None or pid != agent.pid or self.state is not S.RUNNING:
                continue
            if code is None:
                code = dying_status(pid)  # it was not exiting when it let go: is it now?
            if code is None:
                logger.warning(
                    "agent {}: pid {} released its life lock but is not exiting",
                    self.instance_id,
                    pid,
                )
                continue
            self.dying.add(agent.proc, agent.pidfd)
            self._exited(agent, code, reaped=False)

    def _exited(self, agent: AgentProcess, code: int, *, reaped: bool = True) -> None:
        """The agent died with ``code``; ``reaped`` unless noticed by its life lock (then its
        pidfd stays watched, to reap it)."""
        if self._stop_timer is not None:
            self.cancel_timer(self._stop_timer)
            self._stop_timer = None
        self._on_stdout()  # frames written just before exiting are still answers
        self.last_exit = describe_exit(code)
        truncated = self.pipes.truncated()
        if truncated and not self.fail_reason:
            self.fail_reason = f"{self.last_exit} {truncated}"
        self._on_stderr(final=True)
        agent.close(reaped=reaped)
        self.agent = None
        self.slot["pid"] = 0
        self._cancel_timer()
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
        at_once = decision is not None and not decision.fatal and not decision.delay
        if died is not None and not at_once:
            self._bury_logged(died, reason)
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
            self.emit("fatal", {"failures": self.policy.start_failures})
            return
        self._transition(S.BACKOFF)
        self.restarts += 1
        self.slot["restarts"] = self.restarts
        if at_once:
            self._spawn()  # restart latency is start-up time
            if died is not None:  # while the vault and the WAL look the restore up
                self._bury_logged(died, reason)
            return
        logger.warning(
            "agent {}: restart {} in {:.2f}s ({})",
            self.instance_id,
            self.restarts,
            decision.delay,
            decision.why,
        )
        self._timer = self.send_after(decision.delay, Respawn())

    def _bury_logged(self, died: tuple[int, int], reason: str) -> None:
        self._bury(*died)
        logger.error("agent {} (pid {}): {}", self.instance_id, died[0], reason)

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
        self.emit("promoted", {"ms": msg.ms, "resent": msg.resent})
        if self.standby is not None:
            self.standby.start_soon()
