"""Benchmark of the agent layer: requests against a bare relay and the agent's own pipes,
restarts and kills against a bare spawn and an OTP supervisor, hangs against the heartbeat
budget, shared-memory state against a pipe, and the manager's CPU under a heartbeat flood.
Each baseline runs in turns with its figure, so that both see the same background load.
"""

import contextlib
import functools
import os
import random
import re
import signal
import sys
import time
from collections.abc import Callable

import _baselines as b
import _harness as h
import numpy as np
from _procs import RESTART_FREELY, Tree

from osup_mp.client import Client
from osup_mp.components.agent import launch
from osup_mp.lowlevel.proc import readable

WINDOW = 64  # requests in flight for the pipelined figures
REQUEST = {"op": "stats"}
# Hangs are detected within 1.2 s, and every kill restarts at once (never a crash loop).
FAST = {
    "o_supervisor": {"heartbeat_interval": 200, "heartbeat_timeout": 1000},
    "agent": {"startsecs": 0, "max_restarts": 100000},
}
FLOOD_RATE = 325_000  # heartbeat frames/s, the rate the fault review measured
LOG_LINES = {  # what the tree's log says, counted after each part
    "backoff": r"agent \S+: restart \d+ in ",
    "fatal": "FATAL",
    "hang": "heartbeat timeout.*restarting",
}
PLANS = {  # name: (full, quick)
    "round_trips": (2000, 300), "pipelined": (20000, 3000), "pipelined_runs": (3, 3),
    "restarts": (20, 5), "hangs": (5, 2), "kills": (5, 3), "kill_pause": (3.0, 1.2),
    "reads_copy": (300, 50), "reads_view": (3000, 500), "pipe_transfers": (200, 50),
    "publishes_big": (300, 50), "publishes_small": (3000, 500),
}  # fmt: skip


def log_counts(log: str) -> dict[str, int]:
    return {what: len(re.findall(pattern, log)) for what, pattern in LOG_LINES.items()}


def requests(tree: Tree, plan: h.Plan, agent: b.Launch, report: h.Report) -> None:
    """Through the manager, the bare relay and the agent's own pipes, in turns."""
    path = tree.tmp / "relay.sock"
    with (
        b.DirectAgent(agent) as direct,
        tree.data_client() as manager,
        b.bare_relay(path, agent, tree.cfg.supervisor.busy_poll_us),
        Client(path, timeout=30.0) as relay,
    ):
        direct.wait_ready()
        ends: dict[str, Client | b.DirectAgent] = dict(direct=direct, manager=manager, relay=relay)

        def round_trips(end: Client | b.DirectAgent) -> list[float]:
            return h.timed_us(functools.partial(end.request, "request", data=REQUEST), 100)

        def rate(end: Client | b.DirectAgent) -> float:
            return b.pipelined(end, lambda _i: REQUEST, plan.pipelined, WINDOW)

        rtt = h.in_turns(plan.round_trips // 100 + 2, ends, round_trips)
        rtt = {name: values[200:] for name, values in rtt.items()}  # 2 turns of warm-up
        rates = h.in_turns(plan.pipelined_runs, ends, rate)
    what, relay_ = "request round trip (1 in flight)", "bare relay"
    report.compare(what, rtt["manager"], rtt["relay"], relay_, "ratio <= 1.2x", "us")
    what = f"pipelined requests ({WINDOW} in flight)"
    report.compare(what, rates["manager"], rates["relay"], relay_, "ratio >= 0.833", "req/s")
    us, rs = h.median(rtt["direct"]), h.median(rates["direct"])
    ratios = h.median(rtt["manager"]) / us, h.median(rates["manager"]) / rs
    what, shown = "  reference: the agent on its own pipes", f"{us:.0f} us;  {rs:.0f} req/s"
    report.row(what, shown, f"manager ratios {ratios[0]:.2f};  {ratios[1]:.2f}", us=us, per_s=rs)


def restarts(tree: Tree, n: int, agent: b.Launch, report: h.Report) -> float:
    """SIGKILL -> a new generation, -> RUNNING, each then a bare spawn; the median restart."""
    ms: dict[str, list[float]] = {"generation": [], "restart": [], "popen": [], "spawn": []}
    b.spawn_to_first_frame(agent)  # warm-up (page cache)
    for _ in range(n):
        _t0, spawned, running = tree.kill_agent()
        time.sleep(0.05)  # up past startsecs: the next kill restarts at once
        for key, value in zip(ms, (spawned, running, *b.spawn_to_first_frame(agent)), strict=True):
            ms[key].append(value)
    what, first = "agent restart (SIGKILL -> RUNNING)", "spawn -> first frame"
    report.compare(what, ms["restart"], ms["spawn"], first, "ratio <= 1.5x", "ms")
    med = {key: h.median(values) for key, values in ms.items()}
    report.note(
        f"restart (medians): SIGKILL -> new generation in the slot (the manager reaps, Popen "
        f"returns) {med['generation']:.1f} ms, then -> RUNNING "
        f"{med['restart'] - med['generation']:.1f} ms; the baseline's Popen "
        f"{med['popen']:.1f} ms, then -> first frame {med['spawn'] - med['popen']:.1f} ms.",
    )
    return med["restart"]


def hangs(tree: Tree, n: int, startup: float, report: h.Report) -> None:
    """SIGSTOP the agent at a random point of its heartbeat cycle; a pidfd on it tells when
    the manager's SIGKILL landed (more precise than the slot's pid, which the manager
    clears and refills in one step), the slot when the replacement is RUNNING."""
    slot, o = tree.slot(), tree.cfg.o_supervisor
    budget, phase, runs = o.heartbeat_timeout + o.heartbeat_interval, random.Random(1), []
    for _ in range(n):
        # Right after a beat is the worst case for the stop -> killed time.
        time.sleep(0.3 + phase.uniform(0.0, o.heartbeat_interval / 1000))
        pid, generation = tree.agent()
        pidfd = os.pidfd_open(pid)
        t_stop = time.perf_counter_ns()  # CLOCK_MONOTONIC, as the slot's stamps
        signal.pidfd_send_signal(pidfd, signal.SIGSTOP)
        try:
            time.sleep(0.02)  # frames already in the pipe get stamped; then beats are final
            last_beat = max(int(slot["hb_agent_ns"]), int(slot["hb_frame_ns"]))
            tree.until(functools.partial(readable, pidfd, 0), 30.0, "killing a hung agent")
            t_dead = time.perf_counter_ns()
            t_ready = tree.wait_running(generation, 30.0)[1]
        finally:
            with contextlib.suppress(ProcessLookupError):  # do not leave it stopped
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            os.close(pidfd)
        runs.append((t_dead - t_stop, t_ready - t_stop, max(0, t_stop - last_beat)))
    detected, replaced, ages = ([x / 1e6 for x in column] for column in zip(*runs, strict=True))
    restart = f"that + restart {startup:.0f} ms"
    for what, values, limit, base in (
        ("hang detected (SIGSTOP -> killed)", detected, budget, f"timeout + interval {budget} ms"),
        ("hang replaced (-> RUNNING)", replaced, budget + startup, restart),
    ):
        shown = f"max {max(values):.0f} ms  (runs {', '.join(f'{x:.0f}' for x in values)})"
        target = f"every run <= {limit:.0f} ms"
        report.row(what, shown, base, target, max(values) <= limit, ms=values)
    report.note(
        f"hang: 'killed' is when the manager's SIGKILL landed; 'replaced' adds the agent's "
        f"start-up (the median restart above). Heartbeat age at SIGSTOP "
        f"{', '.join(f'{x:.0f}' for x in ages)} ms; replaced within {budget} ms alone: "
        f"{max(replaced) <= budget}.",
    )


def kills(plan: h.Plan, report: h.Report) -> dict[str, int]:
    """The minimal agent in a tree (shipped restart policy), under OTP and bare, in turns."""
    h.progress(f"kills: {plan.kills} x {plan.kill_pause:g} s apart, minimal agent")
    ms: dict[str, list[float]] = {"tree": [], "otp": [], "spawn": []}
    shipped, agent = {"agent": {"startsecs": 1.0, "max_restarts": 5}}, b.minimal_agent()
    with (
        Tree(RESTART_FREELY, FAST, shipped, b.test_agent("minimal_agent.py")) as tree,
        b.otp_supervisor() as otp_kill,
    ):
        steps: list[Callable[[], None]] = [
            lambda: ms["tree"].append(tree.kill_agent()[2]),
            lambda: ms["spawn"].append(b.spawn_to_first_frame(agent)[1]),
        ]
        if otp_kill is not None:
            steps.insert(1, lambda: ms["otp"].append(otp_kill()))
        for i in range(plan.kills):
            time.sleep(plan.kill_pause)  # up past startsecs: restarted at once
            # The first start after the pause finds the CPUs idle and pays ~2 ms more
            # here: each goes first in turn.
            for step in steps[i % len(steps) :] + steps[: i % len(steps)]:
                step()
    what = f"kills {plan.kill_pause:g} s apart, minimal agent (SIGKILL -> ready)"
    report.compare(what, ms["tree"], ms["spawn"], "bare spawn", "ratio <= 1.2x", "ms")
    if ms["otp"]:
        report.compare("  the same kills", ms["tree"], ms["otp"], "OTP", "ratio <= 1.5x", "ms")
    else:
        report.row("  the same kills", "", "OTP: skipped, no escript here", "ratio <= 1.5x")
    return log_counts(tree.log)


def shared_memory(plan: h.Plan, report: h.Report) -> None:
    """Reads of a published matrix against a pipe; publishes with and without the CRC."""
    h.progress("shared-memory state against a pipe; publish rates")
    rng = np.random.default_rng(7)
    big = rng.standard_normal((1000, 512), np.float32)
    small = rng.standard_normal((100, 64), np.float32)
    with h.segment(8 * 1024 * 1024) as (_name, shm):
        shm.publish(big)
        check = shm.read(copy=True, verify=True)
        if not check.crc_ok or not np.array_equal(check.matrix, big):
            raise h.BenchError("a shared-memory read does not match the published matrix")
        reads = {
            "copy=True": h.timed_us(lambda: shm.read(copy=True), plan.reads_copy, 10),
            "copy=False": h.timed_us(lambda: shm.read(copy=False), plan.reads_view),
        }
        pipe = h.median(b.pipe_transfers(big.tobytes(), plan.pipe_transfers))
        cpu0 = min(os.sched_getaffinity(0))
        # A pipe's best case on a small VM, where a wake-up on another CPU is dear.
        one_cpu = h.median(b.pipe_transfers(big.tobytes(), plan.pipe_transfers, cpu0))
        rates: dict[tuple[tuple[int, ...], bool], float] = {}
        for matrix, count in ((big, plan.publishes_big), (small, plan.publishes_small)):
            for crc in (True, False):  # each after one warm-up
                us = h.timed_us(functools.partial(shm.publish, matrix, checksum=crc), count, 1)
                rates[matrix.shape, crc] = count * 1e6 / sum(us)
    for what, us in reads.items():
        speedup = pipe / h.median(us)
        target = ">= 10x faster" + " (reported)" * (what == "copy=True")
        shown = f"pipe {pipe:.0f} us  {speedup:.1f}x faster"
        report.row(f"shm state read 2 MB {what}", h.spread(us, "us"), shown, target, speedup >= 10)
    for matrix in (big, small):
        what = f"publish {matrix.shape[0]}x{matrix.shape[1]} ({matrix.nbytes / 1e3:g} kB)"
        on, off = rates[matrix.shape, True], rates[matrix.shape, False]
        report.row(what, f"{on:.0f}/s with CRC", f"{off:.0f}/s without CRC", per_s=on, plain=off)
    report.note(
        f"shm: copy=False maps the bytes without touching them. A pipe with both ends on CPU "
        f"{cpu0} takes {one_cpu:.0f} us: copy=False {one_cpu / h.median(reads['copy=False']):.0f}x "
        f"and copy=True {one_cpu / h.median(reads['copy=True']):.1f}x faster.",
    )


def heartbeat_flood(report: h.Report, seconds: float = 3.0) -> None:
    """The manager's CPU with the flooding test agent idle, then flooding; it must answer."""
    h.progress(f"heartbeat flood: {FLOOD_RATE}/s for {seconds:g} s")
    os.environ["FLOOD_RATE"] = "0"  # inherited by the tree, then the agent: idle at first
    try:
        tree = Tree(RESTART_FREELY, FAST, b.test_agent("heartbeat_flood.py"))
        with tree, tree.data_client() as client:
            before, manager = tree.agent(), tree.process("agent:main")
            [idle] = h.cpu_percent([manager], seconds)
            client.request("request", data={"flood": FLOOD_RATE})
            time.sleep(0.5)
            [flood] = h.cpu_percent([manager], seconds)
            t0 = time.perf_counter_ns()
            answered = client.request("request", data={"during": "flood"}) == {"during": "flood"}
            answer_ms = h.since_ms(t0)
            client.request("request", data={"flood": 0})
            restarted = tree.agent() != before
    finally:
        del os.environ["FLOOD_RATE"]
    what, ok = f"manager CPU, {FLOOD_RATE // 1000}k heartbeats/s", answered and not restarted
    shown, target = f"{flood:.1f} % of a core", "<= 30 %, answers, no restart"
    report.row(what, shown, f"idle agent {idle:.1f} %", target, ok and flood <= 30, idle=idle)
    report.note(f"heartbeat flood: a request during it took {answer_ms:.1f} ms.")


def run(plan: h.Plan, report: h.Report) -> None:
    h.progress("requests, restarts, hangs")
    with (
        Tree(RESTART_FREELY, FAST) as tree,
        h.segment(tree.cfg.o_supervisor.shared_memory_size) as (name, _shm),
    ):
        # The manager's environment on a bench segment. Without OSUP_MANAGER_PID: the
        # relay spawns from a forked child, and a direct agent dies at EOF on its stdin.
        env = launch.agent_env(tree.cfg, name, "bench-direct", 1, "main")
        env.pop("OSUP_MANAGER_PID", None)
        agent = b.Launch(launch.agent_argv(tree.cfg, "main", None), env)
        requests(tree, plan, agent, report)
        hangs(tree, plan.hangs, restarts(tree, plan.restarts, agent, report), report)
        reported = tree.main_status().get("restarts")
    logs = {"tree": log_counts(tree.log), "kills tree": kills(plan, report)}
    report.note(f"logs: {logs}; restarts by status {reported}")
    shared_memory(plan, report)
    heartbeat_flood(report)


if __name__ == "__main__":
    sys.exit(h.main(__doc__, run, PLANS))
