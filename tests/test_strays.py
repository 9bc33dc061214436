"""Leftovers of the dead, killed and reaped without waiting (``lowlevel.proc.Strays``), on real
processes. The scenario runs in a process of its own: a kill takes every descendant of the
process that asks, and the test runner's other children are not this test's to kill."""

from __future__ import annotations

import json
import subprocess
import sys

SCENARIO = """
import json, os, subprocess, sys, time
from osup_mp.lowlevel.proc import REAP_RETRY, Strays, become_subreaper, children_of
from osup_mp.lowlevel.proc import descendants_of

become_subreaper()
try:
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    spared = subprocess.Popen(sleeper)
    # A leader with a child of its own: once the leader is reaped, its child re-parents here.
    leader = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, sys, time; "
         f"print(subprocess.Popen({sleeper!r}).pid, flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE,
    )
    grandchild = int(leader.stdout.readline())
    strays = Strays()
    killed = strays.kill(spare={spared.pid})
    again = strays.kill(spare={spared.pid})  # killed already, not yet reaped: not again
    deadline = time.monotonic() + 10
    while strays.reap() and time.monotonic() < deadline:
        time.sleep(REAP_RETRY)
    left = children_of(os.getpid())
    spared.kill()
    spared.wait()
    print(json.dumps({
        "killed": sorted(killed), "expected": sorted([leader.pid, grandchild]), "again": again,
        "left": left, "spared": spared.pid, "done": not strays.reap(),
        "grandchild_gone": not os.path.exists(f"/proc/{grandchild}"),
    }))
finally:  # nothing outlives the scenario, whatever failed
    for pid in descendants_of(os.getpid()):
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
"""


def test_strays_are_killed_at_once_and_reaped_pass_by_pass() -> None:
    out = subprocess.run(
        [sys.executable, "-c", SCENARIO], capture_output=True, text=True, timeout=60, check=True
    )
    seen = json.loads(out.stdout)
    assert seen["killed"] == seen["expected"]  # the leader and its child, not the spared one
    assert seen["again"] == []
    assert seen["done"], "strays still pending after 10 s"
    assert seen["left"] == [seen["spared"]]  # no zombie left among this process's children
    assert seen["grandchild_gone"]
