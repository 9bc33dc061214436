"""Commands about shadow experiments, served by the evolution arbiter."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from osup_mp.app.commands.context import Context
from osup_mp.components import messages as m
from osup_mp.runtime.control import Respond
from osup_mp.wire import api

Handler = Callable[[Context, dict[str, Any], Respond], None]


def _to_arbiter(make: Callable[[dict[str, Any]], Any]) -> Handler:
    """A command the arbiter serves: ``make(args)`` is its record (arguments checked)."""

    def handler(ctx: Context, args: dict[str, Any], respond: Respond) -> None:
        if not ctx.sup.call_child("arbiter", make(args), respond, timeout=10.0):
            respond(False, "component 'arbiter' is not running")

    return handler


HANDLERS = {
    api.EXPERIMENT_START: _to_arbiter(
        lambda a: m.ExperimentStart(
            a["code"], a["target"], a.get("ratio"), a.get("duration"), a.get("reason") or ""
        )
    ),
    api.EXPERIMENT_STOP: _to_arbiter(lambda a: m.ExperimentStop(a["id"])),
    api.EXPERIMENT_LIST: _to_arbiter(lambda a: m.ExperimentList()),
    api.EXPERIMENT_SHOW: _to_arbiter(lambda a: m.ExperimentShow(a["id"])),
    api.HISTORY: _to_arbiter(lambda a: m.ExperimentHistory(a.get("n") or 100)),
}
