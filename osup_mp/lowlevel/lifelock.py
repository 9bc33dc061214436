"""A life lock: a robust, process-shared mutex a process holds for as long as it lives, so
that whoever watches it learns of its death as the kernel starts to take it down, not once
that is over.

Decision: Linux reports a death (pidfd, EOF on the dead process's pipes, SIGCHLD) only once
the dead process's memory is freed, which takes milliseconds for a large one (about 16 ms
for an agent holding 100,000 memories). A robust futex the dying thread held is released
before that (``exit_mm_release``, ahead of ``mmput``), waking a waiter within tens of
microseconds of the kill. The mutex lives in a memfd page the watcher creates and passes
to the process; a thread of the watcher blocks on it and writes the pid into a pipe its
loop watches. It is an early notice only: :func:`dying_status` confirms the process is
exiting (an agent that unlocks its mutex is not taken for dead), and the pidfd stays the
proof that it is gone. Woken, the thread runs ahead of the dying process where it may (a
real-time priority), and makes that process's teardown give way to everything else.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import mmap
import os
import struct
import threading

from osup_mp.lowlevel.proc import lower_group_priority

_PAGE = mmap.PAGESIZE
_ATTR_SIZE = 16  # pthread_mutexattr_t is 4 bytes on x86-64 and 8 on arm64
_PROCESS_SHARED = 1  # PTHREAD_PROCESS_SHARED
_ROBUST = 1  # PTHREAD_MUTEX_ROBUST
_PF_EXITING = 0x4  # task flag set as do_exit begins
_NOTICE = struct.Struct("<qq")  # a notice: the pid, then its exit status or _LIVING
_LIVING = -(1 << 63)  # the status of a pid whose lock was released while it lived

_libc: ctypes.CDLL | None = None


def _c() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        libc = ctypes.CDLL(None, use_errno=True)
        if not hasattr(libc, "pthread_mutexattr_setrobust"):
            raise OSError(errno.ENOSYS, "the C library has no robust mutexes")
        _libc = libc
    return _libc


class LifeLock:
    """The watcher's side: a memfd page holding an initialised robust mutex.

    :meth:`create`, pass :attr:`fd` to the process (``pass_fds`` and ``OSUP_LIFE_LOCK_FD``),
    :meth:`close_fd` once it is spawned, :meth:`watch` once it says it holds the lock.
    """

    def __init__(self, fd: int, page: mmap.mmap) -> None:
        self.fd = fd
        self._page = page  # kept mapped for as long as a waiter may touch it
        self._address = ctypes.addressof(ctypes.c_char.from_buffer(page))
        self.watching = False

    @classmethod
    def create(cls) -> LifeLock:
        """A new lock; ``OSError`` where the C library has no robust shared mutexes."""
        fd = os.memfd_create("osup-life-lock", os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, _PAGE)
            page = mmap.mmap(fd, _PAGE)
            lock = cls(fd, page)
            _init_robust(lock._address)
        except BaseException:
            os.close(fd)
            raise
        return lock

    def close_fd(self) -> None:
        """The process has its copy of the descriptor: this one is no longer needed."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def watch(self, pid: int, notify_fd: int) -> None:
        """Wait on the lock in a daemon thread; when it is released (its holder died, or
        never held it), write ``pid`` and what :func:`dying_status` then says to
        ``notify_fd`` (see :func:`read_notices`). Once per lock."""
        if self.watching:
            return
        self.watching = True
        threading.Thread(
            target=self._wait, args=(pid, notify_fd), name=f"life-lock-{pid}", daemon=True
        ).start()

    def _wait(self, pid: int, notify_fd: int) -> None:
        # Where allowed (root, CAP_SYS_NICE, RLIMIT_RTPRIO >= 1), this thread runs first once
        # woken: woken by the dying process, it would otherwise queue behind that process's
        # teardown on its CPU (no preemption inside it), while an idle CPU takes it only at
        # the next tick. It runs a few microseconds, once.
        with contextlib.suppress(OSError):
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))  # this thread only
        c, mutex = _c(), ctypes.c_void_p(self._address)
        code = c.pthread_mutex_lock(mutex)
        status = dying_status(pid) if code == errno.EOWNERDEAD else None
        if status is not None:
            give_way(pid)  # first: the notice wakes the very processes it would slow down
        try:
            os.write(notify_fd, _NOTICE.pack(pid, _LIVING if status is None else status))
        except OSError:
            pass  # the watcher is gone or its pipe full: the pidfd still reports the death
        if code == errno.EOWNERDEAD:
            c.pthread_mutex_consistent(mutex)
        if code in (0, errno.EOWNERDEAD):
            c.pthread_mutex_unlock(mutex)  # off this thread's robust list before it ends


def give_way(pid: int) -> None:
    """Let a dying process's teardown run only when a CPU has nothing else to do: freeing a
    large process's memory takes a CPU for milliseconds, and its replacement, its manager
    and their callers must not queue behind it. ``SCHED_IDLE`` ranks it below every other
    task of its scheduling group, and the lowest weight for its autogroup (an agent runs in
    a session, hence an autogroup, of its own) ranks it below the rest of the host."""
    try:
        os.sched_setscheduler(pid, os.SCHED_IDLE, os.sched_param(0))
    except OSError:
        return  # gone already, or not ours to change: it only finishes sooner
    lower_group_priority(pid, 19)


def read_notices(fd: int) -> list[tuple[int, int | None]]:
    """``(pid, exit status)`` of each notice written to a non-blocking notice pipe since the
    last call: the status as :func:`dying_status` gave it when the lock was released (None:
    the pid was not exiting then), so that the watcher need not read it again."""
    data = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except BlockingIOError:
            break
        if not chunk:
            break
        data += chunk
    whole = len(data) - len(data) % _NOTICE.size  # writes this small arrive whole
    notices = _NOTICE.iter_unpack(data[:whole])
    return [(pid, None if status == _LIVING else status) for pid, status in notices]


def hold(fd: int) -> int:
    """The held process's side: map the lock passed as ``fd`` and lock it from the calling
    thread (the one whose death is to be noticed; in an agent, its main thread); returns
    its address. ``OSError`` if it cannot be held.

    The page is mapped by the C library, never unmapped: a Python ``mmap`` would be unmapped
    as the interpreter finalizes, and the kernel then finds no lock to release at the exit.
    """
    c = _c()
    c.mmap.restype = ctypes.c_void_p
    c.mmap.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_long,
    ]
    try:
        address = c.mmap(None, _PAGE, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_SHARED, fd, 0)
    finally:
        os.close(fd)
    if address in (None, ctypes.c_void_p(-1).value):
        raise OSError(ctypes.get_errno(), "life lock: cannot map it")
    code = c.pthread_mutex_trylock(ctypes.c_void_p(address))
    if code != 0:
        raise OSError(code, f"life lock: {os.strerror(code)}")
    return int(address)


def dying_status(pid: int) -> int | None:
    """The exit status of ``pid`` (as ``Popen.returncode``: -N for signal N) if it is
    exiting or dead but not yet reaped; None while it lives. The kernel sets a task's exit
    code and its exiting flag before it frees the task's memory."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    state, flags, status = fields[0], int(fields[6]), int(fields[49])
    if not (flags & _PF_EXITING or state in (b"Z", b"X")):
        return None
    return os.waitstatus_to_exitcode(status) if status & 0x7F != 0x7F else None


def _init_robust(address: int) -> None:
    c = _c()
    attr = ctypes.create_string_buffer(_ATTR_SIZE)
    for call, args in (
        (c.pthread_mutexattr_init, ()),
        (c.pthread_mutexattr_setpshared, (_PROCESS_SHARED,)),
        (c.pthread_mutexattr_setrobust, (_ROBUST,)),
    ):
        code = call(attr, *args)
        if code:
            raise OSError(code, f"robust mutex attribute: {os.strerror(code)}")
    code = c.pthread_mutex_init(ctypes.c_void_p(address), attr)
    c.pthread_mutexattr_destroy(attr)
    if code:
        raise OSError(code, f"robust mutex: {os.strerror(code)}")
