"""Service times: the run delay the kernel accounts per task, and what a manager reads out of
a timed ``response`` (its handling time less its waits for a CPU)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support import wait_for

from osup_mp.lowlevel.schedstat import RunDelay
from osup_mp.wire.frames import service_ms

ACCOUNTED = Path("/proc/self/schedstat").exists()
BUSY = "import os; os.sched_setaffinity(0, {0})\nwhile True: pass"


@pytest.mark.parametrize(
    ("took", "waited", "expected"),
    [
        (2.5, 0.5, (2.0, 0.5)),
        (2, 0, (2.0, 0.0)),
        (1.5, None, (1.5, 0.0)),  # an agent that does not measure its waits
        (1.0, 1.0, (0.0, 1.0)),
    ],
)
def test_the_service_time_is_the_handling_less_the_waits(
    took: float, waited: float | None, expected: tuple[float, float]
) -> None:
    assert service_ms(took, waited) == expected


@pytest.mark.parametrize(
    ("took", "waited"),
    [
        (None, None),  # no figure: the manager's round trip stands
        ("3", None),
        (True, None),
        (-1.0, None),
        (math.inf, None),
        (math.nan, None),
        (1.0, 2.0),  # waited longer than it took: not a figure to trust
        (1.0, -0.1),
        (1.0, "0"),
    ],
)
def test_an_unusable_figure_leaves_the_round_trip(took: object, waited: object) -> None:
    assert service_ms(took, waited) is None


@pytest.mark.skipif(not ACCOUNTED, reason="this kernel accounts no run delay")
def test_tasks_sharing_one_cpu_wait_for_it() -> None:
    """Two busy processes pinned to one CPU each wait for it about half the time: the
    figure an agent takes out of its handling time is the kernel's, and it is real."""
    procs = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(2)]
    delays = [RunDelay(p.pid) for p in procs]
    try:
        start = [d.ns() for d in delays]
        assert all(isinstance(ns, int) for ns in start)

        def both_waited() -> bool:
            now = [d.ns() or 0 for d in delays]
            return all(n - (s or 0) > 100_000_000 for n, s in zip(now, start, strict=True))

        wait_for(both_waited, timeout=20, what="each to wait 0.1 s for the CPU")
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert [d.ns() for d in delays] == [None, None]  # gone: nothing is said
    for d in delays:
        d.close()


@pytest.mark.skipif(not ACCOUNTED, reason="this kernel accounts no run delay")
def test_a_thread_reads_its_own_run_delay_and_nothing_of_a_task_that_never_was() -> None:
    own = RunDelay()
    first = own.ns()
    assert first is not None and first >= 0
    os.sched_yield()
    later = own.ns()
    assert later is not None and later >= first
    own.close()
    assert own.ns() is None
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert RunDelay(proc.pid).ns() is None  # reaped before it was asked
