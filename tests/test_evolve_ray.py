"""Variants away from the tree: the standalone keeper (what a Ray task runs) limits a variant
as a shadow is limited, from a checkpoint of the main; then the same on a local Ray instance
started by the test, and ``evolve --ray local`` end to end. Nothing is left behind: no
agent, no daemon a variant forked, no Ray process."""

from __future__ import annotations

import json
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import pytest
from support import wait_for
from test_evolve import TOY_SEARCH
from test_evolve_limits import MISBEHAVIOURS, _daemons, _variant

from osup_mp.evolve.judge import Judge
from osup_mp.evolve.shadows import reference
from osup_mp.evolve.standalone import Job, evaluate

CPU = min(os.sched_getaffinity(0))
LIMITS = {"watchdog": {"shadow_rss_mb": 250, "shadow_cpus": [CPU]}}
# A variant whose agent dies unless it runs on the shadows' CPUs alone.
PINNED = f"import os\n    if os.sched_getaffinity(0) != {{{CPU}}}:\n        os._exit(3)"
ORPHAN = ["sh", "-c", "setsid sleep 60 >/dev/null 2>&1 & echo $!"]  # its pid: an orphan, alone
SEARCHES = [{"op": "memory_search", "query": f"note {i}", "k": 3} for i in range(5)]


def _job(tree: Any, **deadlines: float) -> Job:
    with tree.data_client() as client:
        for i in range(50):
            client.request("request", data={"op": "memory_add", "text": f"note {i % 7} {i}"})
    workload = reference(tree.cfg, SEARCHES)
    return Job.for_tree(tree.cfg, "memory_system", workload, Judge(), **deadlines)


def _ray_processes() -> dict[int, str]:
    names = ("raylet", "gcs_server", "ray::")
    found = {}
    for p in psutil.process_iter(["name", "cmdline"]):
        text = " ".join(p.info["cmdline"] or [p.info["name"] or ""])
        if any(n in text for n in names) or "ray/_private" in text or "ray/dashboard" in text:
            found[p.pid] = text
    return found


def _wait_ray_stopped(before: set[int], what: str) -> None:
    """Wait for the Ray processes started since ``before`` to exit (the evaluator's close
    waits for them, so they should be gone at once); at the deadline, name those left."""
    left: dict[int, str] = {}

    def stopped() -> bool:
        nonlocal left
        left = {pid: text for pid, text in _ray_processes().items() if pid not in before}
        return not left

    try:
        wait_for(stopped, 15, interval=0.1, what=what)
    except pytest.fail.Exception:
        pytest.fail(f"{what}: still running after 15 s: {left}")


def test_the_keeper_limits_a_variant_as_a_shadow_is_limited(make_tree) -> None:
    tree = make_tree(**LIMITS).start()
    job = _job(tree, cpu_seconds=1.5, wall_seconds=5.0)
    variants = MISBEHAVIOURS | {"pinned": PINNED}
    with ThreadPoolExecutor(2) as pool:
        measured = list(pool.map(lambda body: evaluate(job, _variant(body)), variants.values()))
    figures = dict(zip(variants, measured, strict=True))
    good = figures["good"]
    assert good.failure is None and good.requests == 5 and good.mismatches == 0
    pinned = figures.pop("pinned")  # placed as a shadow: on [watchdog] shadow_cpus
    assert pinned.failure is None and pinned.requests == 5, pinned
    assert good.memory_mb > 0 and all(ms > 0 for ms in good.latencies_ms)
    failures = {name: str(f.failure) for name, f in figures.items() if name != "good"}
    assert failures["spin"] == "killed: CPU-time deadline 1.5 s (SIGXCPU)", failures
    assert failures["sleep"] == "killed: wall-clock deadline 5 s", failures
    assert failures["fork"] == "killed: wall-clock deadline 5 s", failures
    assert failures["hog"].startswith("killed: rss "), failures
    assert not _daemons()  # the keeper killed what the variant daemonised, before answering
    refused = evaluate(job, "x = (")
    assert refused.failure is not None and refused.failure.startswith("its agent refused")
    # The tree saw none of it: no shadow, and the main has its 50 blocks.
    assert [a["id"] for a in tree.status()["agents"]] == ["main"]


def test_variants_as_tasks_on_a_local_ray_instance(make_tree, tmp_path: Path) -> None:
    ray = pytest.importorskip("ray")
    from osup_mp.evolve.on_ray import RayEvaluator

    tree = make_tree(**LIMITS).start()
    job = _job(tree, cpu_seconds=1.5, wall_seconds=4.0)
    before = set(_ray_processes())
    evaluator = RayEvaluator(job, "local", workers=2)
    try:
        seen: list[Any] = []
        evaluator.on_variant = seen.append
        good, spin, fork = evaluator.evaluate(
            [_variant(MISBEHAVIOURS[n]) for n in ("good", "spin", "fork")]
        )
        # What no walk of the instance's process tree finds (as a worker the raylet spawns
        # while it shuts down): an orphan, here a task's.
        orphan = ray.remote(num_cpus=1)(subprocess.check_output).remote(ORPHAN)
        stray = psutil.Process(int(ray.get(orphan)))
        assert stray.ppid() not in _ray_processes()
    finally:
        evaluator.close()
    assert not stray.is_running() or stray.status() == psutil.STATUS_ZOMBIE
    assert good.failure is None and good.requests == 5 and len(seen) == 3
    assert spin.failure == "killed: CPU-time deadline 1.5 s (SIGXCPU)"
    assert fork.failure == "killed: wall-clock deadline 4 s"
    assert not _daemons()
    _wait_ray_stopped(before, "the local Ray instance to stop")

    # The command end to end: the faster constant found by tasks, the tree untouched.
    code, work = tmp_path / "toy.py", tmp_path / "work.jsonl"
    code.write_text(TOY_SEARCH)
    work.write_text("".join(json.dumps(q) + "\n" for q in SEARCHES))
    done = tree.cli(
        "evolve", "--code", str(code), "--target", "memory_system", "--requests", str(work),
        "--generations", "2", "--population", "3", "--seed", "1", "--ray", "local", "--json",
        timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert [g["variants"] for g in summary["generations"]] == [3, 3]
    assert summary["best"][0]["median_ms"] < summary["start"]["median_ms"]
    assert [a["id"] for a in tree.status()["agents"]] == ["main"]
    _wait_ray_stopped(before, "the command's Ray instance to stop")
    missing = tree.cli("evolve", "--code", str(code), "--target", "memory_system",
                       "--requests", str(work), "--ray", "127.0.0.1:1")  # fmt: skip
    assert missing.returncode == 2 and "cannot start Ray at '127.0.0.1:1'" in missing.stderr
