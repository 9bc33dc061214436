"""Commands about the traffic splitter: mirrors (copies of the main agent's read-only
requests sent to shadows) and recordings (a sample of them kept for a client)."""

from __future__ import annotations

import itertools
from typing import Any

from osup_mp.app.commands.context import Context
from osup_mp.components import messages as m
from osup_mp.components.watchdog import manager_name
from osup_mp.runtime.control import Respond
from osup_mp.wire import api

_NAMES = itertools.count(1)


def _call(ctx: Context, request: Any, respond: Respond) -> None:
    if not ctx.sup.call_child("splitter", request, respond, timeout=10.0):
        respond(False, "component 'splitter' is not running")


def start(ctx: Context, args: dict[str, Any], respond: Respond) -> None:
    arms = list(args["to"])
    unknown = [a for a in arms if a == "main" or ctx.sup.child(manager_name(a)) is None]
    if unknown or not arms:
        respond(
            False, f"no shadow {', '.join(map(repr, unknown)) or 'given'} (osup-mp shadow list)"
        )
        return
    ratio = 0.1 if args.get("ratio") is None else float(args["ratio"])
    _call(ctx, m.MirrorStart(args.get("id") or f"m{next(_NAMES)}", arms, ratio), respond)


def stop(ctx: Context, args: dict[str, Any], respond: Respond) -> None:
    _call(ctx, m.MirrorStop(args["id"]), respond)


def status(ctx: Context, args: dict[str, Any], respond: Respond) -> None:
    _call(ctx, m.MirrorStatus(), respond)


def record(ctx: Context, args: dict[str, Any], respond: Respond) -> None:
    share = 0.1 if args.get("share") is None else float(args["share"])
    name = args.get("id") or f"r{next(_NAMES)}"
    _call(ctx, m.TrafficRecord(name, share, args["count"], float(args["seconds"])), respond)


def take(ctx: Context, args: dict[str, Any], respond: Respond) -> None:
    _call(ctx, m.TrafficTake(args["id"], bool(args.get("stop"))), respond)


HANDLERS = {
    api.MIRROR_START: start,
    api.MIRROR_STOP: stop,
    api.MIRROR_STATUS: status,
    api.TRAFFIC_RECORD: record,
    api.TRAFFIC_TAKE: take,
}
