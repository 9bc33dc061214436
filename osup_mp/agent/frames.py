"""What each frame from the manager does in an agent (docs/protocol.md): the SDK's dispatch
table and its handlers (requests, restore, hot reload, checkpoint acks, a follower's
``wal_apply``, ``promote``, ``stop``), each ending in the hooks of
:class:`osup_mp.agent.sdk.Agent`, whose mixin this is.

Decision: one table keyed by the plain ``"type"`` strings, built once per agent, as the
manager's (:mod:`osup_mp.components.agent.frames`): a frame's lookup is an exact-type dict
hit, and a type the SDK does not know goes to :meth:`~osup_mp.agent.sdk.Agent.on_message`,
so an agent can take additions of the protocol before its SDK knows them.
"""

from __future__ import annotations

import gc
import time
import traceback
import types
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from osup_mp.wire.frames import FromAgent, ToAgent

if TYPE_CHECKING:
    from osup_mp.agent.liveness import Window
    from osup_mp.agent.options import AgentOptions
    from osup_mp.lowlevel.schedstat import RunDelay

__all__ = ["FrameHandlers", "RequestError"]


class RequestError(Exception):
    """Raise from a handler to answer a request with an error message (not a crash)."""


class FrameHandlers:
    """The frames from the manager and what each does; see the module docstring."""

    # What this mixin uses of the agent (sdk.Agent sets and defines them).
    options: AgentOptions
    modules: dict[str, types.ModuleType]
    default_reload_module: str | None
    checkpoint_id: str | None
    applied_lsn: int
    shm: Any
    _previous: dict[str, types.ModuleType]
    _window: Window
    _run_delay: RunDelay  # the serving thread's, for timed requests
    _slot: Any
    _stop: bool
    _frames: dict[str, Callable[[dict[str, Any]], None]]  # _frame_table(), built once

    if TYPE_CHECKING:

        def send(self, msg: Mapping[str, Any]) -> None: ...
        def log(self, text: str) -> None: ...
        def checkpoint(self) -> None: ...
        def _send_ready(self) -> None: ...
        def handle_request(self, data: Any) -> Any: ...
        def restore(self, snapshot: Mapping[str, Any] | None) -> None: ...
        def apply_wal_batch(self, entries: Sequence[Mapping[str, Any]]) -> None: ...
        def validate_module(self, name: str, module: types.ModuleType) -> None: ...
        def on_checkpoint_ack(self, msg: Mapping[str, Any]) -> None: ...
        def on_evolution_result(self, msg: Mapping[str, Any]) -> None: ...
        def on_promote(self) -> None: ...
        def on_message(self, msg: Mapping[str, Any]) -> None: ...

    def _dispatch(self, msg: dict[str, Any]) -> None:
        handler = self._frames.get(msg["type"])
        if handler is None:
            self.on_message(msg)  # a frame type this SDK does not know: the subclass may
        else:
            handler(msg)

    def _frame_table(self) -> dict[str, Callable[[dict[str, Any]], None]]:
        """What each frame type from the manager does (docs/protocol.md). Keyed by the plain
        strings: a lookup with the ``"type"`` a frame carries is then an exact-type hit."""
        table: dict[ToAgent, Callable[[dict[str, Any]], None]] = {
            ToAgent.PROCESS_REQUEST: self._on_request,
            ToAgent.RESTORE: self._on_restore,
            ToAgent.HOT_RELOAD: self._on_hot_reload,
            ToAgent.CHECKPOINT_ACK: self._on_checkpoint_ack,
            ToAgent.CHECKPOINT_REQUEST: lambda _msg: self.checkpoint(),
            ToAgent.STOP: self._on_stop,
            ToAgent.EVOLUTION_RESULT: self.on_evolution_result,
            ToAgent.WAL_APPLY: self._on_wal_apply,
            ToAgent.PROMOTE: self._on_promote,
        }
        return {kind.value: handler for kind, handler in table.items()}

    def _on_checkpoint_ack(self, msg: dict[str, Any]) -> None:
        self.checkpoint_id = msg.get("checkpoint_id") or self.checkpoint_id
        self.on_checkpoint_ack(msg)

    def _on_stop(self, msg: dict[str, Any]) -> None:
        self._stop = True

    def _on_wal_apply(self, msg: dict[str, Any]) -> None:
        """A shadow or standby follows the main's writes: apply them as a restore would."""
        entries = msg.get("wal_entries")
        if isinstance(entries, list) and entries:
            self.apply_wal_batch(entries)
            self.applied_lsn = int(msg.get("lsn", 0)) + len(entries) - 1
            self._mark_applied()
            if self.options.role == "standby":
                # Like a restore's state, what it applies is long-lived: no collection walks
                # it (one would, at some first request after a promotion, for milliseconds).
                gc.freeze()

    def _mark_applied(self) -> None:
        """Tell the manager, through the slot, how far this follower has applied (a
        standby's lag is read there, without a frame)."""
        if self._slot is not None:
            self._slot["applied_lsn"] = self.applied_lsn

    def _on_promote(self, msg: dict[str, Any]) -> None:
        """The main died and this standby takes its place, and its slot."""
        slot = msg.get("slot")
        if self.shm is not None and type(slot) is int:
            self.options.shm_slot = slot
            self._slot = self.shm.slot(slot)  # the heartbeat thread reads it on every beat
        self.options.role = "main"
        self.log(f"promoted to main (LSN {self.applied_lsn})")
        self.on_promote()

    def _on_request(self, msg: dict[str, Any]) -> None:
        timed = msg.get("timed")
        started = time.perf_counter()
        # Read inside the timed span, so that every wait counted falls in it: a preemption
        # between the two clocks would otherwise count as waiting but not as handling.
        waits = self._run_delay.ns() if timed else None
        reply: dict[str, Any] = {"type": FromAgent.RESPONSE.value, "id": msg.get("id")}
        try:
            reply["data"] = self.handle_request(msg.get("data"))
        except RequestError as exc:
            reply["error"] = str(exc)
            self._window.errors += 1
        except Exception as exc:
            reply["error"] = f"{type(exc).__name__}: {exc}"
            self._window.errors += 1
            self.log(f"request failed: {traceback.format_exc().rstrip()}")
        now = self._run_delay.ns() if timed else None
        took = time.perf_counter() - started
        window = self._window
        window.requests += 1
        window.latency_total += took
        if timed:  # the manager asks (for an evaluation): how long the handling took
            reply["took_ms"] = took * 1000
            if now is not None and waits is not None:  # of which it waited for a CPU
                reply["waited_ms"] = (now - waits) / 1e6
        self.send(reply)

    def _on_restore(self, msg: dict[str, Any]) -> None:
        # A long WAL tail arrives as one restore frame followed by "continue" frames.
        if not msg.get("continue"):
            self.restore(msg.get("snapshot"))
            self.checkpoint_id = msg.get("checkpoint_id") or self.checkpoint_id
            self.applied_lsn = int(msg.get("lsn") or 0)
        entries = msg.get("wal_entries")
        if entries:
            self.apply_wal_batch(entries)
            self.applied_lsn += len(entries)  # a restore's entries are consecutive
        if not msg.get("more"):
            self._mark_applied()
            self._send_ready()

    def _on_hot_reload(self, msg: dict[str, Any]) -> None:
        name = msg.get("module") or self.default_reload_module
        code = msg.get("code")
        if not isinstance(name, str) or name not in self.modules:
            known = ", ".join(sorted(self.modules)) or "none"
            reply = {"ok": False, "error": f"no reloadable module {name!r} (reloadable: {known})"}
        elif not isinstance(code, str):
            reply = {"ok": False, "error": "hot_reload needs the module source in 'code'"}
        else:
            reply = self._reload(name, code)
        self.send({"type": FromAgent.RELOAD_RESULT, "module": name, **reply})

    def _reload(self, name: str, code: str) -> dict[str, Any]:
        """Build the new module beside the old one; swap only when it imports and passes
        ``validate_module``. The old one is kept: ``call_module`` rolls back to it when the
        new code raises."""
        module = types.ModuleType(name)
        module.__file__ = f"<hot_reload {name}>"
        try:
            exec(compile(code, module.__file__, "exec"), module.__dict__)
            self.validate_module(name, module)
        except Exception as exc:
            self.log(f"hot_reload of {name} rejected: {type(exc).__name__}: {exc}")
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        self._previous[name] = self.modules[name]
        self.modules[name] = module
        self.log(f"hot_reload of {name}: new code active (previous kept for rollback)")
        return {"ok": True}
