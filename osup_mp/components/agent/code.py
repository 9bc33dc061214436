"""The code an agent runs beyond its own: hot reloads sent, and the sources they made active.

The manager keeps, per module, the stack of sources successfully hot-reloaded into its agent
(newest last). The one decision: a reload is part of the agent's state, not of one agent
process. So after every restart the newest source of each module is loaded again before the
agent serves anything new; a control arm can be given exactly the main's code; a revert
knows what to go back to; and the main's reloads are kept in ``code.json`` in the data
directory, so a promotion survives restarts of the manager and of the whole tree.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loguru import logger

from osup_mp.lowlevel.files import atomic_write
from osup_mp.runtime.calls import CallError
from osup_mp.runtime.component import Caller
from osup_mp.wire.frames import ToAgent

MAX_DEPTH = 8  # sources kept per module: enough to revert a few promotions, bounded


class CodeBook:
    def __init__(self, instance_id: str, send: Callable[[dict[str, Any]], None], path: Path | None):
        self.instance_id = instance_id
        self.send = send
        self.path = path  # None: not kept across restarts (shadows)
        self.active: dict[str, list[str]] = self._load()
        # Reloads sent, answered in order: (who asked, the source, whether it is new code
        # to keep, not a source kept already being loaded again).
        self.pending: deque[tuple[Caller | None, str, bool]] = deque()

    def reload(
        self, caller: Caller | None, code: str, module: str | None, *, new: bool = True
    ) -> None:
        frame = {"type": ToAgent.HOT_RELOAD, "code": code, "module": module}
        self.send(frame | {"timestamp": time.time()})
        self.pending.append((caller, code, new))

    def result(self, msg: dict[str, Any]) -> tuple[Caller | None, dict[str, Any]]:
        """The agent's ``reload_result``: who asked, and the answer for them."""
        module = msg.get("module")
        result = {"ok": bool(msg.get("ok")), "module": module, "error": msg.get("error")}
        if not self.pending:  # not an answer: the SDK rolled back code that raised
            if isinstance(module, str) and self.active.get(module):
                self.active[module].pop()
                self._save()
            logger.warning("agent {}: code rolled back: {}", self.instance_id, result["error"])
            return None, result
        caller, code, new = self.pending.popleft()
        if new and result["ok"] and isinstance(module, str):
            stack = self.active.setdefault(module, [])
            stack.append(code)
            del stack[:-MAX_DEPTH]
            self._save()
        elif not new and not result["ok"]:
            logger.error(
                "agent {}: loading {} again after a restart failed: {}",
                self.instance_id,
                module,
                result["error"],
            )
        return caller, result

    def reapply(self) -> None:
        """After a (re)start: load the newest source of every module again."""
        for module, stack in self.active.items():
            if stack:
                self.reload(None, stack[-1], module, new=False)

    def revert(self, module: str) -> bool:
        """Drop the newest source of ``module``; True when the agent must restart to run its
        own code again (no older source to load)."""
        stack = self.active.get(module)
        if not stack:
            raise CallError(f"module {module!r} was not hot-reloaded: nothing to revert")
        stack.pop()
        self._save()
        if stack:
            self.reload(None, stack[-1], module, new=False)
            return False
        return True

    def current(self) -> dict[str, str]:
        return {module: stack[-1] for module, stack in self.active.items() if stack}

    def fail_all(self) -> list[Caller]:
        callers = [caller for caller, _, _ in self.pending if caller is not None]
        self.pending.clear()
        return callers

    def _load(self) -> dict[str, list[str]]:
        if self.path is None or not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text())
            if not isinstance(data, dict) or not all(
                isinstance(v, list) and all(isinstance(s, str) for s in v) for v in data.values()
            ):
                raise ValueError("not a map of module -> list of sources")
        except (OSError, ValueError) as exc:
            logger.error(
                "agent {}: {} unreadable ({}): starting with the agent's own code",
                self.instance_id,
                self.path,
                exc,
            )
            return {}
        return {str(k): list(v) for k, v in data.items()}

    def _save(self) -> None:
        if self.path is None:
            return
        data = json.dumps({m: s for m, s in self.active.items() if s}).encode()
        try:
            atomic_write(self.path, data)
        except OSError as exc:  # the code runs; only its survival of a restart is at risk
            logger.error("agent {}: cannot save {}: {}", self.instance_id, self.path, exc)
