"""Small process utilities the runtime needs from Linux: parent-death signals and exit text."""

from __future__ import annotations

import ctypes
import json
import math
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
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


def become_subreaper() -> bool:
    """Make orphaned descendants re-parent to this process instead of init (Linux only), so
    whatever a child spawned, even in a session of its own, stays ours to kill and reap."""
    try:
        return _libc is not None and int(_libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0
    except AttributeError:
        return False


def signal_group(pid: int, sig: int = signal.SIGKILL) -> None:
    """Signal the process group ``pid`` leads; nothing if it is gone (or not ours)."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def run_in_session(
    argv: Sequence[str], data: bytes, timeout: float
) -> subprocess.CompletedProcess[bytes]:
    """Run ``argv`` in a session of its own with ``data`` on stdin, its output captured;
    whatever it leaves in its session is killed when it ends. Raises
    ``subprocess.TimeoutExpired`` (it is killed first) and ``OSError`` (it cannot run)."""
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(data, timeout=timeout)
    except subprocess.TimeoutExpired:
        signal_group(proc.pid)
        proc.communicate()
        raise
    finally:
        signal_group(proc.pid)  # what it left in its session
    return subprocess.CompletedProcess(list(argv), proc.returncode, out, err)


def ask_in_session(argv: Sequence[str], data: bytes, timeout: float) -> tuple[Any, str | None]:
    """:func:`run_in_session` for a helper that answers one JSON document on stdout: that
    answer and None, or None and why there is none (timed out, could not start, or exited
    without an answer: the tail of its stderr)."""
    try:
        done = run_in_session(argv, data, timeout)
    except subprocess.TimeoutExpired:
        return None, f"did not answer within {timeout:g} s: killed"
    except OSError as exc:
        return None, f"could not start: {exc}"
    try:
        return json.loads(done.stdout), None
    except ValueError:
        tail = done.stderr.decode(errors="replace").strip()[-300:]
        return None, f"failed: {tail or f'exit status {done.returncode}'}"


def children_of(pid: int) -> list[int]:
    """The pids of ``pid``'s children, from /proc (a few reads; no scan of every process)."""
    found: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                found += [int(p) for p in f.read().split()]
        except OSError:
            continue
    return found


def descendants_of(pid: int) -> list[int]:
    """Every descendant of ``pid``, parents before their children."""
    found: list[int] = []
    todo = children_of(pid)
    while todo:
        child = todo.pop(0)
        found.append(child)
        todo += children_of(child)
    return found


REAP_RETRY = 0.001
"""Seconds between two passes of :meth:`Strays.reap`: SIGKILL delivery is asynchronous, and
a killed process is gone within microseconds unless it holds much memory."""


class Strays:
    """Processes SIGKILLed because the dead left them behind (orphans re-parent to a
    subreaper), reaped as they die. For a loop: :meth:`kill`, then :meth:`reap` every
    :data:`REAP_RETRY` seconds while it returns True, so that nothing waits in between."""

    def __init__(self) -> None:
        self._give_up: dict[int, float] = {}  # pid -> when to stop looking for it

    def kill(self, *, spare: Collection[int] = (), grace: float = 0.5) -> list[int]:
        """SIGKILL every descendant of this process, except the children in ``spare`` and
        theirs and those killed before; each is looked for at most ``grace`` seconds.
        Returns the pids killed."""
        killed: list[int] = []
        strays = [c for c in children_of(os.getpid()) if c not in spare]
        for pid in [p for c in strays for p in (c, *descendants_of(c)) if p not in self._give_up]:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except ProcessLookupError:
                pass
        give_up = time.monotonic() + grace
        for pid in killed:
            self._give_up.setdefault(pid, give_up)
        return killed

    def reap(self) -> bool:
        """One pass, without waiting: reap those dead here, forget those gone elsewhere or
        looked for long enough; True while some are left (a killed grandchild re-parents here
        only once its parent is reaped)."""
        now = time.monotonic()
        for pid, give_up in list(self._give_up.items()):
            try:
                done = os.waitpid(pid, os.WNOHANG)[0] == pid
            except ChildProcessError:  # not (yet) our child: gone, or someone's zombie
                done = not os.path.exists(f"/proc/{pid}")
            if done or now >= give_up:
                del self._give_up[pid]
        return bool(self._give_up)

    def wait(self) -> None:
        """:meth:`reap` until none is left: for a process that has no loop to do it in (a
        gate, a keeper) or is leaving its loop."""
        while self.reap():
            time.sleep(REAP_RETRY)


def kill_descendants(*, spare: Collection[int] = (), grace: float = 0.5) -> list[int]:
    """:meth:`Strays.kill`, then :meth:`Strays.wait` (at most ``grace`` seconds)."""
    strays = Strays()
    killed = strays.kill(spare=spare, grace=grace)
    strays.wait()
    return killed


def readable(fd: int, timeout: float | None) -> bool:
    """Wait up to ``timeout`` seconds (None: for ever) for ``fd`` to be readable (a pidfd:
    its process to exit). ``poll``, not ``select``: any descriptor number works."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(None if timeout is None else max(0, math.ceil(timeout * 1000))))


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


def pin_cpus(cpus: Collection[int]) -> None:
    """Run this thread, and every thread and process it starts from now on, on ``cpus``
    only (``sched_setaffinity``); empty: leave the placement to the scheduler."""
    if cpus:
        os.sched_setaffinity(0, cpus)


def lower_priority(nice: int) -> None:
    """Run this thread, and every thread and process it starts from now on, at niceness
    ``nice`` at least. Never raises the priority: an unprivileged process could not lower
    it again."""
    if nice > os.getpriority(os.PRIO_PROCESS, 0):
        os.setpriority(os.PRIO_PROCESS, 0, nice)  # on Linux, this thread's


def lower_group_priority(pid: int, nice: int) -> None:
    """Give the autogroup of ``pid`` the CPU weight of niceness ``nice``, unless it is that
    low already. Where the kernel groups each session for scheduling
    (``CONFIG_SCHED_AUTOGROUP``, on by default in most distributions), a process in a
    session of its own competes with other sessions at its group's weight, whatever its own
    niceness. Only for a session leader: another process's autogroup is its session's, not
    its own. Best effort: nothing happens without autogroups, for a process gone, or when
    the kernel refuses (a raise; an unprivileged user changing more than one autogroup per
    100 ms on the whole host)."""
    path = f"/proc/{pid}/autogroup"
    try:
        if os.getsid(pid) != pid:
            return
        with open(path, "rb") as f:
            if int(f.read().split()[-1]) >= nice:  # "/autogroup-42 nice 0"
                return
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, str(nice).encode())
        finally:
            os.close(fd)
    except (OSError, ValueError, IndexError):
        pass


def set_title(title: str) -> None:
    """Name this process in ``ps`` and ``top`` (``osup-mp: wal``): every process of a tree
    would otherwise show the same command line. Best effort: without the extension (or on a
    platform it does not support) the name stays as it was.

    ``SPT_NOENV`` keeps the extension from moving the environment to make room for a long
    title: /proc/PID/environ stays readable (tools find a tree's processes by it), and the
    title is cut at the length of the original command line instead.
    """
    noenv = "SPT_NOENV" not in os.environ
    if noenv:
        os.environ["SPT_NOENV"] = "1"
    try:
        import setproctitle

        setproctitle.setproctitle(title)
    except ImportError:
        pass
    finally:
        if noenv:  # set up once: agents spawned later need not inherit it
            os.environ.pop("SPT_NOENV", None)


def spawn_piped(
    argv: Sequence[str],
    env: Mapping[str, str],
    *,
    stderr: int = subprocess.PIPE,
    pre_exec: Callable[[], None] | None = None,
    pass_fds: Sequence[int] = (),
) -> subprocess.Popen[bytes]:
    """The one way an agent is started: stdin and stdout on pipes (stderr too, unless told
    otherwise), its own session so that its whole process group can be signalled, no
    inherited descriptors but ``pass_fds``. ``pre_exec`` runs between fork and exec; leave
    it out where start-up time counts (any hook forces a full fork instead of ``vfork``).
    Raises ``OSError`` when the executable cannot be run."""
    return subprocess.Popen(
        list(argv),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=stderr,
        env=dict(env),
        start_new_session=True,
        preexec_fn=pre_exec,
        close_fds=True,
        pass_fds=tuple(pass_fds),
    )


def die_with_parent() -> None:
    """A ``pre_exec`` hook: the kernel SIGKILLs the child when the process that spawned it
    dies."""
    set_parent_death_signal(signal.SIGKILL)
