"""Commands about the tree itself: ping, status, stop, config, restart, call."""

from __future__ import annotations

import os
import time
from typing import Any

from loguru import logger

from osup_mp.app.commands.context import Context
from osup_mp.components import messages as m
from osup_mp.runtime.children import ChildState
from osup_mp.runtime.control import Respond
from osup_mp.wire import api


def ping(ctx: Context, args: dict[str, Any], respond: Respond) -> None:
    respond(True, "pong")


def stop(ctx: Context, args: dict[str, Any], respond: Respond) -> None:
    respond(True, {"stopping": True, "pid": os.getpid()})
    logger.info("stop requested over the control socket")
    ctx.sup.request_stop()


def config(ctx: Context, args: dict[str, Any], respond: Respond) -> None:
    respond(True, ctx.cfg.to_dict())


def restart(ctx: Context, args: dict[str, Any], respond: Respond) -> None:
    name = args["name"]
    child = ctx.sup.child(name)
    if child is None:
        respond(False, f"no such component {name!r} (known: {ctx.names()})")
        return
    logger.info("restart of {} requested over the control socket", name)

    def restarted(ok: bool, detail: str) -> None:
        respond(ok, {"name": name, "pid": child.pid} if ok else detail)

    ctx.sup.restart_child(name, restarted)


def call(ctx: Context, args: dict[str, Any], respond: Respond) -> None:
    # Sent raw ([kind, *args] or a bare kind): the component turns it into its record.
    name, request = args["name"], args["request"]
    if not ctx.sup.call_child(name, request, respond, float(args.get("timeout") or 5.0)):
        respond(False, f"component {name!r} is not running (known: {ctx.names()})")


def status(ctx: Context, args: dict[str, Any], respond: Respond) -> None:
    sup, now = ctx.sup, time.monotonic()
    components = [
        {
            "name": c.name,
            "pid": c.pid,
            "state": c.state.value,
            "restart": c.spec.restart.value,
            "restarts": c.restarts,
            # Up since it was ready: a starting child has no uptime yet.
            "uptime_s": round(now - c.started_at, 3) if c.state is ChildState.RUNNING else None,
            "rss_bytes": None,
            "cpu_percent": None,
            "cpus": None,
            "last_exit": c.last_exit or None,
        }
        for c in sup.children
    ]
    data: dict[str, Any] = {
        "running": True,
        "state": sup.phase,
        "pid": os.getpid(),
        "env": ctx.cfg.env,
        "config": str(ctx.cfg.source) if ctx.cfg.source else None,
        "uptime_s": round(now - ctx.started, 3),
        "components": components,
    }

    def with_sample(ok: bool, sample: Any) -> None:
        if ok:
            by_pid = {p["pid"]: p for p in sample["processes"]}
            for comp in components:
                figures = by_pid.get(comp["pid"], {})
                comp["rss_bytes"] = figures.get("rss_bytes")
                comp["cpu_percent"] = figures.get("cpu_percent")
                comp["cpus"] = figures.get("cpus")
            supervisor = by_pid.get(os.getpid(), {})
            data["rss_bytes"] = supervisor.get("rss_bytes")
            data["cpu_percent"] = supervisor.get("cpu_percent")
            data["processes"] = sample["processes"]
            data["host"] = sample["host"]
        respond(True, data)

    def with_agents(agents: list[Any]) -> None:
        data["agents"] = [a for a in agents if isinstance(a, dict)]
        if not sup.call_child("telemetry", m.Sample(), with_sample, timeout=2.0):
            respond(True, data)

    ctx.gather(ctx.agent_names(), m.AgentStatus(), with_agents)


HANDLERS = {
    api.PING: ping,
    api.STATUS: status,
    api.STOP: stop,
    api.CONFIG: config,
    api.RESTART: restart,
    api.CALL: call,
}
