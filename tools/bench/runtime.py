"""Benchmark of the runtime: component restarts against a fork's first message, calls
between components against a raw Pipe echo, the CLI's start against a bare interpreter, and
the shipped tree's idle CPU. Calls are measured with both ends pinned, on one CPU and on two,
each against its own raw-Pipe baseline: left to the scheduler, a round trip depends on
whether the two processes share a CPU.
"""

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import _harness as h
import psutil
from _procs import RESTART_FREELY, Tree, in_flight

from osup_mp.app.specs import child_specs
from osup_mp.client import Client, ClientError
from osup_mp.runtime.component import Caller, Component
from osup_mp.runtime.supervisor import ChildSpec, Restart

WINDOW = 100  # calls in flight for the pipelined figures
PLANS = {  # name: (full, quick)
    "restarts": (50, 10), "forks": (50, 10), "round_trips": (20000, 2000),
    "pipelined": (100000, 10000), "pipelined_runs": (5, 5),
    "idle_settle": (2.0, 2.0), "idle_window": (10.0, 3.0), "cli_runs": (20, 5),
}  # fmt: skip


class Bench(Component):
    """Both bench components: ``echo`` answers ``("pid", _)`` and ``("echo", x)``; ``driver``
    times calls to ``echo`` from inside the tree. (A list through the control socket.)"""

    def handle_call(self, request: Any, caller: Caller) -> Any:
        kind, arg = request if isinstance(request, tuple | list) and len(request) == 2 else ("", 0)
        if kind == "echo":
            return arg
        if kind == "round_trips":
            echo = self.peer("echo")
            return round_trips(lambda i: echo.call(("echo", i)), arg)
        if kind == "pipelined":  # calls/s, WINDOW call_async in flight on one connection
            t0, mux = time.perf_counter(), self.peer("echo").mux()
            in_flight(mux, WINDOW, lambda i: ("echo", i), lambda i: i < arg)
            return arg / (time.perf_counter() - t0)
        return os.getpid() if kind == "pid" else super().handle_call(request, caller)


def round_trips(call: Callable[[int], object], n: int) -> list[float]:
    """µs of each of ``n`` calls, after a warm-up (in the tree, it connects to the peer)."""
    clock, out = time.perf_counter_ns, []
    for i in range(-min(n, 500), n):
        t0 = clock()
        if call(i) != i:
            raise RuntimeError(f"echo did not answer {i}")
        if i >= 0:
            out.append((clock() - t0) / 1000)
    return out


def fork_first_message(n: int) -> list[float]:
    """ms from ``Process.start()`` (the fork context) to the child's first Pipe message."""
    out = []
    for _ in range(n):
        parent, child = h.FORK.Pipe()
        t0 = time.perf_counter_ns()
        proc = h.FORK.Process(target=child.send, args=("ready",))
        proc.start()
        if not parent.poll(10.0):
            raise h.BenchError("a forked child sent nothing within 10 s")
        parent.recv()
        out.append(h.since_ms(t0))
        proc.join()
    return out


def _raw_echo(conn: Connection, other: Connection, cpu: int) -> None:
    other.close()  # or EOF never reaches this end when the bench closes its own
    os.sched_setaffinity(0, {cpu})
    with contextlib.suppress(EOFError, OSError):
        while True:
            conn.send(conn.recv())


def raw_pipe(cpus: tuple[int, int], plan: h.Plan) -> tuple[list[float], list[float]]:
    """The driver's figures on a Pipe echo (fork on ``cpus[0]``, bench on ``cpus[1]``)."""
    conn, far = h.FORK.Pipe()
    server = h.FORK.Process(target=_raw_echo, args=(far, conn, cpus[0]))
    server.start()
    far.close()
    try:
        with h.pinned({cpus[1]}):

            def call(i: int) -> object:
                conn.send(("call", i, ("echo", i)))
                return conn.recv()[2][1]

            rtt, rates, total = round_trips(call, plan.round_trips), [], plan.pipelined
            for _ in range(plan.pipelined_runs):
                t0 = time.perf_counter()
                for i in range(total + WINDOW):  # WINDOW in flight: an answer, then a request
                    if i >= WINDOW:
                        conn.recv()
                    if i < total:
                        conn.send(("call", i, ("echo", i)))
                rates.append(total / (time.perf_counter() - t0))
        return rtt, rates
    finally:
        conn.close()
        server.join(5.0)
        server.kill()


def component_restarts(tree: Tree, n: int) -> list[float]:
    """ms from SIGKILL of ``echo`` to its replacement answering a call: the call is sent
    again at once while it fails ("not running", or "echo exited" from the dead one)."""
    out: list[float] = []
    with Client.for_config(tree.cfg, timeout=30.0) as client:
        for _ in range(n):
            old = pid = client.request("call", name="echo", request=["pid", 0])
            os.kill(old, signal.SIGKILL)
            t0, last = time.perf_counter(), ""
            while pid == old:
                try:
                    pid = client.request("call", name="echo", request=["pid", 0])
                except ClientError as exc:
                    last = str(exc)
                if time.perf_counter() - t0 > 10.0 or tree.proc.exitcode is not None:
                    raise h.BenchError(f"echo was not restarted within 10 s (last: {last})")
            out.append((time.perf_counter() - t0) * 1000)
            tree.remember(pid)
    return out


def cli_starts(tree: Tree, n: int) -> tuple[str, dict[str, list[float]]]:
    """ms of ``--help``, ``status`` and a bare interpreter, in turns; and how it is installed."""
    cli = ["-m", "osup_mp", "--env", "test"]
    runs = {"python": ["-c", "pass"], "help": [*cli, "--help"], "status": [*cli, "status"]}

    def wall_ms(args: list[str]) -> float:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, *args], cwd=tree.tmp, capture_output=True, check=True)
        return (time.perf_counter() - t0) * 1000

    where = [sys.executable, "-c", "import osup_mp; print(osup_mp.__file__)"]
    found = subprocess.run(where, cwd=tree.tmp, capture_output=True, text=True).stdout
    how = "installed" if "site-packages" in found else "editable install"
    return how, h.in_turns(n, runs, wall_ms)


def idle_cpu(plan: h.Plan, report: h.Report) -> None:
    """Percent of one core used by all processes of the shipped tree (prod config): psutil's
    user+system counts 10 ms ticks, so /proc/<pid>/schedstat's on-CPU ns are shown beside."""
    with Tree(env="prod", agent=False) as tree:
        time.sleep(plan.idle_settle)
        root, telemetry_s = psutil.Process(tree.pid), tree.cfg.telemetry.period / 1000

        def snapshot() -> dict[int, tuple[float, float]]:
            snap = {}
            for proc in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.Error, OSError):
                    sched = int(Path(f"/proc/{proc.pid}/schedstat").read_text().split()[0])
                    snap[proc.pid] = (h.cpu_seconds(proc), sched / 1e9)
            return snap

        before, t0 = snapshot(), time.perf_counter()
        time.sleep(plan.idle_window)
        after, elapsed = snapshot(), time.perf_counter() - t0
    cpu, sched = (
        100 * sum(now[k] - before.get(pid, (0.0, 0.0))[k] for pid, now in after.items()) / elapsed
        for k in (0, 1)
    )
    base = f"schedstat {sched:.3f} %, {elapsed:.0f} s, {len(after)} processes, telemetry every "
    fig, base = f"{cpu:.2f} % of one core", f"{base}{telemetry_s:g} s"
    report.row("idle tree CPU", fig, base, "< 1 %", cpu < 1.0, schedstat=sched)


def run(plan: h.Plan, report: h.Report) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    placements = {"same CPU": (cpus[0], cpus[0])}
    if len(cpus) > 1:
        placements["two CPUs"] = (cpus[0], cpus[1])
    h.progress("baselines: fork + first message, raw Pipe echo")
    fork_ms = fork_first_message(plan.forks)
    raw = {label: raw_pipe(where, plan) for label, where in placements.items()}
    calls: dict[str, tuple[list[float], list[float]]] = {}
    bench = [ChildSpec(name, Bench, Restart.PERMANENT, 2.0) for name in ("echo", "driver")]
    with Tree(
        RESTART_FREELY, specs=lambda c, shm: [*child_specs(c, shm), *bench], agent=False
    ) as tree:
        for label, (echo_cpu, driver_cpu) in placements.items():
            h.progress(f"tree: calls, {label}")
            os.sched_setaffinity(tree.call("echo", ["pid", 0]), {echo_cpu})
            os.sched_setaffinity(tree.call("driver", ["pid", 0]), {driver_cpu})
            rtt = tree.call("driver", ["round_trips", plan.round_trips], timeout=120.0)
            pipelined = ["pipelined", plan.pipelined]
            rates = [tree.call("driver", pipelined, 120.0) for _ in range(plan.pipelined_runs)]
            calls[label] = (rtt, rates)
        for name in ("echo", "driver"):
            os.sched_setaffinity(tree.call(name, ["pid", 0]), cpus)
        h.progress("tree: restarts")
        restart_ms = component_restarts(tree, plan.restarts)
        h.progress("CLI start-up")
        how, cli = cli_starts(tree, plan.cli_runs)
    what, fork = "component restart (SIGKILL -> answering)", "fork + first message"
    report.compare(what, restart_ms, fork_ms, fork, "median <= 50 ms", "ms")
    for label, (rtt, _) in calls.items():
        what = f"call round trip ({label})"
        report.compare(what, rtt, raw[label][0], "raw Pipe echo", "ratio <= 1.5x", "us")
    for label, (_, rates) in calls.items():
        what = f"pipelined calls ({WINDOW} in flight, {label})"
        report.compare(what, rates, raw[label][1], "raw Pipe", "ratio >= 0.5", "calls/s")
    for name in ("help", "status"):
        what = f"osup-mp {'--help' if name == 'help' else 'status'} ({how})"
        report.compare(what, cli[name], cli["python"], "python -c pass", "median < 150 ms", "ms")
    h.progress("idle CPU of the shipped tree (prod config)")
    idle_cpu(plan, report)


if __name__ == "__main__":
    sys.exit(h.main(__doc__, run, PLANS))
