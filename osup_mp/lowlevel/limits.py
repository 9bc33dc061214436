"""Resource limits on one process: the psutil samples the watchdog takes of every shadow, and
the hard rlimits behind them, as a library (a variant run on Ray is limited by the same code).

The one decision: a sample names the first limit broken, as the reason a person reads
(``killed: rss 612 MB > limit 512 MB``); the caller kills. CPU is averaged over a window of
samples, so a burst (an import, an index build) is not a breach, a spinning loop is.
"""

from __future__ import annotations

import math
import resource
import signal
import time
from collections import deque
from dataclasses import dataclass

import psutil


@dataclass(frozen=True, slots=True)
class Limits:
    """What one limited process may use (``[watchdog]``'s shadow limits)."""

    rss_mb: int
    cpu_percent: int
    cpu_window: float  # seconds the CPU percentage is averaged over
    max_fds: int
    max_threads: int
    wall_time: float | None = None  # seconds from the process's start; None: unlimited

    def rlimits(self) -> list[tuple[int, int]]:
        """The hard backstop behind the samples: (RLIMIT_*, value) pairs."""
        return [
            (resource.RLIMIT_NOFILE, self.max_fds * 2),
            (resource.RLIMIT_AS, (self.rss_mb * 4 + 1024) * 1024 * 1024),
        ]


def cpu_rlimit(seconds: float) -> tuple[int, int]:
    """RLIMIT_CPU's (soft, hard) for a CPU-time deadline: SIGXCPU at the deadline, SIGKILL a
    second later for a process that ignores it."""
    soft = math.ceil(seconds)
    return soft, soft + 1


def cpu_deadline_reason(code: int, seconds: float | None) -> str | None:
    """Why a process with a CPU-time deadline of ``seconds`` died, when its exit status
    ``code`` (a Popen return code) is that deadline's signal; None otherwise."""
    if seconds is None or code not in (-signal.SIGXCPU, -signal.SIGKILL):
        return None
    return f"killed: CPU-time deadline {seconds:g} s ({signal.Signals(-code).name})"


def rss_mb(pid: int) -> float:
    """The resident memory of ``pid`` in MiB; 0.0 when it is gone."""
    try:
        return float(psutil.Process(pid).memory_info().rss) / 2**20
    except psutil.Error:
        return 0.0


class Sampler:
    """Samples one process (by pid) against :class:`Limits`; keep one per process."""

    def __init__(self, limits: Limits, pid: int) -> None:
        self.limits = limits
        self.pid = pid
        self._proc: psutil.Process | None = None
        self._cpu: deque[tuple[float, float]] = deque()  # (monotonic, cpu seconds)

    def check(self, *, timed: bool = True) -> str | None:
        """Why the process breaks a limit now, or None (also when it is gone). ``timed``:
        its wall time counts (a standby's does not: it waits as long as the main lives)."""
        w = self.limits
        try:
            if self._proc is None:
                self._proc = psutil.Process(self.pid)
            with self._proc.oneshot():
                rss_mb = self._proc.memory_info().rss / (1024 * 1024)
                times = self._proc.cpu_times()
                fds = self._proc.num_fds()
                threads = self._proc.num_threads()
                age = time.time() - self._proc.create_time()
        except psutil.Error:
            self._proc = None
            return None
        if rss_mb > w.rss_mb:
            return f"killed: rss {rss_mb:.0f} MB > limit {w.rss_mb} MB"
        if fds > w.max_fds:
            return f"killed: open fds {fds} > limit {w.max_fds}"
        if threads > w.max_threads:
            return f"killed: threads {threads} > limit {w.max_threads}"
        if timed and w.wall_time is not None and age > w.wall_time:
            return f"killed: wall time {age:.0f} s > limit {w.wall_time:.0f} s"
        return self._cpu_breach(times.user + times.system)

    def _cpu_breach(self, cpu_seconds: float) -> str | None:
        history = self._cpu
        now = time.monotonic()
        history.append((now, cpu_seconds))
        window = self.limits.cpu_window
        while len(history) > 2 and now - history[1][0] >= window:
            history.popleft()
        span = now - history[0][0]
        if span < window:
            return None
        percent = (history[-1][1] - history[0][1]) / span * 100
        if percent > self.limits.cpu_percent:
            return (
                f"killed: cpu {percent:.0f}% over {span:.0f} s > limit {self.limits.cpu_percent}%"
            )
        return None
