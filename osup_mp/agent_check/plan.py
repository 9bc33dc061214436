"""What ``agent-check`` checks, in report order, the figures its checks use, and one
check's result. Apart from the session (the transport) and the checker (the checks), so
that a report can be read and written without either.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

CHECKS: tuple[str, ...] = (
    "starts",
    "frames",
    "heartbeats",
    "requests",
    "checkpoint",
    "hot_reload",
    "restore",
    "shutdown",
)
"""Every check, in the order they are reported."""

REQUEST_BURST = 20
"""How many ``process_request`` frames the ``requests`` check sends at once."""

MIN_HEARTBEATS = 3
"""How many heartbeats the ``heartbeats`` check waits for."""

HEARTBEAT_GAP_FACTOR = 2.5
"""The longest allowed gap between heartbeats, in heartbeat intervals."""

RELOAD_CODE = "x = 1\n"
"""The module sent in ``hot_reload``: valid Python that a validating agent rejects."""

EMPTY_SNAPSHOT: dict[str, Any] = {"agent_state": {}, "memory_blocks": [], "tool_registry": {}}
"""Restored when the ``checkpoint`` check produced no data (the seed's empty checkpoint)."""


@dataclass(slots=True)
class CheckResult:
    """The outcome of one check; ``detail`` is the reason on failure."""

    check: str
    ok: bool
    detail: str

    def line(self) -> str:
        """``PASS <check>`` or ``FAIL <check>: <reason>``."""
        return f"PASS {self.check}" if self.ok else f"FAIL {self.check}: {self.detail}"

    def as_dict(self) -> dict[str, Any]:
        return {"check": self.check, "ok": self.ok, "detail": self.detail}
