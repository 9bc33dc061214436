"""How an agent process is launched: executable lookup, argv, environment, pre-exec set-up.

The contract is the seed's: ``EXE [SCRIPT] --role ROLE --elixir-mode [--restore ID]`` with
``GERBIL_HOME`` in the environment, plus the ``OSUP_*`` variables an SDK agent uses to find
its shared-memory slot. Kept apart from the manager so the contract reads in one place.
"""

from __future__ import annotations

import os
import resource
import signal
from collections.abc import Callable

from osup_mp.config import Config
from osup_mp.lowlevel.proc import resolve_executable, set_parent_death_signal


def agent_argv(cfg: Config, role: str, command: list[str] | None) -> list[str]:
    o = cfg.o_supervisor
    if command:
        base = list(command)
    else:
        base = [resolve_executable(o.gerbil_executable)]
        if o.gerbil_main_script:
            base.append(o.gerbil_main_script)
    return [*base, "--role", role, "--elixir-mode"]


def agent_env(cfg: Config, shm_name: str, instance_id: str, slot: int) -> dict[str, str]:
    o = cfg.o_supervisor
    return dict(
        os.environ,
        GERBIL_HOME=str(o.gerbil_home),
        OSUP_INSTANCE_ID=instance_id,
        OSUP_SHM_NAME=shm_name,
        OSUP_SHM_SLOT=str(slot),
        OSUP_HEARTBEAT_INTERVAL_MS=str(o.heartbeat_interval),
        OSUP_MAX_FRAME=str(cfg.agent.max_frame),
        OSUP_BUSY_POLL_US=str(cfg.agent.busy_poll_us),
        OSUP_MANAGER_PID=str(os.getpid()),
    )


def pre_exec(cfg: Config, role: str) -> Callable[[], None] | None:
    """What runs in the forked agent before exec, or None for the main agent.

    Any ``preexec_fn`` makes ``subprocess`` fork the whole manager instead of ``vfork``
    (3.5 ms against 0.24 ms for a 42 MiB manager): that is on the main agent's restart
    path, so the main agent gets none. It still dies with its manager: SDK agents set
    their own parent-death signal (``OSUP_MANAGER_PID``), every agent sees EOF on stdin,
    and the supervisor, a subreaper, kills what a dead manager leaves behind. Shadows get
    hard rlimits — the backstop behind the watchdog's sampled limits — and a parent-death
    SIGKILL here, where a few milliseconds do not matter.
    """
    if role == "main":
        return None
    w = cfg.watchdog
    limits = [
        (resource.RLIMIT_NOFILE, w.shadow_max_fds * 2),
        (resource.RLIMIT_AS, (w.shadow_rss_mb * 4 + 1024) * 1024 * 1024),
    ]

    def run() -> None:
        set_parent_death_signal(signal.SIGKILL)
        for which, value in limits:
            resource.setrlimit(which, (value, value))

    return run
