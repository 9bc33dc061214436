"""The life lock on real processes: a holder's death is noticed while the kernel is still
tearing it down (before its pidfd says it is gone), with its exit status; a holder that lets
go without dying is not taken for dead; a lock nobody holds is noticed at once."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import wait_for

from osup_mp.lowlevel.lifelock import LifeLock, dying_status, read_notices
from osup_mp.lowlevel.proc import lower_group_priority, readable

HOLDER = """
import os, sys, time
from osup_mp.lowlevel.lifelock import hold
mb, then = int(sys.argv[2]), sys.argv[3]
ballast = bytearray(mb << 20)
ballast[:: 4096] = b"x" * len(ballast[:: 4096])  # touched: real pages to free at exit
address = hold(int(sys.argv[1]))
print("held", flush=True)
sys.stdin.readline()
if then == "exit":
    sys.exit(3)
if then == "unlock":
    import ctypes
    from osup_mp.lowlevel import lifelock
    lifelock._c().pthread_mutex_unlock(ctypes.c_void_p(address))
    print("unlocked", flush=True)
time.sleep(60)
"""


@pytest.fixture
def notices() -> Iterator[tuple[int, int]]:
    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    yield r, w
    os.close(r)
    os.close(w)


@pytest.fixture
def holders() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        proc.kill()
        proc.wait()


def start(
    holders: list[subprocess.Popen[bytes]], mb: int, then: str, *, session: bool = False
) -> tuple[LifeLock, subprocess.Popen[bytes]]:
    """A holder of a new lock (``session``: leading a session of its own, as an agent)."""
    lock = LifeLock.create()
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(lock.fd), str(mb), then],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        pass_fds=(lock.fd,),
        start_new_session=session,
    )
    holders.append(proc)
    lock.close_fd()
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"held\n"
    return lock, proc


def group_nice(pid: int) -> str:
    """The niceness of ``pid``'s autogroup; empty in the host's default group (a container's
    first session often is in it): the kernel shows only the autogroups setsid() made."""
    return (Path(f"/proc/{pid}/autogroup").read_text().split() or [""])[-1]


def notice(fd: int, timeout: float = 30.0) -> list[tuple[int, int | None]]:
    assert readable(fd, timeout), "no notice"
    return read_notices(fd)


def test_a_kill_is_noticed_before_the_kernel_reports_the_death(holders, notices) -> None:  # type: ignore[no-untyped-def]
    r, w = notices
    lock, proc = start(holders, 2048, "sleep")  # 2 GiB to free: milliseconds of teardown
    lock.watch(proc.pid, w)
    assert not readable(r, 0.05)  # alive: no notice
    pidfd = os.pidfd_open(proc.pid)
    try:
        os.kill(proc.pid, signal.SIGKILL)
        assert notice(r) == [(proc.pid, -signal.SIGKILL)]  # with its status
        assert dying_status(proc.pid) == -signal.SIGKILL
        gone_already = readable(pidfd, 0)
    finally:
        os.close(pidfd)
    assert not gone_already, "the notice came only after the process was gone"
    assert proc.wait() == -signal.SIGKILL


def test_an_exit_is_noticed_with_its_status(holders, notices) -> None:  # type: ignore[no-untyped-def]
    r, w = notices
    lock, proc = start(holders, 0, "exit")
    lock.watch(proc.pid, w)
    assert dying_status(proc.pid) is None
    assert proc.stdin is not None
    proc.stdin.write(b"go\n")
    proc.stdin.flush()
    assert notice(r) == [(proc.pid, 3)]
    assert dying_status(proc.pid) == 3
    assert proc.wait() == 3


def test_a_holder_that_lets_go_is_not_dead(holders, notices) -> None:  # type: ignore[no-untyped-def]
    r, w = notices
    lock, proc = start(holders, 0, "unlock")
    lock.watch(proc.pid, w)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(b"go\n")
    proc.stdin.flush()
    assert proc.stdout.readline() == b"unlocked\n"
    assert notice(r) == [(proc.pid, None)]  # not exiting when it let go
    assert dying_status(proc.pid) is None  # a notice, but the process lives
    assert proc.poll() is None


def test_a_lock_nobody_holds_is_noticed_at_once(notices) -> None:  # type: ignore[no-untyped-def]
    r, w = notices
    lock = LifeLock.create()
    lock.close_fd()
    lock.watch(12345, w)
    assert notice(r, 5.0) == [(12345, None)]


def test_a_dying_holder_gives_way(holders, notices) -> None:  # type: ignore[no-untyped-def]
    """Noticed dying, the holder's teardown runs at the lowest priority: SCHED_IDLE, and, as
    the leader of a session of its own, the lowest weight for its autogroup."""
    r, w = notices
    lock, proc = start(holders, 512, "sleep", session=True)
    lock.watch(proc.pid, w)
    os.kill(proc.pid, signal.SIGKILL)
    # Sent once it has given way; not reaped before wait().
    assert notice(r) == [(proc.pid, -signal.SIGKILL)]
    assert os.sched_getscheduler(proc.pid) == os.SCHED_IDLE
    if os.path.exists("/proc/self/autogroup"):
        assert group_nice(proc.pid) == "19"
    assert proc.wait() == -signal.SIGKILL


def test_only_a_session_leaders_autogroup_is_lowered(holders) -> None:  # type: ignore[no-untyped-def]
    if not os.path.exists("/proc/self/autogroup"):
        pytest.skip("no autogroups on this kernel")
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    leader = subprocess.Popen(sleeper, start_new_session=True)
    member = subprocess.Popen(sleeper)  # in the test run's session: not its to change
    holders.extend([leader, member])

    ours = group_nice(os.getpid())
    lower_group_priority(leader.pid, 7)
    lower_group_priority(leader.pid, 3)  # lower already: left at 7
    lower_group_priority(member.pid, 7)
    niceness = [group_nice(pid) for pid in (leader.pid, member.pid, os.getpid())]
    assert niceness == ["7", ours, ours]
    leader.kill()
    leader.wait()
    lower_group_priority(leader.pid, 7)  # gone: nothing to do, and no error


def test_the_waiting_thread_runs_first_where_allowed(holders, notices) -> None:  # type: ignore[no-untyped-def]
    """Where real-time priority is allowed, the thread waiting on the lock has it."""
    allowed = os.geteuid() == 0 or resource.getrlimit(resource.RLIMIT_RTPRIO)[0] >= 1
    r, w = notices
    lock, proc = start(holders, 0, "sleep")
    before = set(os.listdir("/proc/self/task"))
    lock.watch(proc.pid, w)

    def fifo_threads() -> list[str]:
        tids = set(os.listdir("/proc/self/task")) - before
        return [t for t in tids if os.sched_getscheduler(int(t)) == os.SCHED_FIFO]

    if allowed:
        wait_for(fifo_threads, 5, what="the waiting thread at SCHED_FIFO")
    os.kill(proc.pid, signal.SIGKILL)
    assert notice(r) == [(proc.pid, -signal.SIGKILL)]
    assert proc.wait() == -signal.SIGKILL
