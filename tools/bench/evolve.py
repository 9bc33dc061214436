"""Benchmark of genetic evolution's evaluation: variants measured per minute in shadows.

``python tools/bench/evolve.py [--quick] [--json]``. One tree holding the example's memories
(``examples/evolve``); the same variants of ``examples/evolve/memory_system.py`` evaluated
on the same workload with 1 worker, with 2, and with as many as ``max_concurrent_shadows``
allows; and the same workload run in this process against each variant's module, the
baseline for what a shadow evaluation (start, restore, load, requests, stop) costs.
"""

from __future__ import annotations

import json
import random
import sys
import time
import types
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # runnable from a checkout

import _harness as h

from osup_mp.client import Client
from osup_mp.evolution.genetic import mutate
from osup_mp.evolve.judge import Judge
from osup_mp.evolve.shadows import ShadowEvaluator, reference
from osup_mp.evolve.standalone import Job, evaluate

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "evolve" / "memory_system.py"
# fmt: off
PLANS = {  # name: (full, quick)
    "blocks": (20000, 3000), "searches": (50, 20), "variants": (8, 4), "shadows": (4, 3),
    "ray": (1, 0),  # a local Ray instance too (when Ray is installed): full runs only
}
# fmt: on


def texts(n: int, rng: random.Random) -> list[str]:
    vocabulary = [f"w{i}" for i in range(500)]
    return [" ".join(rng.choice(vocabulary) for _ in range(8)) for _ in range(n)]


def load(tree: h.Tree, memories: list[str]) -> None:
    with tree.data_client() as client:
        for first in range(0, len(memories), 256):
            batch = memories[first : first + 256]
            for text in batch:
                client.send("request", data={"op": "memory_add", "text": text})
            for _ in batch:
                if not client.receive()["ok"]:
                    raise h.BenchError("memory_add failed")


def in_process(code: str, memories: list[str], searches: list[dict[str, Any]]) -> float:
    """Seconds to load ``code`` as a module and answer the searches on the same rows here."""
    started = time.perf_counter()
    module = types.ModuleType("memory_system")
    exec(compile(code, "<variant>", "exec"), module.__dict__)
    matrix = np.vstack([module.embed(t) for t in memories]).astype(np.float32)
    norms = np.linalg.norm(matrix, axis=1)
    for search in searches:
        module.search(matrix, module.embed(search["query"]), search["k"], norms=norms)
    return time.perf_counter() - started


def ray_per_minute(job: Job, variants: list[str]) -> float | None:
    """Variants per minute as tasks of a local Ray instance with 2 CPUs (its start and stop
    not counted); None when Ray is not installed."""
    try:
        from osup_mp.evolve.on_ray import RayEvaluator, RayUnavailable
    except ImportError:
        return None
    try:
        evaluator = RayEvaluator(job, "local", workers=2)
    except RayUnavailable:
        return None
    try:
        evaluator.evaluate(variants[:1])  # the workers' first import, not counted
        started = time.perf_counter()
        figures = evaluator.evaluate(variants)
        elapsed = time.perf_counter() - started
    finally:
        evaluator.close()
    failed = [f.failure for f in figures if f.failure and "differ" not in f.failure]
    if failed:
        raise h.BenchError(f"a Ray evaluation failed: {failed[0]}")
    return len(variants) / elapsed * 60


def standalone_seconds(job: Job, variants: list[str]) -> float:
    """The median seconds of one variant evaluated away from the tree, from a checkpoint."""
    seconds = []
    for code in variants:
        started = time.perf_counter()
        figures = evaluate(job, code)
        seconds.append(time.perf_counter() - started)
        if figures.failure and "differ" not in figures.failure:
            raise h.BenchError(f"a standalone evaluation failed: {figures.failure}")
    return float(np.median(seconds))


def run(plan: h.Plan, report: h.Report, progress: h.Progress) -> None:
    rng = random.Random(7)
    memories = texts(plan.blocks, rng)
    words = [f"w{i}" for i in range(500)]
    searches = [
        {"op": "memory_search", "query": " ".join(rng.choice(words) for _ in range(3)), "k": 10}
        for _ in range(plan.searches)
    ]
    start = EXAMPLE.read_text()
    variants = [start] + [mutate(start, rng) for _ in range(plan.variants - 1)]
    layer = {"o_supervisor": {"max_concurrent_shadows": plan.shadows}}
    with h.Tree(layer) as tree:
        tree.wait_running(None)
        progress(f"loading {plan.blocks:,} memories")
        load(tree, memories)
        workload = reference(tree.cfg, searches)
        per_minute: dict[int, list[float]] = {}
        for workers in (1, 2, plan.shadows):
            progress(f"{len(variants)} variants, {workers} worker(s)")
            evaluator = ShadowEvaluator(tree.cfg, "memory_system", workload, workers=workers)
            started = time.perf_counter()
            figures = evaluator.evaluate(variants)
            elapsed = time.perf_counter() - started
            failed = [f.failure for f in figures if f.failure and "differ" not in f.failure]
            if failed:
                raise h.BenchError(f"evaluations failed: {failed[:2]}")
            per_minute[workers] = [len(variants) / elapsed * 60]
        progress(f"{len(variants)} variants in standalone keepers (what a Ray task runs)")
        job = Job.for_tree(tree.cfg, "memory_system", workload, Judge())
        keeper_s = standalone_seconds(job, variants)
        on_ray = ray_per_minute(job, variants) if plan.ray else None
        with Client.for_config(tree.cfg) as client:
            left = [a["id"] for a in client.request("status")["agents"] if a["id"] != "main"]
    if left:
        raise h.BenchError(f"shadows left in the tree: {left}")
    report.compare(
        "variants evaluated per minute, 2 workers", per_minute[2], per_minute[1],
        "1 worker", "ratio >= 1.6x", "variants/min",
    )  # fmt: skip
    report.compare(
        f"variants evaluated per minute, {plan.shadows} workers (max_concurrent_shadows)",
        per_minute[plan.shadows], per_minute[1], "1 worker", "", "variants/min",
    )  # fmt: skip
    progress("the same workload in this process")
    here = [in_process(code, memories, searches) for code in variants]
    shadow_s = 60 / per_minute[1][0]
    report.row(
        "one evaluation in a shadow, 1 worker",
        f"{shadow_s:.2f} s",
        f"in this process {np.median(here):.2f} s (embed {plan.blocks:,} rows, then search)",
        ok=None,
        shadow_s=shadow_s,
        in_process_s=float(np.median(here)),
    )
    report.row(
        "one evaluation in a standalone keeper (a Ray task's body), 1 worker",
        f"{keeper_s:.2f} s",
        f"in a shadow {shadow_s:.2f} s",
        ok=None,
        keeper_s=keeper_s,
    )
    if on_ray is not None:
        report.compare(
            "variants evaluated per minute as Ray tasks, 2 CPUs (a local instance)",
            [on_ray], per_minute[2], "2 shadows", "", "variants/min",
        )  # fmt: skip
    rates = {k: round(v[0], 1) for k, v in per_minute.items()}
    report.note(
        f"{plan.blocks:,} memories, {plan.searches} searches per variant, {len(variants)} variants "
        f"(the example's memory system and mutants of it); a shadow evaluation starts a "
        f"shadow, restores the main's state, loads the variant, answers a warm-up and the "
        f"workload, and stops the shadow. Variants/min by workers: {json.dumps(rates)}"
    )


if __name__ == "__main__":
    sys.exit(h.main(__doc__, run, PLANS))
