"""Small process utilities the runtime needs from Linux: parent-death signals and exit text."""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

_PR_SET_PDEATHSIG = 1
# Loaded once, at import in the parent: every forked child inherits it (looking libc up costs
# milliseconds — it runs ldconfig — and would otherwise sit on every restart).
try:
    _libc: ctypes.CDLL | None = ctypes.CDLL(None, use_errno=True)
except OSError:
    _libc = None


def set_parent_death_signal(sig: int = signal.SIGTERM) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent dies (Linux only).

    Returns False where prctl is unavailable; callers also watch for EOF on the parent pipe,
    which catches the same event a moment later on any Unix.
    """
    try:
        return _libc is not None and int(_libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)) == 0
    except AttributeError:
        return False


def resolve_executable(name: str) -> str:
    """A bare name is looked up beside this Python first (where pip put our console scripts,
    without a shim in between), then on PATH."""
    if "/" in name:
        return name
    sibling = Path(sys.executable).parent / name
    if sibling.exists() and os.access(sibling, os.X_OK):
        return str(sibling)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(
            f"agent executable {name!r} not found beside {sys.executable} "
            "or on PATH (set gerbil_executable)"
        )
    return found


def close_pipes(proc: subprocess.Popen[bytes]) -> None:
    """Close the child's stdin, stdout and stderr pipes on our side; errors are moot."""
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            try:
                stream.close()
            except OSError:
                pass


def describe_exit(exitcode: int | None) -> str:
    """Human text for a ``multiprocessing`` exit code (negative means killed by a signal)."""
    if exitcode is None:
        return "still running"
    if exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exited with status {exitcode}"


def pid_alive(pid: int) -> bool:
    """True if ``pid`` names a live, non-zombie process."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True
