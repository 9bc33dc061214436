"""Benchmark of the hot standby: SIGKILL -> first answered request, with and without one.

``python tools/bench/standby.py [--quick] [--json]``. For three agents (the reference
agent, a test agent that sleeps 1 s at start-up, the reference agent holding many memory
blocks) two trees run side by side, one with ``[agent] standby`` and one without, and are
killed in turns, so that both see the same background load. An Erlang/OTP supervisor
restarting the tests' minimal agent is the outside baseline (when ``escript`` is here), and
the kernel's report of every kill (SIGKILL -> the process gone, as a pidfd says, which comes
once its memory is freed; the manager acts earlier, on the agent's life lock) is measured
on the same kills. Then what a standby costs: its memory, and its CPU when idle.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # runnable from a checkout

import _harness as h
from _baselines import otp_supervisor, spawn_to_first_frame, test_agent
from splitter import load

from osup_mp.client import ErrorAnswer
from osup_mp.lowlevel.proc import readable
from osup_mp.storage.shm.segment import SlotState
from osup_mp.wire.launch import agent_args

# fmt: off
PLANS = {  # name: (full, quick)
    "kills": (10, 3), "blocks": (100_000, 10_000), "idle_s": (10.0, 3.0), "otp_kills": (5, 3),
}
# fmt: on
# The first request after a kill: one that costs the agent nothing, so that what is timed is
# the recovery; each answer says how many memories the agent holds (its state is intact).
PROBE = {"op": "stats"}
# Every kill of a main that became ready is a death after start-up (never a crash loop).
CONFIG = {"agent": {"startsecs": 0, "max_restarts": 100000, "ready_timeout": 60000}}
STANDBY = {True: {"agent": {"standby": True}}, False: {"agent": {"standby": False}}}


def standby_of(tree: h.Tree) -> dict[str, Any]:
    agents = tree.status().get("agents") or [{}]
    return dict(agents[0].get("standby") or {})


def settled(tree: h.Tree, standby: bool) -> None:
    """Wait until the main runs and answers (and its standby, if any, is following)."""

    def ready() -> bool:
        if tree.slot()["state"] != SlotState.RUNNING:
            return False
        return not standby or standby_of(tree).get("state") == "RUNNING"

    tree.until(ready, 120.0, "running with its standby" if standby else "running")
    with tree.data_client() as client:
        client.request("request", data=PROBE)


def kill_to_answer(tree: h.Tree, blocks: int) -> tuple[float, float]:
    """SIGKILL the main agent and ask it ``PROBE`` until it answers: (ms from the kill to
    the answer, ms from the kill to the kernel reporting the process gone). The answer must
    show all ``blocks`` memories."""
    pid, _generation = tree.agent()
    pidfd = os.pidfd_open(pid)
    gone = [0]

    def watch() -> None:
        readable(pidfd, 60.0)
        gone[0] = time.perf_counter_ns()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        with tree.data_client() as client:
            client.request("request", data=PROBE)  # connected, both ends warm
            t0 = time.perf_counter_ns()
            os.kill(pid, signal.SIGKILL)
            while True:
                try:
                    stats = client.request("request", data=PROBE, timeout=30)
                    break
                except ErrorAnswer:  # no standby: refused until the new agent is ready
                    time.sleep(0.0005)
            answered = time.perf_counter_ns()
        if stats["blocks"] != blocks:
            raise h.BenchError(f"{stats['blocks']} memories after the kill, not {blocks}")
        watcher.join(60.0)
    finally:
        os.close(pidfd)
    return h.since_ms(t0, answered), h.since_ms(t0, gone[0])


def agents(plan: h.Plan) -> list[tuple[str, h.Layers, int]]:
    """(name, config layer, memory blocks to load) of each agent measured."""
    return [
        ("reference agent", {}, 0),
        ("1 s start-up agent", test_agent("slow_start.py"), 0),
        (f"reference agent, {plan.blocks:,} blocks", {}, plan.blocks),
    ]


def otp_restarts(plan: h.Plan, progress: h.Progress) -> list[float]:
    """An Erlang/OTP supervisor restarting the tests' minimal agent: SIGKILL -> ready, ms."""
    progress(f"OTP supervisor: {plan.otp_kills} kills of the minimal agent")
    minimal = test_agent("minimal_agent.py")["o_supervisor"]
    argv = [minimal["gerbil_executable"], minimal["gerbil_main_script"], *agent_args("main")]
    env = dict(os.environ, OSUP_HEARTBEAT_INTERVAL_MS="200")
    ms: list[float] = []
    with otp_supervisor(argv, env) as otp:
        if otp is None:
            return ms
        pid = otp()[0]
        spawn_to_first_frame(argv, env)  # warm-up
        for _ in range(plan.otp_kills):
            time.sleep(1.2)  # as the agent bench: past any restart intensity window
            t0 = time.perf_counter_ns()
            os.kill(pid, signal.SIGKILL)
            pid, seen = otp()
            ms.append(h.since_ms(t0, seen))
    return ms


def one_agent(
    plan: h.Plan, report: h.Report, progress: h.Progress, name: str, layer: h.Layers, blocks: int
) -> tuple[list[float], h.Tree]:
    progress(f"{name}: {plan.kills} kills with and without a standby")
    ms: dict[str, list[float]] = {"with": [], "without": [], "gone": []}
    rates: dict[bool, list[float]] = {}
    with h.Tree(CONFIG, layer, STANDBY[True]) as hot, h.Tree(CONFIG, layer, STANDBY[False]) as cold:
        for tree, standby in ((hot, True), (cold, False)):
            tree.wait_running(None)
            if blocks:
                rates[standby] = load(tree, blocks)  # the standby applies every write too
            settled(tree, standby)
        if blocks:
            report.compare(
                f"{name}: writes (memory_add, 256 in flight)",
                rates[True],
                rates[False],
                "no standby",
                "",
                "adds/s",
            )
        for _ in range(plan.kills):
            for tree, key in ((hot, "with"), (cold, "without")):
                answer, gone = kill_to_answer(tree, blocks)
                ms[key].append(answer)
                if key == "with":
                    ms["gone"].append(gone)
                settled(tree, key == "with")
        cost = standby_cost(hot, plan.idle_s) if not layer and not blocks else {}
        promotions = (hot.status().get("agents") or [{}])[0].get("promotions")
        report.compare(
            f"{name}: SIGKILL -> first answer",
            ms["with"],
            ms["without"],
            "no standby",
            "median <= 3",
            "ms",
        )
        report.note(
            f"{name}: SIGKILL -> the kernel reports the process gone (pidfd), median "
            f"{h.median(ms['gone']):.2f} ms of the {h.median(ms['with']):.2f} ms; "
            f"promotions by status {promotions} of {plan.kills} kills."
        )
    if cost:
        report.row(
            "standby idle CPU (reference agent)",
            f"{cost['cpu_percent']:.2f} % of a core",
            f"main agent {cost['main_cpu_percent']:.2f} %",
            "<= 0.5 %",
            cost["cpu_percent"] <= 0.5,
            **cost,
        )
        report.row(
            "standby memory (reference agent)",
            f"RSS {cost['rss_mb']:.1f} MiB, USS {cost['uss_mb']:.1f} MiB",
            f"main agent RSS {cost['main_rss_mb']:.1f} MiB",
        )
    return ms["with"], hot


def standby_cost(tree: h.Tree, seconds: float) -> dict[str, float]:
    """The standby's and the main's CPU over ``seconds`` of idleness, and their memory."""
    standby = psutil.Process(int(standby_of(tree)["pid"]))
    main = psutil.Process(tree.agent()[0])
    before = h.cpu_seconds(standby), h.cpu_seconds(main)
    time.sleep(seconds)  # the figure measured: nothing happens meanwhile
    after = h.cpu_seconds(standby), h.cpu_seconds(main)
    mem, main_mem = standby.memory_full_info(), main.memory_full_info()
    return {
        "cpu_percent": (after[0] - before[0]) / seconds * 100,
        "main_cpu_percent": (after[1] - before[1]) / seconds * 100,
        "rss_mb": mem.rss / 2**20,
        "uss_mb": mem.uss / 2**20,
        "main_rss_mb": main_mem.rss / 2**20,
    }


def run(plan: h.Plan, report: h.Report, progress: h.Progress) -> None:
    otp = otp_restarts(plan, progress)
    for name, layer, blocks in agents(plan):
        with_standby, _tree = one_agent(plan, report, progress, name, layer, blocks)
        if otp:
            report.compare(
                f"  {name}: against OTP restarting the minimal agent",
                with_standby,
                otp,
                "OTP",
                "ratio <= 0.2x",
                "ms",
            )
    if not otp:
        report.note("OTP baseline skipped: no escript on this machine")


if __name__ == "__main__":
    sys.exit(h.main(__doc__, run, PLANS))
