"""The agent process's ties to the host: it dies with its manager, holds the life lock the
manager passed it, and reads its own resident memory.

Decision: the ``lowlevel`` helpers behind the first two are imported only when the launch
environment asks for them (``OSUP_MANAGER_PID``, ``OSUP_LIFE_LOCK_FD``): an agent started by
hand, or by a manager that passes neither, does not pay for them at start-up.
"""

from __future__ import annotations

import os
import signal
import sys

from osup_mp.wire import launch

__all__ = ["die_with_manager", "hold_life_lock", "rss_bytes"]


def die_with_manager() -> None:
    """SIGKILL this agent when its manager dies. The manager spawns the main agent without a
    pre-exec hook (that keeps the spawn on the fast ``vfork`` path), so the SDK asks the
    kernel itself; a manager that died before this call is caught by its pid."""
    manager = launch.LaunchEnv.from_env(os.environ).manager_pid
    if manager is None:
        return
    from osup_mp.lowlevel.proc import set_parent_death_signal

    set_parent_death_signal(signal.SIGKILL)
    if os.getppid() != manager:
        os._exit(1)


def hold_life_lock() -> bool:
    """Hold the life lock the manager passed (``OSUP_LIFE_LOCK_FD``), from this, the main
    thread, for as long as the agent lives: the manager then acts on its death before the
    kernel has freed its memory. Without one the manager waits for the kernel."""
    fd = launch.LaunchEnv.from_env(os.environ).life_lock_fd
    if fd is None:
        return False
    from osup_mp.lowlevel.lifelock import hold

    try:
        hold(fd)
    except OSError as exc:
        print(f"agent: life lock not held ({exc})", file=sys.stderr, flush=True)
        return False
    return True


def rss_bytes() -> int:
    """This process's resident memory in bytes (0 when ``/proc`` cannot tell)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0
