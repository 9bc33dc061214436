"""How an agent process is launched: executable lookup, argv, environment, pre-exec set-up.

The contract is the seed's: ``EXE [SCRIPT] --role ROLE --elixir-mode [--restore ID]`` with
``GERBIL_HOME`` in the environment, plus the ``OSUP_*`` variables an SDK agent uses to find
its shared-memory slot. Kept apart from the manager so the contract reads in one place.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

from osup_mp.config import Config
from osup_mp.lowlevel.lifelock import LifeLock
from osup_mp.lowlevel.limits import cpu_rlimit
from osup_mp.lowlevel.proc import resolve_executable, set_parent_death_signal, spawn_piped
from osup_mp.wire.launch import THREAD_POOL_VARS, LaunchEnv, agent_args


@dataclass(frozen=True, slots=True)
class Deadlines:
    """A shadow's own limits on each agent process it starts (``shadow start
    --cpu-seconds/--wall-seconds``; ``evolve`` gives each variant's shadow some): CPU time
    by RLIMIT_CPU (SIGXCPU, then SIGKILL a second later), wall clock by its manager."""

    cpu_seconds: float | None = None
    wall_seconds: float | None = None


NO_DEADLINES = Deadlines()


@dataclass(frozen=True, slots=True)
class Launch:
    """Which agent to start: its role, whose it is, its shared-memory slot, the command
    (None: the configured agent) and its deadlines."""

    role: str
    instance_id: str
    shm_name: str
    slot: int
    command: list[str] | None = None
    deadlines: Deadlines = NO_DEADLINES


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
    if role == "standby":
        # It will be the main: the main's thread pools, but no busy polling while it waits.
        return {**env, **LaunchEnv(busy_poll_us=0).to_env()}
    return env if role == "main" else {**env, **_ONE_THREAD}


def spawn_agent(
    argv: list[str], env: dict[str, str], pre: Callable[[], None] | None
) -> tuple[subprocess.Popen[bytes], LifeLock | None]:
    """Spawn an agent with a life lock to hold (``OSUP_LIFE_LOCK_FD``), when this host's C
    library has robust mutexes: its manager then learns of its death before the kernel has
    freed its memory (``lowlevel.lifelock``). ``OSError`` when it cannot be started."""
    try:
        life = LifeLock.create()
    except OSError:
        return spawn_piped(argv, env, pre_exec=pre), None
    try:
        env = {**env, **LaunchEnv(life_lock_fd=life.fd).to_env()}
        return spawn_piped(argv, env, pre_exec=pre, pass_fds=(life.fd,)), life
    finally:
        life.close_fd()


def pre_exec(
    cfg: Config, role: str, deadlines: Deadlines = NO_DEADLINES
) -> Callable[[], None] | None:
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

    A standby is limited like a shadow, but it will become the main: its limits are soft
    ones (raised back by :func:`lift_limits` on promotion) and its priority is the main's
    (an unprivileged process cannot raise its priority again).
    """
    if role == "main":
        return None
    limits = shadow_limits(cfg)
    cpu = None if deadlines.cpu_seconds is None else cpu_rlimit(deadlines.cpu_seconds)
    standby = role == "standby"
    nice = cfg.watchdog.shadow_nice

    def run() -> None:
        set_parent_death_signal(signal.SIGKILL)
        for which, value in limits:
            hard = resource.getrlimit(which)[1] if standby else value
            resource.setrlimit(which, (value, hard))
        if cpu is not None:
            resource.setrlimit(resource.RLIMIT_CPU, cpu)
        if not standby:
            os.setpriority(os.PRIO_PROCESS, 0, nice)

    return run


def shadow_limits(cfg: Config) -> list[tuple[int, int]]:
    """The hard rlimits of a shadow (soft ones for a standby): the backstop behind the
    watchdog's sampled limits."""
    return cfg.watchdog.limits().rlimits()


def lift_limits(cfg: Config, pid: int) -> None:
    """A promoted standby is the main: raise its soft limits to the hard ones it kept."""
    for which, _value in shadow_limits(cfg):
        try:
            hard = resource.prlimit(pid, which)[1]
            resource.prlimit(pid, which, (hard, hard))
        except (OSError, ValueError):
            pass  # it is gone; its exit is on the way
