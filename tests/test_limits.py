"""The limits library the watchdog and the standalone keeper share, on real processes: each
limit names itself when broken, CPU counts over its window (a burst is not a breach), a
process that is gone breaks nothing."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
from support import wait_for

from osup_mp.lowlevel.limits import Limits, Sampler

ROOMY = Limits(rss_mb=4096, cpu_percent=100, cpu_window=0.3, max_fds=1000, max_threads=100)


@pytest.fixture
def spawn() -> Iterator[object]:
    started: list[subprocess.Popen[bytes]] = []

    def run(code: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([sys.executable, "-c", code])
        started.append(proc)
        return proc

    yield run
    for proc in started:
        proc.kill()
        proc.wait()


def test_each_limit_names_itself(spawn) -> None:  # type: ignore[no-untyped-def]
    idle = spawn("import time; time.sleep(60)")
    assert Sampler(ROOMY, idle.pid).check() is None
    small = Limits(rss_mb=1, cpu_percent=100, cpu_window=0.3, max_fds=1000, max_threads=100)
    rss = wait_for(Sampler(small, idle.pid).check, 10, what="the interpreter past 1 MB")
    assert rss.startswith("killed: rss ")
    fds = Limits(rss_mb=4096, cpu_percent=100, cpu_window=0.3, max_fds=1, max_threads=100)
    assert str(Sampler(fds, idle.pid).check()).startswith("killed: open fds ")
    old = Limits(4096, 100, 0.3, 1000, 100, wall_time=0.0)
    assert str(Sampler(old, idle.pid).check()).startswith("killed: wall time ")
    assert Sampler(old, idle.pid).check(timed=False) is None  # a standby's age is no limit
    idle.kill()
    idle.wait()
    assert Sampler(small, idle.pid).check() is None  # gone: nothing to limit


def test_cpu_is_averaged_over_the_window(spawn) -> None:  # type: ignore[no-untyped-def]
    spinner = spawn("while True: pass")
    capped = Limits(rss_mb=4096, cpu_percent=50, cpu_window=0.3, max_fds=1000, max_threads=100)
    sampler = Sampler(capped, spinner.pid)
    assert sampler.check() is None  # one sample: no window yet
    reason = wait_for(sampler.check, 10, what="the spinner's CPU over the window")
    assert reason.startswith("killed: cpu ") and "> limit 50%" in reason
    idle = spawn("import time; time.sleep(60)")
    calm = Sampler(capped, idle.pid)
    assert all(calm.check() is None for _ in range(3))
    assert Limits(256, 50, 1.0, 64, 8).rlimits()[0][1] == 128  # fds twice the sampled limit
