"""What the standby agent's output does: its frames (a ``ready`` naming the standby role,
heartbeats stamped in its slot) and its stderr, logged.

Decision: a standby never serves. Its frames other than ``ready``, heartbeats and metrics
are ignored (each type warned about once); an agent whose ``ready`` does not say
``"role": "standby"``, or that sends a heartbeat before it, cannot follow, and the manager
runs without a standby rather than promote a stale one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from loguru import logger

from osup_mp.components.agent.states import AgentState
from osup_mp.storage.shm.segment import monotonic_ns
from osup_mp.wire.frames import FromAgent

if TYPE_CHECKING:
    from osup_mp.components.agent.standby import Standby

S = AgentState
ROLE = "standby"  # the role a standby is launched with, and the one its ready must name
_QUIET = frozenset({FromAgent.HEARTBEAT.value, FromAgent.METRICS.value, FromAgent.READY.value})


class StandbyFrames:
    def __init__(self, standby: Standby) -> None:
        self.standby = standby
        self._ignored: set[str] = set()  # frame types already warned about

    def on_stdout(self) -> None:
        standby = self.standby
        agent = standby.agent
        if agent is None:
            return
        messages, error, _eof = agent.read_frames()
        for msg in messages:
            self._on_message(msg)
            if standby.agent is not agent:
                return  # stopped while reading (an agent that cannot be a standby)
        if agent.pipes.heartbeats:
            agent.pipes.heartbeats = 0
            standby.slot["hb_frame_ns"] = monotonic_ns()
        if error is not None and standby.fail_reason is None:
            standby.kill_for(f"malformed frame from the standby: {error}")

    def _on_message(self, msg: dict[str, Any]) -> None:
        standby = self.standby
        kind = msg["type"]
        if kind == FromAgent.READY.value:
            self._on_ready(msg)
        elif kind == FromAgent.HEARTBEAT.value:
            if standby.agent is not None:
                standby.agent.pipes.heartbeats += 1
            if standby.state is S.STARTING:
                # A seed-style agent: its first heartbeat is its "ready", and it knows no
                # standby role (it would not follow the main's writes).
                self._refuse("it sent a heartbeat before ready (a seed-style agent)")
        elif kind not in _QUIET and kind not in self._ignored:
            self._ignored.add(kind)
            logger.warning(
                "agent {}: the standby sent {!r}: ignored (a standby serves nothing)",
                standby.host.instance_id,
                kind,
            )

    def _on_ready(self, msg: dict[str, Any]) -> None:
        if self.standby.state is not S.STARTING:
            return
        if msg.get("role") != ROLE:
            # It did not understand --role standby: it would not follow the main's writes.
            self._refuse(f"its ready frame says role {msg.get('role')!r}, not 'standby'")
            return
        self.standby.agent_ready(msg)

    def _refuse(self, why: str) -> None:
        standby = self.standby
        standby.unsupported = why
        logger.error(
            "agent {}: this agent cannot be a standby ({}); running without one",
            standby.host.instance_id,
            why,
        )
        standby.stop()

    def on_stderr(self, final: bool = False) -> None:
        standby = self.standby
        if standby.agent is not None:
            for text in standby.agent.stderr_lines(final=final):
                logger.info("[agent {} standby] {}", standby.host.instance_id, text)
