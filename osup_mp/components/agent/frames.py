"""What each frame from an agent does (docs/protocol.md): the table its manager dispatches
an agent's frames by, and the handlers of the frames that are not plain forwarding.

Decision: one table keyed by the plain ``"type"`` strings, built once per manager: a
frame's lookup is an exact-type dict hit, and an unknown type is logged and dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from loguru import logger

from osup_mp.components.messages import Propose, RecordMetrics
from osup_mp.runtime.calls import CallError
from osup_mp.wire.frames import FromAgent, ToAgent

if TYPE_CHECKING:
    from osup_mp.components.agent.lifecycle import AgentLifecycle

Handler = Callable[[dict[str, Any]], None]


class AgentFrames:
    def __init__(self, host: AgentLifecycle) -> None:
        self.host = host

    def table(self) -> dict[str, Handler]:
        durability = self.host.durability
        table: dict[FromAgent, Handler] = {
            FromAgent.RESPONSE: self.host.requests.on_response,
            FromAgent.HEARTBEAT: self._on_heartbeat,
            FromAgent.READY: self._on_ready,
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

    def _on_ready(self, msg: dict[str, Any]) -> None:
        host = self.host
        declared = msg.get("read_only")
        if isinstance(declared, list) and all(isinstance(op, str) for op in declared[:1024]):
            host.read_only = frozenset(declared[:1024])
        host.agent_ready()
        if host.agent is not None:
            host.agent.watch_life(msg, host.notify_fd)

    def _on_heartbeat(self, msg: dict[str, Any]) -> None:
        self.host.pipes.heartbeats += 1  # stamped once per read, by the stdout reader

    def _on_wal_batch(self, msg: dict[str, Any]) -> None:
        entries = msg.get("data")
        entries = entries if isinstance(entries, list) else [entries]
        for entry in entries:
            self.host.durability.log_entry(entry, msg.get("ref"))
        self.host.send_agent({"type": ToAgent.WAL_FLUSH_ACK, "count": len(entries)})

    def _on_metrics(self, msg: dict[str, Any]) -> None:
        host = self.host
        data = msg.get("data")
        if isinstance(data, dict):
            host.metrics = data
            host.emit("metrics", {k: v for k, v in data.items() if isinstance(v, int | float)})
            host.peer("health").cast(RecordMetrics(host.instance_id, data))

    def _on_reload_result(self, msg: dict[str, Any]) -> None:
        caller, result = self.host.code.result(msg)
        if caller is not None:
            self.host.reply(caller, result)

    def _on_evolution_intent(self, msg: dict[str, Any]) -> None:
        host = self.host
        hypothesis = msg.get("hypothesis")
        hypothesis = hypothesis if isinstance(hypothesis, dict) else {}
        target, code = hypothesis.get("target"), hypothesis.get("new_code")
        reason = hypothesis.get("reason")
        logger.info(
            "agent {}: evolution intent {} for {!r}", host.instance_id, msg.get("id"), target
        )
        proposal = msg.get("id")

        def refused(ok: bool, value: Any) -> None:  # accepted: the verdict comes later
            if not ok and host.agent is not None:
                result = {"type": ToAgent.EVOLUTION_RESULT, "id": proposal, "success": False}
                host.send_agent(result | {"verdict": None, "error": str(value)})

        if not isinstance(target, str) or not isinstance(code, str):
            refused(False, "evolution_intent needs hypothesis.target and new_code as text")
            return
        propose = Propose(host.instance_id, proposal, target, code, str(reason or ""))
        try:
            host.peer("arbiter").call_async(propose, refused, 10.0)
        except CallError as exc:
            refused(False, f"evolution arbiter not available: {exc}")
