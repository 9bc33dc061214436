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

import pytest
from support import wait_for

from osup_mp.lowlevel.lifelock import LifeLock, dying_status, read_notices
from osup_mp.lowlevel.proc import lower_priority, readable, spawn_piped

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
    holders: list[subprocess.Popen[bytes]], mb: int, then: str
) -> tuple[LifeLock, subprocess.Popen[bytes]]:
    """A holder of a new lock, in a process group of its own (as an agent)."""
    lock = LifeLock.create()
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(lock.fd), str(mb), then],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        pass_fds=(lock.fd,),
        process_group=0,
    )
    holders.append(proc)
    lock.close_fd()
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"held\n"
    return lock, proc


def notice(fd: int, timeout: float = 30.0) -> list[int]:
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
        assert notice(r) == [proc.pid]
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
    assert notice(r) == [proc.pid]
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
    assert notice(r) == [proc.pid]
    assert dying_status(proc.pid) is None  # a notice, but the process lives
    assert proc.poll() is None


def test_a_lock_nobody_holds_is_noticed_at_once(notices) -> None:  # type: ignore[no-untyped-def]
    r, w = notices
    lock = LifeLock.create()
    lock.close_fd()
    lock.watch(12345, w)
    assert notice(r, 5.0) == [12345]


def test_a_dying_holder_gives_way(holders, notices) -> None:  # type: ignore[no-untyped-def]
    """Noticed dying, the holder's teardown runs at the lowest priority: SCHED_IDLE."""
    r, w = notices
    lock, proc = start(holders, 512, "sleep")
    lock.watch(proc.pid, w)
    os.kill(proc.pid, signal.SIGKILL)
    assert notice(r) == [proc.pid]  # sent once it has given way; not reaped before wait()
    assert os.sched_getscheduler(proc.pid) == os.SCHED_IDLE
    assert proc.wait() == -signal.SIGKILL


def test_an_agent_shares_its_spawners_session_in_a_group_of_its_own(holders) -> None:  # type: ignore[no-untyped-def]
    """``spawn_piped`` puts the agent in a process group of its own (the whole of it can be
    signalled) but not a session of its own: where sessions are scheduling groups
    (autogroups), a shadow's ``SCHED_IDLE`` then ranks it below the main agent, not only
    below the rest of its own session. With ``lower_priority(nice, idle=True)`` as its
    pre-exec hook, a shadow and every thread it starts run at ``SCHED_IDLE``."""
    code = "import threading, time; threading.Thread(target=time.sleep, args=(60,)).start()"
    sleeper = [sys.executable, "-c", code + "; time.sleep(60)"]
    main = spawn_piped(sleeper, os.environ)
    shadow = spawn_piped(sleeper, os.environ, pre_exec=lambda: lower_priority(10, idle=True))
    holders.extend([main, shadow])
    for proc in (main, shadow):
        assert os.getpgid(proc.pid) == proc.pid
        assert os.getsid(proc.pid) == os.getsid(0)
    assert os.sched_getscheduler(main.pid) == os.SCHED_OTHER
    tasks = f"/proc/{shadow.pid}/task"
    wait_for(lambda: len(os.listdir(tasks)) == 2, what="the shadow's second thread")
    threads = [int(t) for t in os.listdir(tasks)]
    assert all(os.sched_getscheduler(t) == os.SCHED_IDLE for t in threads)
    assert os.getpriority(os.PRIO_PROCESS, shadow.pid) == 10


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
    assert notice(r) == [proc.pid]
    assert proc.wait() == -signal.SIGKILL
