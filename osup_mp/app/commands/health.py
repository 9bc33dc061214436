"""Commands about agent health: the health monitor's metrics, history, transitions, compare."""

from __future__ import annotations

from typing import Any

from osup_mp.app.commands.context import Context
from osup_mp.components import messages as m
from osup_mp.runtime.control import Respond
from osup_mp.wire import api


def _call(ctx: Context, request: Any, respond: Respond) -> None:
    if not ctx.sup.call_child("health", request, respond, timeout=10.0):
        respond(False, "component 'health' is not running")


def health(ctx: Context, args: dict[str, Any], respond: Respond) -> None:
    instance_id = args.get("id")
    events = args.get("events")

    def with_metrics(ok: bool, metrics: Any) -> None:
        if not ok:
            respond(False, metrics)
            return

        def with_events(ok: bool, found: Any) -> None:
            if ok:
                respond(True, {"metrics": metrics, "events": found})
            else:
                respond(False, found)

        n = 20 if events is None else int(events)
        _call(ctx, m.HealthEvents(n, instance_id), with_events)

    _call(ctx, m.GetMetrics(instance_id), with_metrics)


def history(ctx: Context, args: dict[str, Any], respond: Respond) -> None:
    seconds = args.get("seconds")
    _call(ctx, m.MetricsHistory(args["id"], None if seconds is None else float(seconds)), respond)


def compare(ctx: Context, args: dict[str, Any], respond: Respond) -> None:
    seconds = float(args.get("seconds") or 60.0)
    _call(ctx, m.CompareInstances(args["a"], args["b"], seconds), respond)


HANDLERS = {api.HEALTH: health, api.HEALTH_HISTORY: history, api.HEALTH_COMPARE: compare}
