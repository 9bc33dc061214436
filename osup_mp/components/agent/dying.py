"""Agents that died but are not reaped yet: noticed by their life lock (``lowlevel.lifelock``)
while the kernel still frees their memory, and already replaced.

Decision: such a process is left to its pidfd, watched by the manager's loop, which reaps
it once the kernel is done; what it left behind (its process group, orphans) is killed only
then, since killing and reaping leftovers first would reap it under its ``Popen``.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from functools import partial

from osup_mp.runtime.component import Component


class Dying:
    def __init__(self, host: Component, bury: Callable[[int, int], None]) -> None:
        self._host = host
        self._bury = bury  # (pid, exit status): kill what it left
        self._procs: dict[int, tuple[subprocess.Popen[bytes], int, bool]] = {}

    def add(self, proc: subprocess.Popen[bytes], pidfd: int) -> None:
        """``proc`` is dead but not reaped: its pidfd reaps it when the kernel is done."""
        self._procs[proc.pid] = (proc, pidfd, False)
        self._host.watch_fd(pidfd, partial(self._reaped, proc.pid))

    def __contains__(self, pid: int) -> bool:
        return pid in self._procs

    def pids(self) -> list[int]:
        return list(self._procs)

    def bury_when_reaped(self, pid: int) -> bool:
        """Whether ``pid`` is dying; if so it is buried once reaped, not now."""
        entry = self._procs.get(pid)
        if entry is not None:
            self._procs[pid] = (entry[0], entry[1], True)
        return entry is not None

    def _reaped(self, pid: int) -> None:
        proc, pidfd, bury = self._procs[pid]
        code = proc.poll()  # its pidfd is readable: it can be reaped, never waited for
        if code is None:
            return
        del self._procs[pid]
        self._host.unwatch_fd(pidfd)
        os.close(pidfd)
        if bury:
            self._bury(pid, code)

    def reap_all(self) -> None:
        """The manager stops: wait for them (the kernel frees them in milliseconds)."""
        for proc, pidfd, _bury in self._procs.values():
            proc.wait()
            os.close(pidfd)
        self._procs.clear()
