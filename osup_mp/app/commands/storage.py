"""Commands about durable state: checkpoints (the vault, the main agent) and the WAL."""

from __future__ import annotations

from typing import Any

from osup_mp.app.commands.context import Context
from osup_mp.components import messages as m
from osup_mp.runtime.control import Respond
from osup_mp.wire import api


def _forward(name: str, record: type, *keys: str, timeout: float = 30.0) -> Any:
    """A command answered by one component: ``record(args[key], ...)``."""

    def handler(ctx: Context, args: dict[str, Any], respond: Respond) -> None:
        request = record(*(args[k] for k in keys))
        if not ctx.sup.call_child(name, request, respond, timeout):
            respond(False, f"component {name!r} is not running")

    return handler


HANDLERS = {
    api.CHECKPOINT_CREATE: _forward("agent:main", m.CreateCheckpoint, timeout=60.0),
    api.CHECKPOINT_RESTORE: _forward("agent:main", m.RestoreFrom, "id"),
    api.CHECKPOINT_LIST: _forward("vault", m.ListCheckpoints),
    api.CHECKPOINT_SHOW: _forward("vault", m.ShowCheckpoint, "id"),
    api.CHECKPOINT_DELETE: _forward("vault", m.DeleteCheckpoint, "id"),
    api.WAL_STATS: _forward("wal", m.WalStats),
    api.WAL_TAIL: _forward("wal", m.WalTail, "n"),
    api.WAL_VERIFY: _forward("wal", m.WalVerify, timeout=120.0),
}
