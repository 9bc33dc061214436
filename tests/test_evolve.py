"""``osup-mp evolve`` on a running tree: variants measured in shadows, the best reported, the
run on disk and resumable, no shadow left behind."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from support import wait_for

# The reference agent's search, slowed by a tunable: the best REPEAT is the smallest.
TOY_SEARCH = '''
"""The reference memory system with a tunable delay: evolution should find REPEAT = 1."""
import hashlib
import time

import numpy as np

DIM = 64
REPEAT = 6
PARAMS = {"REPEAT": (1, 8)}


def embed(text, dim=DIM):
    vec = np.zeros(dim, dtype=np.float32)
    for token in text.lower().split():
        h = int.from_bytes(hashlib.blake2b(token.encode(), digest_size=8).digest(), "little")
        vec[h % dim] += 1.0 if (h >> 32) & 1 else -1.0
    norm = float(np.linalg.norm(vec))
    return vec / norm if norm else vec


def search(matrix, query, k):
    time.sleep(0.002 * REPEAT)
    if matrix.shape[0] == 0 or k <= 0:
        return []
    norms = np.linalg.norm(matrix, axis=1) * (float(np.linalg.norm(query)) or 1.0)
    scores = matrix @ query / np.where(norms == 0, 1.0, norms)
    k = min(k, scores.shape[0])
    top = np.argpartition(-scores, k - 1)[:k]
    top = top[np.argsort(-scores[top], kind="stable")]
    return [(int(i), float(scores[i])) for i in top]
'''


def test_evolve_finds_a_faster_variant_and_a_run_can_be_resumed(make_tree, tmp_path: Path) -> None:
    tree = make_tree().start()
    with tree.data_client() as client:
        for i in range(200):
            client.request("request", data={"op": "memory_add", "text": f"note {i % 13} {i}"})
    code = tmp_path / "toy.py"
    code.write_text(TOY_SEARCH)
    work = tmp_path / "work.jsonl"
    queries = [{"op": "memory_search", "query": f"note {i}", "k": 3} for i in range(8)]
    work.write_text("".join(json.dumps(q) + "\n" for q in queries))
    args = ["--requests", str(work), "--json"]
    done = tree.cli(
        "evolve", "--code", str(code), "--target", "memory_system", "--generations", "3",
        "--population", "4", "--seed", "1", *args, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert [g["variants"] for g in summary["generations"]] == [4, 4, 4]
    best, start = summary["best"][0], summary["start"]
    assert best["fitness"] > start["fitness"] and best["median_ms"] < start["median_ms"]
    assert best["mismatches"] == 0 and best["error_rate"] == 0
    run = Path(summary["directory"])
    assert sorted(p.name for p in run.iterdir()) == [
        "gen-0000.json", "gen-0001.json", "gen-0002.json", "run.json",
    ]  # fmt: skip
    # No shadow outlives the run.
    wait_for(lambda: [a["id"] for a in tree.status()["agents"]] == ["main"], what="no shadow")
    # A finished run resumed has nothing left to do and reports the same best; a shadow of
    # the run left in the tree (by an evolve that was killed) is stopped.
    left = summary["run"].replace("run-", "evo") + "-99"
    assert tree.cli("shadow", "start", left).returncode == 0
    again = tree.cli("evolve", "--resume", summary["run"], *args, timeout=120)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["best"][0] == best
    assert [a["id"] for a in tree.status()["agents"]] == ["main"]


def test_evolve_proposes_the_best_and_lists_and_shows_runs(make_tree, tmp_path: Path) -> None:
    tree = make_tree(o_supervisor={"evolution_enabled": True}).start()
    with tree.data_client() as client:
        for i in range(100):
            client.request("request", data={"op": "memory_add", "text": f"note {i % 13} {i}"})
    code, work = tmp_path / "toy.py", tmp_path / "work.jsonl"
    code.write_text(TOY_SEARCH)
    searches = [{"op": "memory_search", "query": f"note {i}"} for i in range(6)]
    work.write_text("".join(json.dumps(q) + "\n" for q in searches))
    done = tree.cli(
        "evolve", "--code", str(code), "--target", "memory_system", "--requests", str(work),
        "--generations", "2", "--population", "3", "--seed", "3", "--propose", "--pareto",
        "--workers", "12", timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "workers: the room left under max_concurrent_shadows" in done.stderr
    assert "best fitness per generation:" in done.stdout and "+REPEAT = " in done.stdout
    assert "Pareto front (" in done.stdout and "MISMATCH" in done.stdout
    assert "proposed: experiment" in done.stdout
    experiment = done.stdout.split("proposed: experiment ")[1].split()[0]
    shown = tree.cli("experiment", "show", experiment, "--json")
    assert shown.returncode == 0 and "osup-mp evolve run-" in shown.stdout
    assert tree.cli("experiment", "stop", experiment).returncode == 0
    listed = json.loads(tree.cli("evolve", "list", "--json").stdout)
    assert len(listed) == 1 and listed[0]["generations"] == "2/2"
    run = listed[0]["run"]
    report = tree.cli("evolve", "show", run)
    assert report.returncode == 0 and f"run {run}:" in report.stdout
    assert "Pareto front (" in report.stdout  # the run's spec says --pareto
    svg = Path(json.loads(tree.cli("evolve", "show", run, "--json").stdout)["directory"])
    assert (svg / "fitness.svg").read_text().startswith("<svg")


def test_evolve_refuses_bad_input_with_the_reason(make_tree, tmp_path: Path) -> None:
    tree = make_tree().start()
    plain = tmp_path / "plain.py"
    plain.write_text("x = 1\n")
    work = tmp_path / "work.jsonl"
    work.write_text('{"op": "stats"}\nnot json\n')
    bad_work = tree.cli("evolve", "--code", str(plain), "--target", "m", "--requests", str(work))
    assert bad_work.returncode == 2 and "work.jsonl:2: not JSON" in bad_work.stderr
    work.write_text('{"op": "stats"}\n')
    nothing = tree.cli("evolve", "--code", str(plain), "--target", "m", "--requests", str(work))
    assert nothing.returncode == 2 and "nothing to vary" in nothing.stderr
    missing = tree.cli("evolve", "--resume", "run-0000beef", "--requests", str(work))
    assert missing.returncode == 2 and "cannot resume run-0000beef" in missing.stderr
    outside = tree.cli("evolve", "--resume", "../x", "--requests", str(work))
    assert outside.returncode == 2 and "a run is named run-XXXXXXXX" in outside.stderr


def test_evolve_killed_mid_generation_resumes_to_the_end(make_tree, tmp_path: Path) -> None:
    tree = make_tree().start()
    with tree.data_client() as client:
        for i in range(100):
            client.request("request", data={"op": "memory_add", "text": f"note {i % 13} {i}"})
    code, work = tmp_path / "toy.py", tmp_path / "work.jsonl"
    code.write_text(TOY_SEARCH)
    work.write_text("".join(json.dumps({"op": "memory_search", "query": f"note {i}"}) + "\n"
                            for i in range(6)))  # fmt: skip
    args = ["--requests", str(work), "--json"]
    cmd = [sys.executable, "-m", "osup_mp", "--config", str(tree.config_path), "evolve",
           "--code", str(code), "--target", "memory_system", "--generations", "3",
           "--population", "3", "--seed", "2", "--workers", "1", *args]  # fmt: skip
    evolve = subprocess.Popen(cmd, env=tree.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    root = tree.cfg.o_supervisor.data_dir / "evolve"
    try:
        first = wait_for(lambda: next(root.glob("run-*/gen-0000.json"), None), 120,
                         what="the first generation")  # fmt: skip
        run = first.parent.name
        prefix = run.replace("run-", "evo")
        wait_for(lambda: any(a["id"].startswith(prefix) for a in tree.status()["agents"]), 60,
                 what="a variant of generation 2 in flight")  # fmt: skip
        evolve.kill()  # SIGKILL: no cleanup of its own
    finally:
        evolve.kill()
        evolve.communicate()
    assert not (first.parent / "gen-0002.json").exists()
    kept = json.loads((first.parent / "run.json").read_text())  # what a resumed run uses
    assert kept["deadlines"] == {"cpu_seconds": 60.0, "wall_seconds": 300.0}
    assert kept["judge"]["score"] is None and kept["judge"]["tolerance"] >= 0
    resumed = tree.cli("evolve", "--resume", run, *args, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    assert [g["variants"] for g in summary["generations"]] == [3, 3, 3]
    assert [a["id"] for a in tree.status()["agents"]] == ["main"]  # the killed one's stopped
