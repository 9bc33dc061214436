"""The osup-mp application: which components form the tree, and how a tree runs.

This module is the only place that knows the component list (the runtime core does not:
components are registered here as child specs). :func:`run_tree` is what ``osup-mp start``
runs in the foreground or in the daemon: it prepares the directories, takes the pidfile lock,
sets up logging, opens the control socket, starts the children in order, serves, and on the
way out removes everything it created.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import time
from collections.abc import Callable
from typing import Any

from loguru import logger

from osup_mp.app import logs
from osup_mp.components.agent import AgentManager
from osup_mp.components.telemetry import Telemetry
from osup_mp.components.vault import MemoryVault
from osup_mp.components.wal import WALManager
from osup_mp.components.watchdog import Watchdog, manager_name
from osup_mp.config import Config
from osup_mp.lowlevel import spin
from osup_mp.lowlevel.pidfile import AlreadyRunning, PidFile
from osup_mp.runtime.control import ControlServer, Handler, Respond
from osup_mp.runtime.supervisor import ChildSpec, Restart, Supervisor
from osup_mp.storage.shm.segment import SLOT_COUNT, SharedState, ShmError

MAIN_SLOT = 0

Notify = Callable[[bool, str], None]


SpecsFactory = Callable[[SharedState], list[ChildSpec]]


def telemetry_spec(cfg: Config) -> ChildSpec:
    return ChildSpec(
        "telemetry",
        functools.partial(Telemetry, cfg.telemetry.period / 1000, cfg.o_supervisor.data_dir),
        Restart.PERMANENT,
        shutdown_timeout=cfg.supervisor.shutdown_timeout / 1000,
    )


def agent_spec(
    cfg: Config,
    shm: SharedState,
    *,
    role: str,
    instance_id: str,
    slot: int,
    command: list[str] | None = None,
) -> ChildSpec:
    """An agent manager: ``agent:main`` is permanent; shadows are transient dynamic children."""
    factory = functools.partial(
        AgentManager, cfg, shm, role=role, instance_id=instance_id, slot=slot, command=command
    )
    restart = Restart.PERMANENT if role == "main" else Restart.TRANSIENT
    # Stopping a manager stops its agent first: give it the agent's stop timeout on top.
    shutdown = (cfg.supervisor.shutdown_timeout + cfg.agent.stop_timeout) / 1000
    return ChildSpec(manager_name(instance_id), factory, restart, shutdown_timeout=shutdown)


def child_specs(cfg: Config, shm: SharedState) -> list[ChildSpec]:
    """The tree, in start order (the seed's: telemetry, vault, WAL, …, agents)."""
    shutdown = cfg.supervisor.shutdown_timeout / 1000
    return [
        telemetry_spec(cfg),
        ChildSpec(
            "vault",
            functools.partial(MemoryVault, cfg),
            Restart.PERMANENT,
            shutdown_timeout=shutdown,
        ),
        ChildSpec(
            "wal", functools.partial(WALManager, cfg), Restart.PERMANENT, shutdown_timeout=shutdown
        ),
        ChildSpec(
            "watchdog",
            functools.partial(Watchdog, cfg, shm),
            Restart.PERMANENT,
            shutdown_timeout=shutdown,
        ),
        agent_spec(cfg, shm, role="main", instance_id="main", slot=MAIN_SLOT),
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
    specs: SpecsFactory | None = None,
    private_fds: tuple[int, ...] = (),
) -> int:
    """Run a whole tree until it stops; return the process exit status.

    ``notify(ok, reason)`` is called once, when the tree is up or could not come up;
    ``private_fds`` (such as the pipe ``notify`` writes to) are closed in every child.
    """
    notify = notify or (lambda ok, reason: None)
    spin.configure(cfg.supervisor.busy_poll_us)  # before any fork: every component inherits it
    prepare_dirs(cfg)
    relay = logs.LogRelay()
    logs.configure_parent(cfg.logger, cfg.log_file, stderr=stderr_log, relay=relay)
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(relay.close)
        pidfile = PidFile(cfg.pidfile)
        stale = cfg.pidfile.exists()
        try:
            pidfile.acquire()
        except AlreadyRunning as exc:
            logger.error("cannot start: {}", exc)
            notify(False, str(exc))
            return 1
        cleanup.callback(pidfile.release)
        if stale:
            logger.warning("took over the stale pidfile {} of a dead tree", cfg.pidfile)
        o = cfg.o_supervisor
        try:
            shm, note = SharedState.create(o.shared_memory_name, o.shared_memory_size)
        except ShmError as exc:
            logger.error("cannot start: {}", exc)
            notify(False, str(exc))
            return 1
        cleanup.callback(shm.close)
        if note:
            logger.warning("{}", note)
        specs = specs or functools.partial(child_specs, cfg)
        return _run(cfg, shm, pidfile, relay, notify, specs, private_fds)
    raise AssertionError("unreachable")


def _run(
    cfg: Config,
    shm: SharedState,
    pidfile: PidFile,
    relay: logs.LogRelay,
    notify: Notify,
    specs: SpecsFactory,
    private_fds: tuple[int, ...],
) -> int:
    sup = Supervisor(
        specs(shm),
        strategy=cfg.supervisor.strategy,
        max_restarts=cfg.supervisor.max_restarts,
        max_seconds=cfg.supervisor.max_seconds,
        child_setup=lambda name: logs.configure_child(cfg.logger, name),
    )
    sup.add_reader(relay.read_fd, relay.drain, drain_on_exit=True)
    sup.call_handlers["fatal"] = functools.partial(_fatal, sup)
    sup.close_in_children(relay.close_read)
    sup.close_in_children(pidfile.close)
    for fd in private_fds:
        sup.close_in_children(functools.partial(os.close, fd))
    control = ControlServer(
        cfg.control_socket, control_handlers(cfg, sup, shm), max_frame=cfg.control.max_frame
    )
    control.attach(sup.set_watch)
    sup.after_events.append(control.flush)
    sup.deadlines.append(control.next_deadline)
    sup.close_in_children(control.close)
    sup.install_signals()
    logger.info(
        "osup-mp starting: pid {}, env {}, config {}",
        os.getpid(),
        cfg.env,
        cfg.source or "<defaults>",
    )

    def started() -> None:
        logger.info("tree is up: {}", ", ".join(f"{c.name}={c.pid}" for c in sup.children))
        notify(True, "")

    try:
        code = sup.run(started)
    finally:
        control.shutdown()
    if sup.start_failure is not None:
        logger.error("tree could not start: {}", sup.start_failure)
        notify(False, sup.start_failure)
    logger.info("osup-mp stopped (exit status {})", code)
    return code


def _fatal(sup: Supervisor, child: Any, request: tuple[Any, ...]) -> bool:
    """A component hit an error that restarting cannot fix (e.g. fsync): stop the tree."""
    logger.critical("{}: {} — stopping the tree", child.name, request[1])
    sup.request_stop(1)
    return True


def control_handlers(cfg: Config, sup: Supervisor, shm: SharedState) -> dict[str, Handler]:
    """The control socket's commands."""
    started = time.monotonic()
    shadows = ShadowSlots(cfg)

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
        child = sup.child(name)

        def restarted(ok: bool, detail: str) -> None:
            respond(ok, {"name": name, "pid": child.pid if child else None} if ok else detail)

        sup.restart_child(name, restarted)

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
            "state": sup.phase,
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

        def with_agents(agents: list[Any]) -> None:
            data["agents"] = [a for a in agents if isinstance(a, dict)]
            if not sup.call_child("telemetry", ("sample",), with_sample, timeout=2.0):
                respond(True, data)

        _gather(sup, _agent_names(sup), ("status",), with_agents)

    def shadow_start(args: dict[str, Any], respond: Respond) -> None:
        instance_id = str(args.get("id") or "")
        if not _ID.fullmatch(instance_id) or instance_id == "main":
            respond(False, "a shadow id is 1-32 of [A-Za-z0-9_-], and not 'main'")
            return
        if sup.child(manager_name(instance_id)) is not None:
            respond(False, f"shadow {instance_id} already exists")
            return
        slot = shadows.allocate(instance_id, sup)
        if isinstance(slot, str):
            respond(False, slot)
            return
        command = args.get("command")
        if command is not None and (
            not isinstance(command, list) or not all(isinstance(c, str) for c in command)
        ):
            respond(False, "command is a list of strings")
            return
        spec = agent_spec(
            cfg, shm, role="shadow", instance_id=instance_id, slot=slot, command=command
        )

        def started(ok: bool, detail: str) -> None:
            if ok:
                respond(True, {"id": instance_id, "component": spec.name, "slot": slot})
            else:
                respond(False, detail)

        sup.start_child(spec, started)

    def shadow_stop(args: dict[str, Any], respond: Respond) -> None:
        name = manager_name(str(args.get("id") or ""))
        if sup.child(name) is None or name == manager_name("main"):
            respond(False, f"no shadow {args.get('id')!r}")
            return
        sup.terminate_child(name, lambda: respond(True, {"stopped": args.get("id")}))

    def agent_call(kind: str, *keys: str) -> Handler:
        """A command for one agent's manager (``id``, default main): ``(kind, args[key]...)``;
        absent keys are passed as None and checked by the manager."""

        def handler(args: dict[str, Any], respond: Respond) -> None:
            name = manager_name(str(args.get("id") or "main"))
            request = (kind, *(args.get(k) for k in keys))
            timeout = float(args.get("timeout", 30.0))
            if not sup.call_child(name, request, respond, timeout):
                respond(False, f"no running agent manager {name!r}")

        return handler

    def forward(name: str, kind: str, *keys: str, timeout: float = 30.0) -> Handler:
        """A command answered by one component: ``(kind, args[key], ...)``."""

        def handler(args: dict[str, Any], respond: Respond) -> None:
            missing = [k for k in keys if not isinstance(args.get(k), str | int)]
            if missing:
                respond(False, f"missing argument: {', '.join(missing)}")
                return
            request = (kind, *(args[k] for k in keys))
            if not sup.call_child(name, request, respond, timeout):
                respond(False, f"component {name!r} is not running")

        return handler

    return {
        "checkpoint_create": forward("agent:main", "checkpoint", timeout=60.0),
        "checkpoint_restore": forward("agent:main", "restore_from", "id"),
        "checkpoint_list": forward("vault", "list"),
        "checkpoint_show": forward("vault", "show", "id"),
        "checkpoint_delete": forward("vault", "delete", "id"),
        "wal_stats": forward("wal", "stats"),
        "wal_tail": forward("wal", "tail", "n"),
        "wal_verify": forward("wal", "verify", timeout=120.0),
        "ping": ping,
        "status": status,
        "stop": stop,
        "restart": restart,
        "config": config,
        "call": call,
        "shadow_start": shadow_start,
        "shadow_stop": shadow_stop,
        "hot_reload": agent_call("hot_reload", "code", "module"),
        "agent_restart": agent_call("restart_agent"),
    }


_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")


class ShadowSlots:
    """Which shared-memory slot each shadow uses (slot 0 is the main agent's)."""

    def __init__(self, cfg: Config) -> None:
        self.limit = cfg.o_supervisor.max_concurrent_shadows
        self.slots: dict[str, int] = {}

    def allocate(self, instance_id: str, sup: Supervisor) -> int | str:
        self.slots = {i: s for i, s in self.slots.items() if sup.child(manager_name(i))}
        if len(self.slots) >= self.limit:
            return f"max_concurrent_shadows ({self.limit}) reached"
        used = set(self.slots.values()) | {MAIN_SLOT}
        free = next((s for s in range(SLOT_COUNT) if s not in used), None)
        if free is None:
            return "no free shared-memory slot"
        self.slots[instance_id] = free
        return free


def _agent_names(sup: Supervisor) -> list[str]:
    return [c.name for c in sup.children if c.name.startswith("agent:")]


def _gather(
    sup: Supervisor, names: list[str], request: Any, done: Callable[[list[Any]], None]
) -> None:
    """Call every child in ``names`` at once; ``done(results)`` when all answered (errors and
    children that are not running give None)."""
    results: list[Any] = [None] * len(names)
    pending = len(names)
    if not pending:
        done(results)
        return

    def one(index: int) -> Callable[[bool, Any], None]:
        def answer(ok: bool, value: Any) -> None:
            nonlocal pending
            results[index] = value if ok else None
            pending -= 1
            if pending == 0:
                done(results)

        return answer

    for index, name in enumerate(names):
        if not sup.call_child(name, request, one(index), timeout=2.0):
            one(index)(False, None)


def _names(sup: Supervisor) -> str:
    return ", ".join(c.name for c in sup.children)
