"""Commands about agents: shadows, hot reload, agent restarts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from osup_mp.app.commands.context import Context
from osup_mp.app.specs import agent_spec
from osup_mp.components import messages as m
from osup_mp.components.agent import Deadlines
from osup_mp.components.watchdog import manager_name
from osup_mp.runtime.control import Respond
from osup_mp.wire import api


def shadow_start(ctx: Context, args: dict[str, Any], respond: Respond) -> None:
    instance_id = args["id"]
    problem = api.shadow_id_problem(instance_id)
    if problem is not None:
        respond(False, problem)
        return
    if ctx.sup.child(manager_name(instance_id)) is not None:
        respond(False, f"shadow {instance_id} already exists")
        return
    if any(args.get(k) == 0 for k in ("cpu_seconds", "wall_seconds")):
        respond(False, "a deadline must be above 0 seconds")
        return
    slot = ctx.allocate_slot(instance_id)
    if isinstance(slot, str):
        respond(False, slot)
        return
    spec = agent_spec(
        ctx.cfg,
        ctx.shm,
        role="shadow",
        instance_id=instance_id,
        slot=slot,
        command=args.get("command"),
        deadlines=Deadlines(args.get("cpu_seconds"), args.get("wall_seconds")),
    )

    def started(ok: bool, detail: str) -> None:
        if ok:
            respond(True, {"id": instance_id, "component": spec.name, "slot": slot})
        else:
            respond(False, detail)

    ctx.sup.start_child(spec, started)


def shadow_stop(ctx: Context, args: dict[str, Any], respond: Respond) -> None:
    name = manager_name(args["id"])
    if ctx.sup.child(name) is None or name == manager_name("main"):
        respond(False, f"no shadow {args['id']!r}")
        return
    ctx.sup.terminate_child(name, lambda: respond(True, {"stopped": args["id"]}))


def _to_agent(record: type, *keys: str) -> Any:
    """A command for one agent's manager (``id``, default main): ``record(args[key]...)``;
    the server has checked the arguments against the command's declaration."""

    def handler(ctx: Context, args: dict[str, Any], respond: Respond) -> None:
        name = manager_name(args.get("id") or "main")
        request = record(*(args.get(k) for k in keys))
        if not ctx.sup.call_child(name, request, respond, float(args.get("timeout") or 30.0)):
            respond(False, f"no running agent manager {name!r}")

    return handler


def tree_calls(ctx: Context) -> dict[type, Callable[[Any, Any, Respond], None]]:
    """What components may ask of the tree: the arbiter starts and stops its arms' shadows."""

    def start(child: Any, request: m.StartShadow, reply: Respond) -> None:
        shadow_start(ctx, {"id": request.id}, reply)

    def stop(child: Any, request: m.StopShadow, reply: Respond) -> None:
        shadow_stop(ctx, {"id": request.id}, reply)

    def count(child: Any, request: m.ShadowCount, reply: Respond) -> None:
        limit = ctx.cfg.o_supervisor.max_concurrent_shadows
        reply(True, {"running": ctx.limited(), "max": limit})

    return {m.StartShadow: start, m.StopShadow: stop, m.ShadowCount: count}


HANDLERS = {
    api.SHADOW_START: shadow_start,
    api.SHADOW_STOP: shadow_stop,
    api.HOT_RELOAD: _to_agent(m.HotReload, "code", "module"),
    api.AGENT_RESTART: _to_agent(m.RestartAgent),
}
