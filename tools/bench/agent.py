"""Benchmark of the agent layer: requests, restarts, kills, hangs, shared-memory state.

``python tools/bench/agent.py [--quick] [--json]``. Baselines run the agent with the
manager's own launch contract (executable, arguments, ``OSUP_*`` environment, Popen
options), spawned by the bench, and run interleaved with the figures they are compared to,
so both see the same background load.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import itertools
import os
import random
import re
import select
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # runnable from a checkout

import _harness as h
import _relay

from osup_mp.client import Client
from osup_mp.components.agent import launch
from osup_mp.lowlevel.proc import set_parent_death_signal, spawn_piped
from osup_mp.storage.shm.segment import SlotState
from osup_mp.wire import FrameDecoder, pack

WINDOW = 64  # requests in flight for the pipelined figures
REQUEST = {"op": "stats"}
HERE = Path(__file__).resolve().parent
# Hangs are detected within 1.2 s, and every kill restarts at once (never a crash loop).
FAST = {
    "o_supervisor": {"heartbeat_interval": 200, "heartbeat_timeout": 1000},
    "agent": {"startsecs": 0, "max_restarts": 100000},
}
FLOOD_RATE = 325_000  # heartbeat frames/s, the rate the fault review measured
FLOOD_SECONDS = 3.0
BIG, SMALL = (1000, 512), (100, 64)  # float32 matrices published to the segment
STAMP = struct.Struct("<Q")
# fmt: off
PLANS = {  # name: (full, quick)
    "round_trips": (2000, 300), "pipelined": (20000, 3000), "pipelined_runs": (3, 3),
    "restarts": (20, 5), "hangs": (5, 2), "kills": (5, 3), "kill_pause": (3.0, 1.2),
    "reads_copy": (300, 50), "reads_view": (3000, 500), "pipe_transfers": (200, 50),
    "publishes_big": (300, 50), "publishes_small": (3000, 500),
}
# fmt: on


def test_agent(name: str) -> h.Layers:
    """A tree whose main agent is one of the tests' agents (``tests/support/agents``)."""
    script = str(HERE.parents[1] / "tests" / "support" / "agents" / name)
    return {"o_supervisor": {"gerbil_executable": sys.executable, "gerbil_main_script": script}}


class DirectAgent:
    """The agent spawned by the bench on its pipes, spoken to as a data-plane client speaks
    to the manager (``send``, ``receive``, ``request``)."""

    def __init__(self, argv: list[str], env: dict[str, str], max_frame: int) -> None:
        self.proc = spawn_piped(argv, env, stderr=subprocess.DEVNULL)
        self.popen_ns = time.perf_counter_ns()
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.in_fd, self.out_fd = self.proc.stdin.fileno(), self.proc.stdout.fileno()
        self.max_frame, self.ids = max_frame, itertools.count(1)
        self.decoder = FrameDecoder(max_frame=max_frame, require_type=True)
        self.pending: collections.deque[dict[str, Any]] = collections.deque()
        self.poller = select.poll()
        self.poller.register(self.out_fd, select.POLLIN)
        # One reused buffer, as the manager reads: a fresh 256 KiB per read costs ~12 µs.
        self.buf = bytearray(256 * 1024)
        self.view = memoryview(self.buf)

    def __enter__(self) -> DirectAgent:
        return self

    def __exit__(self, *_exc: object) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.communicate()

    def next_message(self, timeout: float = 30.0) -> dict[str, Any]:
        while not self.pending:
            if not self.poller.poll(timeout * 1000):
                raise h.BenchError(f"a direct agent sent nothing within {timeout:g}s")
            size = os.readv(self.out_fd, [self.buf])
            if not size:
                raise h.BenchError(f"a direct agent closed its stdout ({self.proc.poll()})")
            self.pending.extend(self.decoder.feed(self.view[:size]))
        return self.pending.popleft()

    def send(self, _command: str, /, data: Any) -> int:
        req_id = next(self.ids)
        msg = {"type": "process_request", "id": req_id, "data": data}
        view = memoryview(pack(msg, max_frame=self.max_frame))
        while view:
            view = view[os.write(self.in_fd, view) :]
        return req_id

    def receive(self) -> dict[str, Any]:
        """The next response (heartbeats and metrics skipped), shaped as a client's answer."""
        while (msg := self.next_message())["type"] != "response":
            pass
        return {"id": msg["id"], "ok": "error" not in msg, "data": msg.get("data")}

    def request(self, command: str, /, data: Any) -> Any:
        req_id = self.send(command, data)
        if (reply := self.receive())["id"] != req_id or not reply["ok"]:
            raise h.BenchError(f"a direct agent answered {reply} to request {req_id}")
        return reply["data"]


def spawn_to_first_frame(argv: list[str], env: dict[str, str], max_frame: int) -> list[float]:
    """ms from Popen to its return, and to the agent's first frame decoded (``ready``)."""
    t0 = time.perf_counter_ns()
    with DirectAgent(argv, env, max_frame) as agent:
        if agent.next_message()["type"] != "ready":
            raise h.BenchError("a direct agent's first frame is not ready")
        return [h.since_ms(t0, agent.popen_ns), h.since_ms(t0)]


def round_trips(end: Client | DirectAgent, n: int) -> list[float]:
    return h.timed_us(lambda: end.request("request", data=REQUEST), n)


def pipelined(end: Client | DirectAgent, total: int) -> float:
    """Requests/s with ``WINDOW`` in flight: then one answer received, one request sent."""
    t0, sent = time.perf_counter(), min(WINDOW, total)
    for _ in range(sent):
        end.send("request", data=REQUEST)
    for _ in range(total):
        if not end.receive().get("ok"):
            raise h.BenchError("a pipelined request failed")
        if sent < total:
            end.send("request", data=REQUEST)
            sent += 1
    return total / (time.perf_counter() - t0)


def requests(
    tree: h.Tree, plan: h.Plan, argv: list[str], env: dict[str, str], progress: h.Progress
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Round trips (µs) and pipelined rates through the manager, the bare relay and the
    agent's own pipes, taken in turns."""
    max_frame, busy_poll_us = tree.cfg.agent.max_frame, tree.cfg.supervisor.busy_poll_us
    with (
        DirectAgent(argv, env, max_frame) as direct,
        tree.data_client() as manager,
        _relay.running(tree.tmp / "relay.sock", argv, env, max_frame, busy_poll_us) as path,
        Client(path, timeout=30.0, max_frame=max_frame) as relay,
    ):
        while direct.next_message()["type"] != "ready":
            pass
        ends: dict[str, Client | DirectAgent] = {"direct": direct, "manager": manager}
        ends["relay"] = relay
        rtt: dict[str, list[float]] = {name: [] for name in ends}
        rates: dict[str, list[float]] = {name: [] for name in ends}
        for end in ends.values():
            round_trips(end, 200)  # warm-up
        progress(f"round trips: {plan.round_trips} each way, in turns of 100")
        for done in range(0, plan.round_trips, 100):
            for name, end in ends.items():
                rtt[name] += round_trips(end, min(100, plan.round_trips - done))
        progress(f"pipelined: {plan.pipelined_runs} x {plan.pipelined} each way")
        for _ in range(plan.pipelined_runs):
            for name, end in ends.items():
                rates[name].append(pipelined(end, plan.pipelined))
    return rtt, rates


def restarts(
    tree: h.Tree, n: int, argv: list[str], env: dict[str, str], progress: h.Progress
) -> dict[str, list[float]]:
    """ms from SIGKILL to the new generation in the slot and to RUNNING; each followed by a
    baseline spawn (Popen, then first frame)."""
    progress(f"restarts: {n} x (SIGKILL -> RUNNING, spawn -> first frame)")
    max_frame = tree.cfg.agent.max_frame
    spawn_to_first_frame(argv, env, max_frame)  # warm-up (page cache)
    out: dict[str, list[float]] = {"restart": [], "respawn": [], "popen": [], "spawn": []}
    for _ in range(n):
        t0, generation = tree.kill_agent()
        spawned, running = tree.wait_running(generation)
        out["restart"].append(h.since_ms(t0, running))
        out["respawn"].append(h.since_ms(t0, spawned))
        time.sleep(max(tree.cfg.agent.startsecs, 0.05))  # up past startsecs: restarts at once
        popen, first = spawn_to_first_frame(argv, env, max_frame)
        out["popen"].append(popen)
        out["spawn"].append(first)
    return out


class OtpSupervisor:
    """``_otp_supervisor.escript``: an Erlang/OTP ``one_for_one`` supervisor owning the agent
    through a ``{packet, 4}`` port; it prints ``ready OSPID`` at each agent's first frame."""

    def __init__(self, escript: str, argv: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [escript, str(HERE / "_otp_supervisor.escript"), *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        assert self.proc.stdout is not None
        self.stdout = self.proc.stdout

    def next_ready(self, timeout: float = 30.0) -> tuple[int, int]:
        """(agent os pid, perf_counter_ns) of the next ``ready`` line."""
        poller = select.poll()
        poller.register(self.stdout, select.POLLIN)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and poller.poll(timeout * 1000):
            line = self.stdout.readline()
            if not line:
                raise h.BenchError(f"the OTP supervisor exited ({self.proc.poll()})")
            if line.startswith(b"ready "):
                return int(line.split()[1]), time.perf_counter_ns()
        raise h.BenchError(f"the OTP supervisor reported no ready agent in {timeout:g}s")

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()  # it halts at EOF; the port closes; the agent exits
        try:
            self.proc.wait(10.0)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.stdout.close()


def kills(plan: h.Plan, progress: h.Progress) -> tuple[dict[str, list[float]], str]:
    """The minimal agent under a tree with the shipped restart policy, under an OTP
    supervisor (when ``escript`` is installed) and spawned bare, killed ``plan.kills``
    times ``plan.kill_pause`` s apart, as an operator kills: SIGKILL -> ready."""
    out: dict[str, list[float]] = {"tree": [], "otp": [], "spawn": []}
    escript = shutil.which("escript")
    progress(f"kills: {plan.kills} x {plan.kill_pause:g} s apart, minimal agent")
    shipped = {"agent": {"startsecs": 1.0, "max_restarts": 5}}
    with h.Tree(h.RESTART_FREELY, FAST, shipped, test_agent("minimal_agent.py")) as tree:
        tree.wait_running(None)
        argv = launch.agent_argv(tree.cfg, "main", None)
        env = dict(os.environ, OSUP_HEARTBEAT_INTERVAL_MS="200")
        max_frame = tree.cfg.agent.max_frame
        otp = OtpSupervisor(escript, argv, env) if escript else None
        try:
            otp_pid = otp.next_ready()[0] if otp else 0
            spawn_to_first_frame(argv, env, max_frame)  # warm-up
            for _ in range(plan.kills):
                time.sleep(plan.kill_pause)  # up past startsecs: restarted at once
                t0, generation = tree.kill_agent()
                out["tree"].append(h.since_ms(t0, tree.wait_running(generation)[1]))
                if otp is not None:
                    t0 = time.perf_counter_ns()
                    os.kill(otp_pid, signal.SIGKILL)
                    otp_pid, seen = otp.next_ready()
                    out["otp"].append(h.since_ms(t0, seen))
                out["spawn"].append(spawn_to_first_frame(argv, env, max_frame)[1])
        finally:
            if otp is not None:
                otp.close()
    return out, tree.log


def hangs(tree: h.Tree, n: int, progress: h.Progress) -> list[dict[str, float]]:
    """SIGSTOP the agent at a random point of its heartbeat cycle; a pidfd on it tells when
    the manager's SIGKILL landed (more precise than the slot's pid, which the manager
    clears and refills in one step), the slot when the replacement is RUNNING."""
    progress(f"hangs: {n} x SIGSTOP agent -> killed -> replacement RUNNING")
    slot, interval = tree.slot(), tree.cfg.o_supervisor.heartbeat_interval / 1000
    phase, runs = random.Random(1), []
    for _ in range(n):
        # Right after a beat is the worst case for the stop -> killed time.
        time.sleep(0.3 + phase.uniform(0.0, interval))
        pid, generation = tree.agent()
        pidfd = os.pidfd_open(pid)
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        t_stop = time.monotonic_ns()
        signal.pidfd_send_signal(pidfd, signal.SIGSTOP)
        try:
            time.sleep(0.02)  # frames already in the pipe get stamped; then beats are final
            last_beat = max(int(slot["hb_agent_ns"]), int(slot["hb_frame_ns"]))
            t_dead = t_ready = 0
            while not t_ready:
                if not t_dead and poller.poll(0):
                    t_dead = time.monotonic_ns()
                state = int(slot["state"])
                if t_dead and state == SlotState.RUNNING and int(slot["generation"]) != generation:
                    t_ready = time.monotonic_ns()
                if state == SlotState.FATAL or time.monotonic_ns() - t_stop > 30e9:
                    raise h.BenchError("a hung agent was not replaced within 30 s")
                time.sleep(h.POLL)
        finally:
            if not poller.poll(0):  # still there (the bench failed): do not leave it
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            os.close(pidfd)
        tree.remember(int(slot["pid"]))
        runs.append(
            {
                "detected_ms": (t_dead - t_stop) / 1e6,
                "replaced_ms": (t_ready - t_stop) / 1e6,
                "beat_age_at_stop_ms": (t_stop - last_beat) / 1e6 if last_beat else -1,
            }
        )
    return runs


def _pipe_writer(go_r: int, data_w: int, payload: bytes, cpu: int | None) -> None:
    """In the forked writer: per byte on ``go_r``, stamp the clock and send the payload."""
    set_parent_death_signal(signal.SIGKILL)
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    while os.read(go_r, 1):
        for part in (STAMP.pack(time.monotonic_ns()), payload):
            view = memoryview(part)
            while view:
                view = view[os.write(data_w, view) :]


def pipe_transfers(payload: bytes, n: int, cpu: int | None = None) -> list[float]:
    """µs to move ``payload`` through an os.pipe (default size, as on the agent's stdio)
    from a forked writer, its first byte written -> the last byte read into a buffer; with
    ``cpu``, writer and reader are both pinned to it."""
    saved = os.sched_getaffinity(0)
    go_r, go_w = os.pipe()
    data_r, data_w = os.pipe()
    writer = h.FORK.Process(target=_pipe_writer, args=(go_r, data_w, payload, cpu))
    writer.start()
    os.close(go_r)
    os.close(data_w)
    try:
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})
        buf = bytearray(STAMP.size + len(payload))
        view, out = memoryview(buf), []
        for _ in range(n + 5):  # the first 5 are warm-up
            os.write(go_w, b"g")
            got = 0
            while got < len(buf):
                k = os.readv(data_r, [view[got:]])
                if not k:
                    raise h.BenchError("the pipe writer exited early")
                got += k
            out.append((time.monotonic_ns() - STAMP.unpack_from(buf)[0]) / 1000)
        if bytes(view[STAMP.size :]) != payload:
            raise h.BenchError("a pipe transfer corrupted the payload")
        return out[5:]
    finally:
        os.sched_setaffinity(0, saved)
        os.close(go_w)  # EOF: the writer leaves its loop
        os.close(data_r)
        writer.join(5.0)
        writer.kill()


def shared_memory(plan: h.Plan, progress: h.Progress) -> dict[Any, Any]:
    """Reads of a published 1000x512 float32 matrix against the same bytes through a pipe
    (also with both ends on one CPU, a pipe's best case on a small VM where cross-CPU
    wake-ups are dear); publish rates with and without the CRC."""
    rng = np.random.default_rng(7)
    big = rng.standard_normal(BIG, dtype=np.float32)
    small = rng.standard_normal(SMALL, dtype=np.float32)
    out: dict[Any, Any] = {"bytes": big.nbytes}
    with h.segment(8 * 1024 * 1024) as (_name, shm):
        shm.publish(big)
        check = shm.read(copy=True, verify=True)
        if not check.crc_ok or not np.array_equal(check.matrix, big):
            raise h.BenchError("a shared-memory read does not match the published matrix")
        progress(f"shm reads: {plan.reads_copy} x copy=True, {plan.reads_view} x copy=False")
        h.timed_us(lambda: shm.read(copy=True), 10)
        out["copy"] = h.timed_us(lambda: shm.read(copy=True), plan.reads_copy)
        out["view"] = h.timed_us(lambda: shm.read(copy=False), plan.reads_view)
        progress(f"pipe: {plan.pipe_transfers} transfers of {big.nbytes} bytes, then pinned")
        out["pipe"] = pipe_transfers(big.tobytes(), plan.pipe_transfers)
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) > 1:
            out["pipe_one_cpu"] = pipe_transfers(big.tobytes(), plan.pipe_transfers, cpus[0])
        progress("publish rates")
        for matrix, count in ((big, plan.publishes_big), (small, plan.publishes_small)):
            for crc in (True, False):
                shm.publish(matrix, checksum=crc)  # warm-up
                t0 = time.perf_counter()
                h.timed_us(functools.partial(shm.publish, matrix, checksum=crc), count)
                out[matrix.shape[0], crc] = count / (time.perf_counter() - t0)
    return out


def heartbeat_flood(progress: h.Progress) -> dict[str, Any]:
    """The manager's CPU (user + system) with the tests' flooding agent idle, then sending
    ``FLOOD_RATE`` heartbeats/s; it must not restart the agent and must answer meanwhile."""
    progress(f"heartbeat flood: {FLOOD_RATE}/s for {FLOOD_SECONDS:g} s")
    os.environ["FLOOD_RATE"] = "0"  # inherited by the tree, then the agent: idle at first
    try:
        tree = h.Tree(h.RESTART_FREELY, FAST, test_agent("heartbeat_flood.py"))
        with tree, tree.data_client() as client:
            tree.wait_running(None)
            before = tree.agent()
            manager = psutil.Process(tree.pids()["agent:main"])

            def cpu_percent() -> float:
                used = h.cpu_seconds(manager)
                time.sleep(FLOOD_SECONDS)
                return (h.cpu_seconds(manager) - used) / FLOOD_SECONDS * 100

            idle = cpu_percent()
            client.request("request", data={"flood": FLOOD_RATE})
            time.sleep(0.5)
            flood = cpu_percent()
            t0 = time.perf_counter_ns()
            answered = client.request("request", data={"during": "flood"}) == {"during": "flood"}
            request_ms = h.since_ms(t0)
            client.request("request", data={"flood": 0})
            restarted = tree.agent() != before
    finally:
        del os.environ["FLOOD_RATE"]
    return dict(
        idle=idle, flood=flood, answered=answered, request_ms=request_ms, restarted=restarted
    )


def run(plan: h.Plan, report: h.Report, progress: h.Progress) -> None:
    flood = heartbeat_flood(progress)
    killed, killed_log = kills(plan, progress)
    progress("starting the tree")
    with (
        h.Tree(h.RESTART_FREELY, FAST) as tree,
        h.segment(tree.cfg.o_supervisor.shared_memory_size) as (name, _shm),
    ):
        tree.wait_running(None)
        argv = launch.agent_argv(tree.cfg, "main", None)
        # The manager's environment on a bench segment. Without OSUP_MANAGER_PID: the
        # relay spawns from a forked child, and a direct agent dies at EOF on its stdin.
        env = launch.agent_env(tree.cfg, name, "bench-direct", 1)
        env.pop("OSUP_MANAGER_PID", None)
        rtt, rates = requests(tree, plan, argv, env, progress)
        rst = restarts(tree, plan.restarts, argv, env, progress)
        hung = hangs(tree, plan.hangs, progress)
        reported = (tree.status().get("agents") or [{}])[0].get("restarts")
    progress("shared-memory state")
    shm = shared_memory(plan, progress)
    o, med = tree.cfg.o_supervisor, h.median
    budget = o.heartbeat_timeout + o.heartbeat_interval

    what, via = "request round trip (1 in flight)", "bare relay"
    report.compare(what, rtt["manager"], rtt["relay"], via, "ratio <= 1.2x", "us", ".0f")
    what = f"pipelined requests ({WINDOW} in flight)"
    report.compare(what, rates["manager"], rates["relay"], via, "ratio >= 0.833", "req/s", ".0f")
    ratios = med(rtt["manager"]) / med(rtt["direct"]), med(rates["manager"]) / med(rates["direct"])
    report.row(
        "  reference: the agent on its own pipes",
        f"{med(rtt['direct']):.0f} us;  {med(rates['direct']):.0f} req/s",
        "manager ratios {:.2f};  {:.2f}".format(*ratios),
    )
    what, first = "agent restart (SIGKILL -> RUNNING)", "spawn -> first frame"
    report.compare(what, rst["restart"], rst["spawn"], first, "ratio <= 1.5x", "ms")
    what = f"kills {plan.kill_pause:g} s apart, minimal agent (SIGKILL -> ready)"
    report.compare(what, killed["tree"], killed["spawn"], "bare spawn", "ratio <= 1.2x", "ms")
    if killed["otp"]:
        report.compare(
            "  the same kills", killed["tree"], killed["otp"], "Erlang/OTP", "ratio <= 1.5x", "ms"
        )
    else:
        report.row("  the same kills", "", "Erlang/OTP: skipped, no escript here", "ratio <= 1.5x")
    startup = med(rst["restart"])  # a replacement's budget adds the agent's start-up
    for what, key, limit, base in (
        ("hang detected (SIGSTOP -> killed)", "detected_ms", budget, "timeout + interval"),
        (
            "hang replaced (SIGSTOP -> RUNNING)",
            "replaced_ms",
            budget + startup,
            f"{budget} ms + median restart",
        ),
    ):
        runs = [r[key] for r in hung]
        shown = f"max {max(runs):.0f} ms  (runs {', '.join(f'{x:.0f}' for x in runs)})"
        report.row(
            what,
            shown,
            f"{base} {limit:.0f} ms",
            f"every run <= {limit:.0f} ms",
            max(runs) <= limit,
        )
    pipe = med(shm["pipe"])
    for what, key in (("copy=False", "view"), ("copy=True", "copy")):
        speedup, target = pipe / med(shm[key]), ">= 10x faster" + " (reported)" * (key == "copy")
        what = f"shm state read {shm['bytes'] / 1e6:.1f} MB {what}"
        report.row(
            what,
            h.spread(shm[key], "us"),
            f"pipe {pipe:.0f} us  {speedup:.1f}x faster",
            target,
            speedup >= 10,
        )
    for rows, cols in (BIG, SMALL):
        what = f"publish {rows}x{cols} ({rows * cols * 4 / 1e3:g} kB)"
        report.row(
            what, f"{shm[rows, True]:.0f}/s with CRC", f"{shm[rows, False]:.0f}/s without CRC"
        )
    ok = flood["flood"] <= 30 and flood["answered"] and not flood["restarted"]
    what, idle = (
        f"manager CPU, {FLOOD_RATE / 1000:.0f}k heartbeats/s",
        f"idle agent {flood['idle']:.1f} %",
    )
    report.row(
        what, f"{flood['flood']:.1f} % of a core", idle, "<= 30 %, answers, no restart", ok, **flood
    )
    logs = {"tree": log_counts(tree.log), "kills tree": log_counts(killed_log)}
    beats = ", ".join(f"{r['beat_age_at_stop_ms']:.0f}" for r in hung)
    alone = max(r["replaced_ms"] for r in hung) <= budget
    gaps = [
        med([a - b for a, b in zip(rst[x], rst[y], strict=True)])
        for x, y in (("restart", "respawn"), ("spawn", "popen"))
    ]
    report.note(
        f"heartbeat flood: a request during it took {flood['request_ms']:.1f} ms.\n"
        f"hang: 'killed' is when the manager's SIGKILL landed (a pidfd on the stopped agent). "
        f"Heartbeat age at SIGSTOP {beats} ms; replaced within {budget} ms alone: {alone}.\n"
        f"restart (medians): SIGKILL -> new generation in the slot (the manager reaps, Popen "
        f"returns) {med(rst['respawn']):.1f} ms, -> RUNNING {gaps[0]:.1f} ms; baseline Popen "
        f"{med(rst['popen']):.1f} ms, -> first frame {gaps[1]:.1f} ms. Status counts "
        f"{reported} restarts; the logs count {logs}.",
        "detail",
        hangs=hung,
        restarts=rst,
        logs=logs,
    )
    if "pipe_one_cpu" in shm:
        one = med(shm["pipe_one_cpu"])
        report.note(
            f"shm: copy=False maps the bytes without touching them. A pipe with both ends on one "
            f"CPU (its best case here) takes {one:.0f} us: copy=False {one / med(shm['view']):.0f}x"
            f" and copy=True {one / med(shm['copy']):.1f}x faster.",
            "pipe_one_cpu",
            us=shm["pipe_one_cpu"],
        )


def log_counts(log: str) -> dict[str, int]:
    return {
        "backoff": len(re.findall(r"agent \S+: restart \d+ in ", log)),
        "fatal": log.count("FATAL"),
        "heartbeat_kills": len(re.findall(r"heartbeat timeout.*restarting", log)),
    }


if __name__ == "__main__":
    sys.exit(h.main(__doc__, run, PLANS))
