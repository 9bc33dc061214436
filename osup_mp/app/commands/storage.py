"""Commands about durable state: checkpoints (the vault, the main agent) and the WAL."""

from __future__ import annotations

from typing import Any

from osup_mp.app.commands.context import Context
from osup_mp.runtime.control import Respond
from osup_mp.wire import api


def _forward(name: str, kind: str, *keys: str, timeout: float = 30.0) -> Any:
    """A command answered by one component: ``(kind, args[key], ...)``."""

    def handler(ctx: Context, args: dict[str, Any], respond: Respond) -> None:
        request = (kind, *(args[k] for k in keys))
        if not ctx.sup.call_child(name, request, respond, timeout):
            respond(False, f"component {name!r} is not running")

    return handler


HANDLERS = {
    api.CHECKPOINT_CREATE: _forward("agent:main", "checkpoint", timeout=60.0),
    api.CHECKPOINT_RESTORE: _forward("agent:main", "restore_from", "id"),
    api.CHECKPOINT_LIST: _forward("vault", "list"),
    api.CHECKPOINT_SHOW: _forward("vault", "show", "id"),
    api.CHECKPOINT_DELETE: _forward("vault", "delete", "id"),
    api.WAL_STATS: _forward("wal", "stats"),
    api.WAL_TAIL: _forward("wal", "tail", "n"),
    api.WAL_VERIFY: _forward("wal", "verify", timeout=120.0),
}
