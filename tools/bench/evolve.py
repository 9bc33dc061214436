"""Benchmark of genetic evolution's evaluation: variants of
``examples/evolve/memory_system.py`` evaluated per minute in shadows with 2 and with
``max_concurrent_shadows`` workers against 1 worker; one evaluation in a shadow and in a
standalone keeper against the same workload run in this process.
"""

import json
import random
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _harness as h
import numpy as np
from _procs import Tree, load

from osup_mp.evolution.genetic import mutate
from osup_mp.evolve.judge import Judge
from osup_mp.evolve.shadows import ShadowEvaluator, reference
from osup_mp.evolve.standalone import Job, evaluate

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "evolve" / "memory_system.py"
PLANS = {  # name: (full, quick); "ray": a local Ray instance too (when installed)
    "blocks": (20000, 3000), "searches": (50, 20), "variants": (8, 4), "shadows": (4, 3),
    "ray": (1, 0),
}  # fmt: skip


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


def seconds(evaluate: Callable[[list[str]], list[Any]], variants: list[str]) -> float:
    """Seconds ``evaluate`` takes for ``variants``; any failure but a differing answer fails."""
    started = time.perf_counter()
    figures = evaluate(variants)
    elapsed = time.perf_counter() - started
    if failed := [f.failure for f in figures if f.failure and "differ" not in f.failure]:
        raise h.BenchError(f"evaluations failed: {failed[:2]}")
    return elapsed


def per_minute(evaluate: Callable[[list[str]], list[Any]], variants: list[str]) -> float:
    return len(variants) / seconds(evaluate, variants) * 60


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
        return per_minute(evaluator.evaluate, variants)
    finally:
        evaluator.close()


def run(plan: h.Plan, report: h.Report) -> None:
    rng, words = random.Random(7), [f"w{i}" for i in range(500)]
    memories = [" ".join(rng.choice(words) for _ in range(8)) for _ in range(plan.blocks)]
    searches = [
        {"op": "memory_search", "query": " ".join(rng.choice(words) for _ in range(3)), "k": 10}
        for _ in range(plan.searches)
    ]
    start = EXAMPLE.read_text()
    variants = [start] + [mutate(start, rng) for _ in range(plan.variants - 1)]
    with Tree({"o_supervisor": {"max_concurrent_shadows": plan.shadows}}) as tree:
        h.progress(f"loading {plan.blocks:,} memories")
        load(tree, [{"op": "memory_add", "text": text} for text in memories])
        workload = reference(tree.cfg, searches)
        rates: dict[int, list[float]] = {}
        for workers in (1, 2, plan.shadows):
            h.progress(f"{len(variants)} variants, {workers} worker(s)")
            evaluator = ShadowEvaluator(tree.cfg, "memory_system", workload, workers=workers)
            rates[workers] = [per_minute(evaluator.evaluate, variants)]
        h.progress(f"{len(variants)} variants in standalone keepers (what a Ray task runs)")
        job = Job.for_tree(tree.cfg, "memory_system", workload, Judge())

        def keepers(codes: list[str]) -> list[Any]:  # each evaluated away from the tree
            return [evaluate(job, code) for code in codes]

        keeper_s = h.median([seconds(keepers, [code]) for code in variants])
        on_ray = ray_per_minute(job, variants) if plan.ray else None
        left = [a["id"] for a in tree.status()["agents"] if a["id"] != "main"]
    if left:
        raise h.BenchError(f"shadows left in the tree: {left}")
    what, unit = "variants evaluated per minute, 2 workers", "variants/min"
    report.compare(what, rates[2], rates[1], "1 worker", "ratio >= 1.6x", unit)
    what = f"variants evaluated per minute, {plan.shadows} workers (max_concurrent_shadows)"
    report.compare(what, rates[plan.shadows], rates[1], "1 worker", "", unit)
    h.progress("the same workload in this process")
    here = h.median([in_process(code, memories, searches) for code in variants])
    shadow_s = 60 / rates[1][0]
    what, base = "one evaluation in a shadow, 1 worker", f"in this process {here:.2f} s"
    base += f" (embed {plan.blocks:,} rows, then search)"
    report.row(what, f"{shadow_s:.2f} s", base, shadow_s=shadow_s, in_process_s=here)
    what = "one evaluation in a standalone keeper (a Ray task's body), 1 worker"
    report.row(what, f"{keeper_s:.2f} s", f"in a shadow {shadow_s:.2f} s", keeper_s=keeper_s)
    if on_ray is not None:
        what = "variants evaluated per minute as Ray tasks, 2 CPUs (a local instance)"
        report.compare(what, [on_ray], rates[2], "2 shadows", "", unit)
    by_workers = {k: round(v[0], 1) for k, v in rates.items()}
    report.note(
        f"{plan.blocks:,} memories, {plan.searches} searches per variant, {len(variants)} variants "
        f"(the example's memory system and mutants of it); a shadow evaluation starts a "
        f"shadow, restores the main's state, loads the variant, answers a warm-up and the "
        f"workload, and stops the shadow. Variants/min by workers: {json.dumps(by_workers)}"
    )


if __name__ == "__main__":
    sys.exit(h.main(__doc__, run, PLANS))
