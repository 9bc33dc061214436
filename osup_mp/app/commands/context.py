"""What a control command's handler may use: the config, the supervisor, the segment."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from osup_mp.components.watchdog import manager_name
from osup_mp.config import Config
from osup_mp.runtime.supervisor import Supervisor
from osup_mp.storage.shm.segment import MAIN_SLOT, SLOT_COUNT, STANDBY_SLOT, SharedState


@dataclass(slots=True)
class Context:
    cfg: Config
    sup: Supervisor
    shm: SharedState
    started: float = field(default_factory=time.monotonic)
    shadow_slots: dict[str, int] = field(default_factory=dict)

    def names(self) -> str:
        """The components, for error messages."""
        return ", ".join(c.name for c in self.sup.children)

    def agent_names(self) -> list[str]:
        return [c.name for c in self.sup.children if c.name.startswith("agent:")]

    def shadows(self) -> dict[str, int]:
        """The shadows in the tree and their slots."""
        alive = {i: s for i, s in self.shadow_slots.items() if self.sup.child(manager_name(i))}
        self.shadow_slots = alive
        return alive

    def limited(self) -> int:
        """Shadows and standbys running: what ``max_concurrent_shadows`` counts."""
        return len(self.shadows()) + (1 if self.cfg.agent.standby else 0)

    def allocate_slot(self, instance_id: str) -> int | str:
        """A shared-memory slot for a new shadow (the main agent and its standby have
        theirs), or why not."""
        alive = self.shadows()
        limit = self.cfg.o_supervisor.max_concurrent_shadows
        if self.limited() >= limit:
            standby = " (the main's standby counts as one)" if self.cfg.agent.standby else ""
            return f"[o_supervisor] max_concurrent_shadows ({limit}) reached{standby}"
        used = set(alive.values()) | {MAIN_SLOT, STANDBY_SLOT}
        free = next((s for s in range(SLOT_COUNT) if s not in used), None)
        if free is None:
            return "no free shared-memory slot"
        self.shadow_slots[instance_id] = free
        return free

    def gather(self, names: list[str], request: Any, done: Callable[[list[Any]], None]) -> None:
        """Call every child in ``names`` at once; ``done(results)`` when all answered (errors
        and children that are not running give None)."""
        results: list[Any] = [None] * len(names)
        pending = len(names)
        if not pending:
            done(results)
            return

        def one(index: int) -> Callable[[bool, Any], None]:
            def answer(ok: bool, value: Any) -> None:
                nonlocal pending
                results[index] = value if ok else None
                pending -= 1
                if pending == 0:
                    done(results)

            return answer

        for index, name in enumerate(names):
            if not self.sup.call_child(name, request, one(index), timeout=2.0):
                one(index)(False, None)
