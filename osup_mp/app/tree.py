"""How a tree runs: :func:`run_tree` is what ``osup-mp start`` runs in the foreground or in
the daemon. It prepares the directories, takes the pidfile lock, sets up logging, opens the
control socket, runs the supervisor (which starts the children in order), and on the way out
removes everything it created. Which children form the tree is :mod:`.specs`; what the
control socket serves is :mod:`.commands`.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import time
from collections.abc import Callable
from typing import Any

from loguru import logger

from osup_mp.app import commands, logs
from osup_mp.app.specs import SpecsFactory, child_specs, longest_shutdown
from osup_mp.components.messages import Fatal
from osup_mp.config import Config
from osup_mp.lowlevel import spin
from osup_mp.lowlevel.pidfile import AlreadyRunning, PidFile, TreeLock
from osup_mp.lowlevel.proc import set_title
from osup_mp.runtime.control import ControlServer
from osup_mp.runtime.supervisor import Reply, Supervisor
from osup_mp.storage.shm.segment import SharedState, ShmError
from osup_mp.wire import api

Notify = Callable[[bool, str], None]


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
    set_title("osup-mp: supervisor")
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
        lock = TreeLock(cfg.tree_lock)
        cleanup.callback(lock.release)
        refusal = outlast_previous_tree(lock, longest_shutdown(cfg))
        if refusal:
            logger.error("cannot start: {}", refusal)
            notify(False, refusal)
            return 1
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


def outlast_previous_tree(lock: TreeLock, grace: float, poll: float = 0.02) -> str | None:
    """Take the tree lock; return why not, or None.

    Processes of an earlier tree hold it while they stop on their own after their supervisor
    died. They get ``grace`` seconds, the longest a child may take to stop; those still there
    then are killed, as their supervisor would have done.
    """
    deadline = time.monotonic() + grace
    waiting = killed = False
    while not lock.try_acquire():
        # Who holds it is a scan of /proc: looked up to say so, not at every poll.
        if not waiting:
            waiting = True
            logger.warning(
                "processes of a previous tree are still stopping (pids {}); waiting up to {:g}s",
                ", ".join(map(str, lock.holders())) or "unknown",
                grace,
            )
        elif time.monotonic() >= deadline:
            pids = lock.holders()
            listed = ", ".join(map(str, pids))
            if killed or not pids:
                who = f"pids {listed}" if pids else "a process that cannot be inspected"
                return f"{lock.path} is still held by {who} of a previous tree"
            logger.warning("pids {} of a previous tree outlived their stop time: SIGKILL", listed)
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:  # gone already, or not ours: the lock will say
                    pass
            killed = True
            deadline = time.monotonic() + 5.0  # an exit after SIGKILL takes milliseconds
        time.sleep(poll)
    if waiting:
        logger.info("the previous tree's processes are gone")
    return None


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
    ctx = commands.Context(cfg, sup, shm)
    sup.call_handlers[Fatal] = functools.partial(_fatal, sup)
    sup.call_handlers.update(commands.tree_calls(ctx))
    sup.close_in_children(relay.close_read)
    sup.close_in_children(pidfile.close)
    for fd in private_fds:
        sup.close_in_children(functools.partial(os.close, fd))
    control = ControlServer(
        cfg.control_socket,
        commands.handlers(ctx),
        max_frame=cfg.control.max_frame,
        commands=api.CONTROL,
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


def _fatal(sup: Supervisor, child: Any, request: Fatal, reply: Reply) -> None:
    """A component hit an error that restarting cannot fix (e.g. fsync): stop the tree."""
    logger.critical("{}: {} — stopping the tree", child.name, request.reason)
    reply(True, True)
    sup.request_stop(1)
