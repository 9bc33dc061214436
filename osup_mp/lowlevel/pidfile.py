"""The pidfile, and the lock on it that says a tree is alive.

The supervisor holds an exclusive ``flock`` on its pidfile for its whole life. The kernel
drops the lock the instant the process dies, however it dies, so "is a tree running on this
run dir?" never depends on a stale pid that a new process may have reused: a pidfile nobody
holds locked is stale and is simply taken over. Children close their inherited copy of the
descriptor right after fork, so the lock dies with the parent alone.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class AlreadyRunning(RuntimeError):
    def __init__(self, path: Path, pid: int | None) -> None:
        self.pid = pid
        who = f"pid {pid}" if pid else "another process"
        super().__init__(f"already running ({who} holds {path})")


class PidFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        """Lock and write our pid; raise :class:`AlreadyRunning` if a live tree holds it."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _parse_pid(os.pread(fd, 64, 0))
            os.close(fd)
            raise AlreadyRunning(self.path, pid) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        os.fsync(fd)
        self._fd = fd

    def close(self) -> None:
        """Drop our descriptor without removing the file (forked children)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def release(self) -> None:
        """Remove the file, then drop the lock (the parent, at exit)."""
        if self._fd is not None:
            self.path.unlink(missing_ok=True)
            self.close()


def running_pid(path: Path) -> int | None:
    """The pid of the live tree that holds ``path`` locked, or None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _parse_pid(os.pread(fd, 64, 0)) or -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _parse_pid(raw: bytes) -> int | None:
    try:
        return int(raw.decode().strip())
    except ValueError:
        return None
