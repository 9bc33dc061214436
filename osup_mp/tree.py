"""The osup-mp application: which components form the tree, and how a tree runs.

This module is the only place that knows the component list (the runtime core does not:
components are registered here as child specs). :func:`run_tree` is what ``osup-mp start``
runs in the foreground or in the daemon: it prepares the directories, takes the pidfile lock,
sets up logging, opens the control socket, starts the children in order, serves, and on the
way out removes everything it created.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from typing import Any

from loguru import logger

from osup_mp import logsetup
from osup_mp.config import Config
from osup_mp.pidfile import AlreadyRunning, PidFile
from osup_mp.runtime.control import ControlServer, Handler, Respond
from osup_mp.runtime.supervisor import ChildSpec, Restart, StartError, Supervisor
from osup_mp.telemetry import Telemetry

Notify = Callable[[bool, str], None]


def child_specs(cfg: Config) -> list[ChildSpec]:
    """The tree, in start order."""
    shutdown = cfg.supervisor.shutdown_timeout / 1000
    return [
        ChildSpec(
            "telemetry",
            functools.partial(Telemetry, cfg.telemetry.period / 1000, cfg.o_supervisor.data_dir),
            Restart.PERMANENT,
            shutdown_timeout=shutdown,
        ),
    ]


def prepare_dirs(cfg: Config) -> None:
    """Create every directory the tree uses, owner-only (0700)."""
    o = cfg.o_supervisor
    for path in (o.data_dir, o.run_dir, o.log_dir, o.checkpoint_dir, o.wal_dir):
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(path, 0o700)


def run_tree(
    cfg: Config,
    *,
    stderr_log: bool = True,
    notify: Notify | None = None,
    specs: list[ChildSpec] | None = None,
    private_fds: tuple[int, ...] = (),
) -> int:
    """Run a whole tree until it stops; return the process exit status.

    ``notify(ok, reason)`` is called once, when the tree is up or could not come up;
    ``private_fds`` (such as the pipe ``notify`` writes to) are closed in every child.
    """
    notify = notify or (lambda ok, reason: None)
    prepare_dirs(cfg)
    logsetup.configure_parent(cfg.logger, cfg.log_file, stderr=stderr_log)
    pidfile = PidFile(cfg.pidfile)
    stale = cfg.pidfile.exists()
    try:
        pidfile.acquire()
    except AlreadyRunning as exc:
        logger.error("cannot start: {}", exc)
        notify(False, str(exc))
        return 1
    if stale:
        logger.warning("took over the stale pidfile {} of a dead tree", cfg.pidfile)
    relay = logsetup.LogRelay()
    sup = Supervisor(
        specs if specs is not None else child_specs(cfg),
        strategy=cfg.supervisor.strategy,
        max_restarts=cfg.supervisor.max_restarts,
        max_seconds=cfg.supervisor.max_seconds,
        child_setup=lambda name: logsetup.configure_child(cfg.logger, name, relay.write_fd),
    )
    sup.add_reader(relay.read_fd, relay.drain, during_waits=True)
    sup.close_in_children(relay.close_read)
    sup.close_in_children(pidfile.close)
    for fd in private_fds:
        sup.close_in_children(functools.partial(os.close, fd))
    control = ControlServer(
        cfg.control_socket, control_handlers(cfg, sup), max_frame=cfg.control.max_frame
    )
    control.attach(sup.add_reader, sup.remove_reader)
    sup.after_events.append(control.flush)
    sup.close_in_children(control.close)
    sup.install_signals()
    logger.info(
        "osup-mp starting: pid {}, env {}, config {}",
        os.getpid(),
        cfg.env,
        cfg.source or "<defaults>",
    )
    try:
        try:
            sup.start()
        except StartError as exc:
            logger.error("tree could not start: {}", exc)
            notify(False, str(exc))
            return 1
        logger.info("tree is up: {}", ", ".join(f"{c.name}={c.pid}" for c in sup.children))
        notify(True, "")
        code = sup.run()
        logger.info("osup-mp stopped (exit status {})", code)
        return code
    finally:
        control.shutdown()
        relay.close()
        pidfile.release()


def control_handlers(cfg: Config, sup: Supervisor) -> dict[str, Handler]:
    """The control socket's commands."""
    started = time.monotonic()

    def ping(args: dict[str, Any], respond: Respond) -> None:
        respond(True, "pong")

    def stop(args: dict[str, Any], respond: Respond) -> None:
        respond(True, {"stopping": True, "pid": os.getpid()})
        logger.info("stop requested over the control socket")
        sup.request_stop()

    def config(args: dict[str, Any], respond: Respond) -> None:
        respond(True, cfg.to_dict())

    def restart(args: dict[str, Any], respond: Respond) -> None:
        name = str(args.get("name", ""))
        if sup.child(name) is None:
            respond(False, f"no such component {name!r} (known: {_names(sup)})")
            return
        logger.info("restart of {} requested over the control socket", name)
        try:
            child = sup.restart_child(name)
        except StartError as exc:
            respond(False, str(exc))
            return
        respond(True, {"name": name, "pid": child.pid})

    def call(args: dict[str, Any], respond: Respond) -> None:
        name = str(args.get("name", ""))
        request = args.get("request")
        if isinstance(request, list):
            request = tuple(request)  # component requests are tuples; msgpack has only lists
        timeout = float(args.get("timeout", 5.0))
        if not sup.call_child(name, request, respond, timeout):
            respond(False, f"component {name!r} is not running (known: {_names(sup)})")

    def status(args: dict[str, Any], respond: Respond) -> None:
        now = time.monotonic()
        components = [
            {
                "name": c.name,
                "pid": c.pid,
                "state": c.state.value,
                "restart": c.spec.restart.value,
                "restarts": c.restarts,
                "uptime_s": round(now - c.started_at, 3) if c.pid else None,
                "rss_bytes": None,
                "cpu_percent": None,
                "last_exit": c.last_exit or None,
            }
            for c in sup.children
        ]
        data: dict[str, Any] = {
            "running": True,
            "pid": os.getpid(),
            "env": cfg.env,
            "config": str(cfg.source) if cfg.source else None,
            "uptime_s": round(now - started, 3),
            "components": components,
        }

        def with_sample(ok: bool, sample: Any) -> None:
            if ok:
                by_pid = {p["pid"]: p for p in sample["processes"]}
                for comp in components:
                    figures = by_pid.get(comp["pid"], {})
                    comp["rss_bytes"] = figures.get("rss_bytes")
                    comp["cpu_percent"] = figures.get("cpu_percent")
                supervisor = by_pid.get(os.getpid(), {})
                data["rss_bytes"] = supervisor.get("rss_bytes")
                data["cpu_percent"] = supervisor.get("cpu_percent")
                data["processes"] = sample["processes"]
                data["host"] = sample["host"]
            respond(True, data)

        if not sup.call_child("telemetry", ("sample",), with_sample, timeout=2.0):
            respond(True, data)

    return {
        "ping": ping,
        "status": status,
        "stop": stop,
        "restart": restart,
        "config": config,
        "call": call,
    }


def _names(sup: Supervisor) -> str:
    return ", ".join(c.name for c in sup.children)
