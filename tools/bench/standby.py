"""Benchmark of the hot standby: SIGKILL -> first answered request with a standby against
without one, and against an Erlang/OTP supervisor restarting the tests' minimal agent (when
``escript`` is here); then what a standby costs, its memory and its idle CPU.

For the reference agent, a test agent that sleeps 1 s at start-up and the reference agent
holding many memories, a tree with ``[agent] standby`` and one without run side by side and
are killed in turns. The kernel's report of each kill (a pidfd readable once the process's
memory is freed; the manager acts earlier, on the agent's life lock) is noted beside.
"""

import os
import signal
import sys
import threading
import time

import _harness as h
import psutil
from _baselines import otp_supervisor, test_agent
from _procs import Tree, load, memories

from osup_mp.client import ErrorAnswer
from osup_mp.lowlevel.proc import readable
from osup_mp.storage.shm.segment import SlotState

PLANS = {  # name: (full, quick)
    "kills": (10, 3), "blocks": (100_000, 10_000), "idle_s": (10.0, 3.0), "otp_kills": (5, 3),
}  # fmt: skip
# The first request after a kill: one that costs the agent nothing, so that what is timed is
# the recovery; each answer says how many memories the agent holds (its state is intact).
PROBE = {"op": "stats"}
# Every kill of a main that became ready is a death after start-up (never a crash loop).
CONFIG = {"agent": {"startsecs": 0, "max_restarts": 100000, "ready_timeout": 60000}}


def settled(tree: Tree) -> None:
    """Wait until the main runs and answers (and its standby, if any, is following)."""
    standby = tree.cfg.agent.standby

    def ready() -> bool:
        if tree.slot()["state"] != SlotState.RUNNING:
            return False
        return not standby or (tree.main_status().get("standby") or {}).get("state") == "RUNNING"

    tree.until(ready, 120.0, "running with its standby" if standby else "running")
    with tree.data_client() as client:
        client.request("request", data=PROBE)


def kill_to_answer(tree: Tree, blocks: int, gone_ms: list[float]) -> float:
    """SIGKILL the main and ask it ``PROBE`` until it answers, with all ``blocks`` memories,
    then let it settle: ms from the kill to the answer (with a standby, also to the kernel
    reporting the process gone, into ``gone_ms``)."""
    pid, _generation = tree.agent()
    pidfd, gone = os.pidfd_open(pid), [0]

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
    if tree.cfg.agent.standby:
        gone_ms.append(h.since_ms(t0, gone[0]))
    settled(tree)
    return h.since_ms(t0, answered)


def one_agent(
    plan: h.Plan, report: h.Report, name: str, layer: h.Layers, blocks: int
) -> list[float]:
    """Kills with and without a standby, in turns; the times to an answer with one."""
    h.progress(f"{name}: {plan.kills} kills with and without a standby")
    hot_layer, cold_layer = {"agent": {"standby": True}}, {"agent": {"standby": False}}
    with Tree(CONFIG, layer, hot_layer) as hot, Tree(CONFIG, layer, cold_layer) as cold:
        trees = {"with": hot, "without": cold}
        if blocks:  # the standby applies every write too
            rates = {key: load(tree, memories(blocks)) for key, tree in trees.items()}
            what = f"{name}: writes (memory_add, 256 in flight)"
            report.compare(what, rates["with"], rates["without"], "no standby", "", "adds/s")
        for tree in trees.values():
            settled(tree)
        gone: list[float] = []
        ms = h.in_turns(plan.kills, trees, lambda tree: kill_to_answer(tree, blocks, gone))
        what, promotions = f"{name}: SIGKILL -> first answer", hot.main_status().get("promotions")
        report.compare(what, ms["with"], ms["without"], "no standby", "median <= 3", "ms")
        report.note(
            f"{name}: SIGKILL -> the kernel reports the process gone (pidfd), median "
            f"{h.median(gone):.2f} ms of the {h.median(ms['with']):.2f} ms; "
            f"promotions by status {promotions} of {plan.kills} kills."
        )
        if not layer and not blocks:  # what a standby costs: its and the main's idle CPU, memory
            standby = psutil.Process(int(hot.main_status()["standby"]["pid"]))
            main = psutil.Process(hot.agent()[0])
            cpu, main_cpu = h.cpu_percent([standby, main], plan.idle_s)  # nothing happens meanwhile
            mem, main_mem = standby.memory_full_info(), main.memory_full_info()
            cost = {"cpu_percent": cpu, "main_cpu_percent": main_cpu, "rss_mb": mem.rss / 2**20}
            cost.update(uss_mb=mem.uss / 2**20, main_rss_mb=main_mem.rss / 2**20)
            what, fig = "standby idle CPU (reference agent)", f"{cpu:.2f} % of a core"
            report.row(what, fig, f"main agent {main_cpu:.2f} %", "<= 0.5 %", cpu <= 0.5, **cost)
            what, fig = "standby memory (reference agent)", f"RSS {mem.rss / 2**20:.1f} MiB"
            fig += f", USS {mem.uss / 2**20:.1f} MiB"
            report.row(what, fig, f"main agent RSS {main_mem.rss / 2**20:.1f} MiB")
    return ms["with"]


def run(plan: h.Plan, report: h.Report) -> None:
    h.progress(f"OTP supervisor: {plan.otp_kills} kills of the minimal agent")
    otp_ms = list[float]()
    with otp_supervisor() as otp_kill:
        while otp_kill and len(otp_ms) < plan.otp_kills:
            time.sleep(1.2)  # as the agent bench: past any restart intensity window
            otp_ms.append(otp_kill())
    for name, layer, blocks in (
        ("reference agent", {}, 0),
        ("1 s start-up agent", test_agent("slow_start.py"), 0),
        (f"reference agent, {plan.blocks:,} blocks", {}, plan.blocks),
    ):
        with_standby = one_agent(plan, report, name, layer, blocks)
        what = f"  {name}: against OTP restarting the minimal agent"
        if otp_ms:
            report.compare(what, with_standby, otp_ms, "OTP", "ratio <= 0.2x", "ms")
    if not otp_ms:
        report.note("OTP baseline skipped: no escript on this machine")


if __name__ == "__main__":
    sys.exit(h.main(__doc__, run, PLANS))
