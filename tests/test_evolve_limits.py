"""Variants that misbehave on the workload (only there: each passes the agent's self-test)
are scored as failed, with the reason, and leave no process behind while the others are
measured: one that spins (its CPU-time deadline), one that sleeps and one that forks a
daemon and sleeps (the wall-clock deadline; the daemon is killed too), one that allocates
without bound (the watchdog's RSS limit). Shadows' deadlines from the command line too."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import psutil
from support import wait_for
from test_evolve import TOY_SEARCH

from osup_mp.evolve.judge import Judge
from osup_mp.evolve.shadows import ShadowEvaluator, reference

LIMITS = {"watchdog": {"shadow_rss_mb": 250}, "o_supervisor": {"heartbeat_interval": 200}}
RECALL = "osup_mp.evolution.compare:recall"
# What the forking variant leaves, found again by this argv. The pytest process's pid is in it:
# test modules running at once in other workers fork their own and must not see each other's.
DAEMON = ["sleep", f"4242.{os.getpid()}"]

# The workload searches with k=3; the agent's self-test with k=2: only the workload trips.
MISBEHAVIOURS = {
    "good": "pass",
    "spin": "while k == 3:\n        pass",
    "sleep": "if k == 3:\n        time.sleep(3600)",
    "fork": (
        "if k == 3:\n        import subprocess\n"
        f"        subprocess.Popen({DAEMON!r}, start_new_session=True)\n"
        "        time.sleep(3600)"
    ),
    "hog": "hoard = []\n    while k == 3:\n        hoard.append(b'x' * 10_000_000)",
}


def _variant(body: str) -> str:
    code = TOY_SEARCH.replace("REPEAT = 6", "REPEAT = 1")
    code = code.replace(
        "def search(matrix, query, k):\n", "def search(matrix, query, k):\n    misbehave(k)\n"
    )
    return code + f"\n\ndef misbehave(k):\n    {body}\n"


def _daemons() -> list[int]:
    return [p.pid for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] == DAEMON]


def test_misbehaving_variants_fail_with_the_reason_and_leave_nothing(make_tree) -> None:
    tree = make_tree(**LIMITS).start()
    with tree.data_client() as client:
        for i in range(50):
            client.request("request", data={"op": "memory_add", "text": f"note {i % 7} {i}"})
    searches = [{"op": "memory_search", "query": f"note {i}", "k": 3} for i in range(5)]
    evaluator = ShadowEvaluator(
        tree.cfg, "memory_system", reference(tree.cfg, searches), workers=2,
        cpu_seconds=1.5, wall_seconds=5.0, timeout=60.0,
    )  # fmt: skip
    names = list(MISBEHAVIOURS)
    measured = evaluator.evaluate([_variant(MISBEHAVIOURS[n]) for n in names])
    figures = dict(zip(names, measured, strict=True))
    assert figures["good"].failure is None and figures["good"].requests == 5
    failures = {name: str(f.failure) for name, f in figures.items() if name != "good"}
    assert "killed: CPU-time deadline 1.5 s (SIGXCPU)" in failures["spin"], failures
    assert "killed: wall-clock deadline 5 s" in failures["sleep"], failures
    assert "killed: wall-clock deadline 5 s" in failures["fork"], failures
    assert "killed: rss" in failures["hog"], failures
    wait_for(lambda: [a["id"] for a in tree.status()["agents"]] == ["main"], what="no shadow")
    wait_for(lambda: not _daemons(), what="the forked daemon to be killed")
    assert tree.agent_request({"op": "stats"})["blocks"] == 50  # the main never noticed

    # A score hook judges by the mean: a variant that returns 2 of 3 hits has recall 0.667.
    short = _variant("pass").replace(
        "    return [(int(i)", "    top = top[:2] if k == 3 else top\n    return [(int(i)"
    )
    evaluator.judge = Judge(score=RECALL, min_score=0.95)
    exact, vetoed = evaluator.evaluate([_variant("pass"), short])
    assert exact.failure is None and exact.score == 1.0 and exact.mismatches == 0
    assert vetoed.failure == "mean score 0.667 < 0.95 against the current code's answers"
    evaluator.judge = Judge(score=RECALL, min_score=0.5)
    (kept,) = evaluator.evaluate([short])
    assert kept.failure is None and kept.score is not None and abs(kept.score - 2 / 3) < 1e-9
    assert kept.mismatches == 5 and kept.memory_mb > 0


def test_shadow_start_takes_deadlines(make_tree) -> None:
    tree = make_tree().start()
    bad = tree.cli("shadow", "start", "d1", "--wall-seconds", "0")
    assert bad.returncode == 2 and "--wall-seconds" in bad.stderr
    assert tree.cli("shadow", "start", "d1", "--wall-seconds", "1.5").returncode == 0
    shown: dict[str, Any] = tree.agents()["d1"]
    assert shown["deadlines"] == {"cpu_seconds": None, "wall_seconds": 1.5}

    def killed() -> dict[str, Any] | None:
        agent = tree.agents()["d1"]
        return agent if agent["state"] == "EXITED" else None

    agent = wait_for(killed, 10, what="the shadow killed at its deadline")
    assert agent["last_kill_reason"] == "killed: wall-clock deadline 1.5 s"
    assert agent["restarts"] == 0 and agent["pid"] is None
    listed = tree.cli("shadow", "list", "--json")
    assert json.loads(listed.stdout)[0]["last_kill_reason"].startswith("killed: wall-clock")
    assert tree.cli("shadow", "stop", "d1").returncode == 0
    assert Path(tree.cfg.o_supervisor.data_dir).exists()
