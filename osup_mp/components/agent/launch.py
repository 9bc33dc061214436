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
from osup_mp.wire.launch import THREAD_POOL_VARS, LaunchEnv, agent_args


def agent_argv(cfg: Config, role: str, command: list[str] | None) -> list[str]:
    o = cfg.o_supervisor
    if command:
        base = list(command)
    else:
        base = [resolve_executable(o.gerbil_executable)]
        if o.gerbil_main_script:
            base.append(o.gerbil_main_script)
    return [*base, *agent_args(role)]


# In a shadow, spinning thread pools take whole cores from the main (measured: the main's
# search 3.5x slower while two shadows searched 20,000 blocks). A shadow works on spare
# cycles, in one thread, whatever the environment says.
_ONE_THREAD = dict.fromkeys(THREAD_POOL_VARS, "1")


def agent_env(cfg: Config, shm_name: str, instance_id: str, slot: int, role: str) -> dict[str, str]:
    o = cfg.o_supervisor
    given = LaunchEnv(
        instance_id=instance_id,
        shm_name=shm_name,
        shm_slot=slot,
        heartbeat_interval_ms=o.heartbeat_interval,
        max_frame=cfg.agent.max_frame,
        busy_poll_us=cfg.agent.busy_poll_us,
        manager_pid=os.getpid(),
    )
    env = {**os.environ, "GERBIL_HOME": str(o.gerbil_home), **given.to_env()}
    return env if role == "main" else {**env, **_ONE_THREAD}


def pre_exec(cfg: Config, role: str) -> Callable[[], None] | None:
    """What runs in the forked agent before exec, or None for the main agent.

    Any ``preexec_fn`` makes ``subprocess`` fork the whole manager instead of ``vfork``
    (3.5 ms against 0.24 ms for a 42 MiB manager): that is on the main agent's restart
    path, so the main agent gets none. It still dies with its manager: SDK agents set
    their own parent-death signal (``OSUP_MANAGER_PID``), every agent sees EOF on stdin,
    and the supervisor, a subreaper, kills what a dead manager leaves behind. Shadows get
    hard rlimits — the backstop behind the watchdog's sampled limits — a lower CPU priority
    (``[watchdog] shadow_nice``: an experiment runs on the main's spare cycles and never
    takes them from it) and a parent-death SIGKILL here, where a few milliseconds do not
    matter.
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
        os.setpriority(os.PRIO_PROCESS, 0, w.shadow_nice)

    return run
