"""Benchmark of shadow experiments: the main path (the reference agent answering
``memory_search``) with a mirror against without, with the splitter against a tree without
it, time to a verdict, and the reference agent's adds as its state grows. Each comparison
alternates its two configurations in the same run, so both see the same background load.
"""

import inspect
import itertools
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import _harness as h
from _baselines import pipelined
from _procs import Tree, load, memories

from osup_mp.agent.reference import memory_system
from osup_mp.app.specs import child_specs
from osup_mp.client import Client
from osup_mp.config import Config
from osup_mp.config.schema import cpu_ranges
from osup_mp.runtime.supervisor import ChildSpec
from osup_mp.storage.shm.segment import SharedState

HYPOTHESES = Path(__file__).resolve().parents[2] / "examples" / "hypotheses"
SLOW_ARM = inspect.getsource(memory_system) + (  # hot-loaded into a shadow: 5 ms a search
    "\n\nimport time\n\n_search = search\n\n\ndef search(matrix, query, k, norms=None):\n"
    "    time.sleep(0.005)\n    return _search(matrix, query, k)\n"
)
EXPERIMENTS = {
    "o_supervisor": {"evolution_enabled": True, "max_concurrent_shadows": 4},
    "watchdog": {"shadow_rss_mb": 2048},
}
WINDOW = 32  # requests in flight for throughput
PLANS = {  # name: (full, quick)
    "blocks": (20000, 5000), "rounds": (8, 3), "round_trips": (500, 200),
    "pipelined": (3000, 1000), "overload_s": (5.0, 2.0), "verdict_rate": (100, 100),
    "load_blocks": (50000, 10000),
}  # fmt: skip


def search(i: int) -> dict[str, Any]:
    return {"op": "memory_search", "query": f"note {i % 97} about topic {i % 13}", "k": 5}


def round_trips(client: Client, n: int) -> list[float]:
    counter = itertools.count()
    return h.timed_us(lambda: client.request("request", data=search(next(counter))), n)


def mirror_cost(tree: Tree, plan: h.Plan, report: h.Report, how: str = "") -> list[float]:
    """Mirror 10% to two shadows on and off, alternately; the round trips with it off."""
    arms = ["arm1", "arm2"]
    for arm in arms:
        tree.request("shadow_start", wait=120.0, id=arm)
    samples: dict[bool, list[float]] = {True: [], False: []}
    rates: dict[bool, list[float]] = {True: [], False: []}
    with tree.data_client() as client:
        round_trips(client, 200)  # warm-up
        for _ in range(plan.rounds):
            for on in (False, True):
                if on:
                    tree.request("mirror_start", to=arms, ratio=0.1, id="bench")
                samples[on] += round_trips(client, plan.round_trips)
                rates[on].append(pipelined(client, search, plan.pipelined, WINDOW))
                if on:
                    tree.request("mirror_stop", id="bench")
    for arm in arms:
        tree.request("shadow_stop", id=arm)
    mirrored, plain, label = samples[True], samples[False], "mirror off"
    what = f"main path, mirroring 10%{how}"
    report.compare(f"{what} (median)", mirrored, plain, label, "ratio <= 1.1x", "us")
    mine, base = h.p99(mirrored), h.p99(plain)
    shown, ok = f"{label} {base:.0f} us  ratio {mine / base:.2f}", mine / base <= 1.1
    fig, target = f"{mine:.0f} us", "ratio <= 1.1x"
    report.row(f"{what} (p99)", fig, shown, target, ok, p99=mine, baseline_p99=base)
    what = f"main throughput, mirroring 10%{how}"
    report.compare(what, rates[True], rates[False], label, "ratio >= 0.9", "req/s")
    return plain


def split_cpus(plan: h.Plan, report: h.Report, shared: list[float]) -> None:
    """The same with the main path on the first CPU and the mirror on the others
    (``[agent] main_cpus``, ``[watchdog] shadow_cpus``; this process, the caller, pinned
    with the main); ``shared``: the round trips of the unpinned tree, mirror off."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        report.note("CPUs split: skipped, one CPU")
        return
    main, rest = cpus[:1], cpus[1:]
    placed = {"agent": {"main_cpus": main}, "watchdog": {"shadow_cpus": rest}}
    how = f", CPUs split ({main[0]} | {cpu_ranges(set(rest))})"
    with Tree(EXPERIMENTS, placed) as tree:  # forked before this process is pinned
        load(tree, memories(plan.blocks))
        with h.pinned(set(main)):
            plain = mirror_cost(tree, plan, report, how)
    report.note(
        f"CPUs split: the main path alone on CPU {main[0]}, mirror off, median "
        f"{h.median(plain):.0f} us, p99 {h.p99(plain):.0f} us; on all CPUs "
        f"{h.median(shared):.0f} us, p99 {h.p99(shared):.0f} us (the same run)"
    )


def without_splitter(cfg: Config, shm: SharedState) -> list[ChildSpec]:
    return [s for s in child_specs(cfg, shm) if s.name not in ("splitter", "arbiter")]


def overload(tree: Tree, plan: h.Plan, report: h.Report) -> None:
    """Every read mirrored to a shadow that takes 5 ms a search, the main driven flat out."""
    tree.request("shadow_start", wait=120.0, id="slow")
    answer = tree.request("hot_reload", id="slow", code=SLOW_ARM, module="memory_system")
    if not answer["ok"]:
        raise h.BenchError(f"hot reload into the slow shadow: {answer['error']}")
    rates: dict[bool, list[float]] = {True: [], False: []}
    with tree.data_client() as client:
        for on in (False, True, False, True):
            if on:
                tree.request("mirror_start", to=["slow"], ratio=1.0, id="flood")
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < plan.overload_s / 2:
                rates[on].append(pipelined(client, search, plan.pipelined // 2, WINDOW))
            if on:
                figures = tree.request("mirror_stop", id="flood")["arms"][0]
    tree.request("shadow_stop", id="slow")
    sent, dropped = figures["sent"], figures["dropped"]
    what = "main throughput, a 5 ms shadow mirrored 100%"
    report.compare(what, rates[True], rates[False], "no mirror", "ratio >= 0.9", "req/s")
    what, shown = "  mirrored copies dropped under that overload", f"{dropped} of {sent + dropped}"
    base = f"{sent} sent to the shadow"
    report.row(what, shown, base, "dropped > 0", dropped > 0, sent=sent, dropped=dropped)


def time_to_verdict(tree: Tree, plan: h.Plan, report: h.Report) -> None:
    """``faster_search`` against the shipped search, mirrored at ``verdict_rate`` req/s."""
    stop = threading.Event()

    def drive() -> None:  # paced: one search every 1/rate s
        with tree.data_client() as client:
            for i in itertools.count():
                if stop.wait(1 / plan.verdict_rate):
                    return
                client.request("request", data=search(i))

    driver = threading.Thread(target=drive, daemon=True)
    driver.start()
    try:
        code = (HYPOTHESES / "faster_search.py").read_text()
        t0 = time.monotonic()
        record = tree.request("experiment_start", code=code, target="memory_system", ratio=1.0)
        started = judged = None  # mirroring began (calibration first); the code switched
        while record["state"] not in ("watching", "decided"):
            time.sleep(0.1)
            record = tree.request("experiment_show", id=record["id"])
            if started is None and record["state"] not in ("starting", "loading"):
                started = time.monotonic()
            if judged is None and record["state"] == "running":
                judged = time.monotonic()
        decided = time.monotonic()
    finally:
        stop.set()
        driver.join()
    if record["verdict"] != "promoted" or started is None or judged is None:
        raise h.BenchError(f"faster_search was not promoted: {record['rule']}: {record['reason']}")
    traffic, arms, calibration = decided - started, started - t0, judged - started
    what = f"time to a verdict, faster_search at {plan.verdict_rate} mirrored req/s"
    shown = f"{traffic:.1f} s of traffic ({calibration:.1f} s calibrating)"
    base = f"fixed horizon 300 s; arms ready in {arms:.1f} s"
    data = {"seconds": traffic, "arms_ready_s": arms, "calibration_s": calibration}
    data["rule"] = record["rule"]
    report.row(what, shown, base, "< 30 s", traffic < 30, **data)


def run(plan: h.Plan, report: h.Report) -> None:
    h.progress(f"loading {plan.load_blocks} memories into a fresh tree")
    with Tree(EXPERIMENTS) as tree:
        adds = load(tree, memories(plan.load_blocks))
    what, shown = f"loading {plan.load_blocks} memories, last tenth", f"{adds[-1]:.0f} adds/s"
    base = f"first tenth {adds[0]:.0f} adds/s  ratio {adds[-1] / adds[0]:.2f}"
    report.row(what, shown, base, ">= 5000 adds/s", adds[-1] >= 5000, rates=adds)
    with Tree(EXPERIMENTS) as tree:
        h.progress(f"loading {plan.blocks} memories")
        load(tree, memories(plan.blocks))
        h.progress("main path with and without a mirror")
        shared = mirror_cost(tree, plan, report)
        h.progress("main path with and without the splitter (idle), alternately")
        with Tree(EXPERIMENTS, specs=without_splitter) as bare:
            load(bare, memories(plan.blocks))
            with tree.data_client() as with_it, bare.data_client() as without:
                clients, n = {"with": with_it, "without": without}, plan.round_trips
                h.in_turns(1, clients, lambda client: round_trips(client, 200))  # warm-up
                rtt = h.in_turns(plan.rounds * 2, clients, lambda client: round_trips(client, n))
        what, base = "main path, splitter idle (median)", "no splitter"
        report.compare(what, rtt["with"], rtt["without"], base, "ratio <= 1.02x", "us")
        h.progress("a slow shadow mirrored 100%")
        overload(tree, plan, report)
        h.progress("time to a verdict")
        time_to_verdict(tree, plan, report)
    h.progress("main path with and without a mirror, CPUs split")
    split_cpus(plan, report, shared)
    report.note(f"{plan.blocks} memories; searches of k=5; {WINDOW} in flight for throughput")


if __name__ == "__main__":
    sys.exit(h.main(__doc__, run, PLANS))
