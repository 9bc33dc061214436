"""The pidfile, and the two locks that say a tree is alive.

The supervisor holds an exclusive ``flock`` on its pidfile for its whole life. The kernel
drops the lock the instant the process dies, however it dies, so "is a tree running on this
run dir?" never depends on a stale pid that a new process may have reused: a pidfile nobody
holds locked is stale and is simply taken over. Children close their inherited copy of the
descriptor right after fork, so the lock dies with the parent alone.

The tree lock is the other way round: forked children keep it, and since a ``flock`` belongs
to the open file, it lasts until the last process of the tree has exited. A supervisor that
was SIGKILLed leaves its components stopping on their own (their parent-death signal); a new
supervisor takes the tree lock before it touches the run directories, so it never works
beside them (two WAL writers on one directory, an old manager removing the new one's socket).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

_PROC = Path("/proc")


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


class TreeLock:
    """The lock every forked process of a tree holds (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        """Take the lock if no process of an earlier tree holds it; keep trying is the
        caller's choice (:func:`holders` says who is in the way)."""
        if self._fd is None:
            # Close-on-exec: forked children inherit it, executed agents do not.
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def release(self) -> None:
        """Drop this process's descriptor (the lock goes with the tree's last one)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def holders(self) -> list[int]:
        """The pids of other processes with the lock file open (those we may inspect)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return []
        return sorted(pid for pid in _opened_by(st.st_dev, st.st_ino) if pid != os.getpid())


def _opened_by(dev: int, ino: int) -> set[int]:
    """Pids whose descriptors include the file (dev, ino)."""
    found: set[int] = set()
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fds = list((entry / "fd").iterdir())
        except OSError:  # gone, or not ours to look at
            continue
        for fd in fds:
            try:
                st = fd.stat()
            except OSError:
                continue
            if st.st_ino == ino and st.st_dev == dev:
                found.add(int(entry.name))
                break
    return found
