"""Benchmark of the osup_mp runtime: restart latency, call latency/throughput, idle CPU.

Run as ``python tools/bench/runtime.py [--quick] [--json]``. Every figure is a median over
repeated runs, printed next to a baseline measured in the same run on the same machine (so
the ratio, not the absolute number, is what carries from one host to another), and next to
its target with PASS/FAIL. The script reports; it does not gate: the exit status is 0 when
targets are missed and non-zero only when a measurement itself fails.

What is measured, and how:

1. Component restart. A real tree (``run_tree``: supervisor, control socket, pidfile, log
   relay) runs in a forked process with the shipped child specs plus an ``echo`` and a
   ``driver`` component defined here. Repeatedly: read the echo's pid through the control
   socket, SIGKILL it, then send that same call until it answers with a different pid
   (errors such as "not running" mean "retry at once"). Figure: median/p90 of kill->answer.
   Baseline: a bare fork through the same ``multiprocessing`` fork context plus the first
   message on a ``Pipe`` (start -> message received).
2. Call round trip between two components. The driver component times ``n`` blocking
   ``self.peer("echo").call(("echo", i))`` with ``perf_counter_ns`` (median/p90), and a
   pipelined run that keeps 100 ``call_async`` calls in flight on the same peer connection
   and pumps the channel itself (calls/s, median of 5 runs). Baseline: raw
   ``multiprocessing.Pipe`` echo between two forked processes with the same payload shape
   ``("call", i, ("echo", i))`` (server: ``conn.send(conn.recv())``), for both the per-message
   round trip and 100-in-flight throughput over the same totals.
   Both sides are pinned with ``sched_setaffinity``, once to the same CPU and once to two
   different CPUs, and each placement gets its own baseline: left to the scheduler, whether
   the two processes share a CPU decides the round trip (about 20 us vs 60-90 us on a VM),
   so an unpinned figure and its ratio flip from run to run.
3. Idle CPU of the shipped tree (``child_specs`` only, ``prod`` config, default telemetry
   period): after it answers ping and settles 2 s, the user+system CPU time (psutil) of the
   supervisor and all its descendants over a 10 s window, as percent of one core. psutil
   counts in 10 ms clock ticks (0.1 % of a 10 s window), so the on-CPU time from
   ``/proc/<pid>/schedstat`` (nanoseconds) is reported beside it, per process in ``--json``.

Every tree runs in its own temporary directory with its own shared-memory name and is stopped
through the control socket (SIGKILL as a last resort), even on error; ``/dev/shm`` is checked
for leftovers.
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import psutil

# Runnable as ``python tools/bench/runtime.py`` from a checkout without installing; the
# second entry is for the helpers the bench scripts share (``_common.py`` beside this one).
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common
from _common import BenchError, median, p90, verdict

from osup_mp.app.specs import SpecsFactory, child_specs
from osup_mp.client import ClientError
from osup_mp.runtime.component import Caller, Component
from osup_mp.runtime.supervisor import ChildSpec, Restart

_FORK = _common.FORK
SHM = _common.ShmNames("osup_bench_")
WINDOW = 100  # calls in flight for the pipelined figures


@dataclass(frozen=True, slots=True)
class Plan:
    restarts: int
    forks: int
    round_trips: int
    pipelined: int
    pipelined_runs: int
    idle_settle: float
    idle_window: float


FULL = Plan(50, 50, 20000, 100000, 5, 2.0, 10.0)
QUICK = Plan(10, 10, 2000, 10000, 5, 2.0, 3.0)


# ------------------------------------------------------------------ bench components


class BenchEcho(Component):
    """Answers ``("pid",)`` with its pid and ``("echo", x)`` with ``x``."""

    def handle_call(self, request: Any, caller: Caller) -> Any:
        kind = request[0] if isinstance(request, tuple | list) and request else request
        if kind == "echo":
            return request[1]
        if kind == "pid":
            return os.getpid()
        return super().handle_call(request, caller)


class BenchDriver(Component):
    """Drives calls to the ``echo`` peer from inside the tree and times them."""

    def handle_call(self, request: Any, caller: Caller) -> Any:
        kind = request[0] if isinstance(request, tuple | list) and request else request
        if kind == "pid":
            return os.getpid()
        if kind == "bench_rtt":
            return self._round_trips(int(request[1]))
        if kind == "bench_pipelined":
            return self._pipelined(int(request[1]), int(request[2]))
        return super().handle_call(request, caller)

    def _round_trips(self, n: int) -> dict[str, float]:
        echo = self.peer("echo")
        for i in range(min(n, 500)):  # warm-up, includes connecting through the parent
            echo.call(("echo", i))
        clock = time.perf_counter_ns
        samples: list[float] = []
        append = samples.append
        for i in range(n):
            t0 = clock()
            value = echo.call(("echo", i))
            append(clock() - t0)
            if value != i:
                raise RuntimeError(f"echo answered {value!r} to {i}")
        us = [s / 1000 for s in samples]
        return {"median_us": median(us), "p90_us": p90(us), "n": n}

    def _pipelined(self, total: int, window: int) -> dict[str, float]:
        mux = self.peer("echo").mux()
        channel = mux.channel
        sent = done = errors = 0

        def on_reply(ok: bool, _value: Any) -> None:
            nonlocal sent, done, errors
            done += 1
            if not ok:
                errors += 1
            if sent < total:
                mux.call_async(("echo", sent), on_reply)
                sent += 1

        t0 = time.perf_counter()
        while sent < min(window, total):
            mux.call_async(("echo", sent), on_reply)
            sent += 1
        while done < total:
            # Output may not all fit the socket at once: wait for room or for answers.
            flushed = channel.flush()
            fd = channel.fileno()
            poller = select.poll()
            poller.register(fd, select.POLLIN | (0 if flushed else select.POLLOUT))
            events = poller.poll(10_000)
            readable = any(
                ev & (select.POLLIN | select.POLLHUP | select.POLLERR) for _, ev in events
            )
            if not events:
                raise RuntimeError(f"pipelined: no reply for 10 s ({done}/{total} answered)")
            if readable:
                mux.dispatch(channel.receive())
            if channel.closed and done < total:
                raise RuntimeError("pipelined: echo connection closed")
            mux.expire()
        elapsed = time.perf_counter() - t0
        if errors:
            raise RuntimeError(f"pipelined: {errors} calls failed")
        return {"calls_per_s": total / elapsed, "total": total, "window": window}


# ------------------------------------------------------------------ trees


class TreeProc(_common.ForkedTree):
    """A tree run by ``run_tree`` in a forked process, in its own temporary directory."""

    def __init__(self, env: str, overrides: dict[str, dict[str, Any]], *, extra: bool) -> None:
        tmp = Path(tempfile.mkdtemp(prefix="osup_bench_"))
        try:
            shm_name = SHM.new()
            cfg = _common.tree_config(env, tmp, shm_name, overrides)
            specs: SpecsFactory | None = None
            if extra:

                def specs(shm: Any) -> list[ChildSpec]:
                    return [
                        *child_specs(cfg, shm),
                        ChildSpec("echo", BenchEcho, Restart.PERMANENT, shutdown_timeout=2.0),
                        ChildSpec("driver", BenchDriver, Restart.PERMANENT, shutdown_timeout=2.0),
                    ]

            super().__init__(tmp, shm_name, cfg, specs, die_with_bench=False, stop_join=15.0)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def report(self) -> dict[str, Any]:
        return {"env": self.cfg.env, **super().report()}


# ------------------------------------------------------------------ baselines


@dataclass(frozen=True, slots=True)
class Placement:
    """Where the two ends of a call run: the CPU sets of the echo and of the caller."""

    key: str
    label: str
    echo: set[int]
    driver: set[int]


def placements() -> list[Placement]:
    cpus = sorted(os.sched_getaffinity(0))
    out = [Placement("1cpu", "same CPU", {cpus[0]}, {cpus[0]})]
    if len(cpus) >= 2:
        out.append(Placement("2cpu", "two CPUs", {cpus[0]}, {cpus[1]}))
    return out


def _first_message(conn: Connection) -> None:
    conn.send(("ready", os.getpid()))
    conn.close()


def fork_first_message(n: int) -> list[float]:
    """ms from ``Process.start()`` to the child's first message on a Pipe."""
    out: list[float] = []
    for _ in range(n):
        parent, child = _FORK.Pipe()
        t0 = time.perf_counter()
        proc = _FORK.Process(target=_first_message, args=(child,))
        proc.start()
        try:
            if not parent.poll(10.0):
                raise BenchError("forked baseline child sent nothing within 10 s")
            parent.recv()
            out.append((time.perf_counter() - t0) * 1000)
        finally:
            child.close()
            parent.close()
            proc.join(5.0)
            if proc.exitcode is None:
                proc.kill()
                proc.join(5.0)
            proc.close()
    return out


def _raw_echo_server(conn: Connection, inherited: list[Connection], cpus: set[int]) -> None:
    for other in inherited:  # or EOF never reaches this end when the client exits
        other.close()
    os.sched_setaffinity(0, cpus)
    try:
        while True:
            conn.send(conn.recv())
    except (EOFError, OSError):
        pass


def _raw_client(
    conn: Connection,
    results: Connection,
    inherited: list[Connection],
    cpus: set[int],
    plan: tuple[int, int, int],
) -> None:
    for other in inherited:
        other.close()
    os.sched_setaffinity(0, cpus)
    n, total, runs = plan
    clock = time.perf_counter_ns
    for i in range(min(n, 500)):  # warm-up, as in the driver
        conn.send(("call", i, ("echo", i)))
        conn.recv()
    samples: list[float] = []
    for i in range(n):
        t0 = clock()
        conn.send(("call", i, ("echo", i)))
        conn.recv()
        samples.append(clock() - t0)
    us = [s / 1000 for s in samples]
    rates: list[float] = []
    for _ in range(runs):
        t0f = time.perf_counter()
        sent = 0
        while sent < min(WINDOW, total):
            conn.send(("call", sent, ("echo", sent)))
            sent += 1
        for _ in range(total):
            conn.recv()
            if sent < total:
                conn.send(("call", sent, ("echo", sent)))
                sent += 1
        rates.append(total / (time.perf_counter() - t0f))
    results.send({"median_us": median(us), "p90_us": p90(us), "rates": rates})


def raw_pipe(placement: Placement, n: int, total: int, runs: int) -> dict[str, Any]:
    """Round trip and 100-in-flight throughput of a bare Pipe echo between two forks."""
    a, b = _FORK.Pipe()
    res_r, res_w = _FORK.Pipe(duplex=False)
    server = _FORK.Process(target=_raw_echo_server, args=(b, [a, res_r, res_w], placement.echo))
    client = _FORK.Process(
        target=_raw_client, args=(a, res_w, [b, res_r], placement.driver, (n, total, runs))
    )
    procs = [server, client]
    try:
        server.start()
        client.start()
        for end in (a, b, res_w):
            end.close()
        deadline = time.monotonic() + 300.0
        while not res_r.poll(0.5):
            if client.exitcode is not None or time.monotonic() > deadline:
                raise BenchError(f"raw Pipe baseline client failed (exit {client.exitcode})")
        result: dict[str, Any] = res_r.recv()
        return result
    finally:
        res_r.close()
        for proc in procs:
            if proc.pid is None:
                continue
            proc.join(5.0)
            if proc.exitcode is None:
                proc.kill()
                proc.join(5.0)


# ------------------------------------------------------------------ runtime measurements


def pin_components(tree: TreeProc, placement: Placement | None) -> None:
    """Pin echo and driver to ``placement``; None gives them every CPU back."""
    every = os.sched_getaffinity(0)
    for name in ("echo", "driver"):
        pid = int(tree.request("call", name=name, request=["pid"]))
        if placement is None:
            cpus = every
        else:
            cpus = placement.echo if name == "echo" else placement.driver
        os.sched_setaffinity(pid, cpus)


def component_restart(tree: TreeProc, n: int) -> list[float]:
    """ms from SIGKILL of the echo component to its replacement answering a call."""
    out: list[float] = []
    with tree.client(timeout=30.0) as client:

        def echo_pid() -> int:
            return int(client.request("call", name="echo", request=["pid"]))

        for _ in range(n):
            old = echo_pid()
            os.kill(old, signal.SIGKILL)
            t0 = time.perf_counter()
            last_error = ""
            while True:
                # Until the replacement runs, the call fails ("not running", or the call that
                # reached the dead process fails with "echo exited"): retry at once.
                try:
                    pid = echo_pid()
                except ClientError as exc:
                    pid, last_error = old, str(exc)
                if pid != old:
                    break
                if tree.proc.exitcode is not None:
                    raise BenchError(f"the tree exited (status {tree.proc.exitcode}): {last_error}")
                if time.perf_counter() - t0 > 10.0:
                    raise BenchError(f"echo was not restarted within 10 s (last: {last_error})")
            out.append((time.perf_counter() - t0) * 1000)
            tree.remember(pid)
    return out


def driver_call(tree: TreeProc, request: list[Any]) -> dict[str, Any]:
    with tree.client(timeout=130.0) as client:
        result: dict[str, Any] = client.request(
            "call", name="driver", request=request, timeout=120.0
        )
    return result


def _on_cpu_seconds(proc: psutil.Process) -> tuple[float, float]:
    """(user+system from psutil, on-CPU time from /proc/<pid>/schedstat or NaN)."""
    t = proc.cpu_times()
    try:
        with open(f"/proc/{proc.pid}/schedstat") as f:
            sched = int(f.read().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        sched = math.nan
    return t.user + t.system, sched


def idle_cpu(tree: TreeProc, settle: float, window: float) -> dict[str, Any]:
    """Percent of one core used by the supervisor and its descendants over ``window``."""
    names = {c["pid"]: c["name"] for c in tree.request("status")["components"] if c["pid"]}
    names[tree.pid] = "supervisor"
    time.sleep(settle)
    root = psutil.Process(tree.pid)

    def snapshot() -> dict[int, tuple[psutil.Process, float, float]]:
        snap: dict[int, tuple[psutil.Process, float, float]] = {}
        for proc in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                snap[proc.pid] = (proc, *_on_cpu_seconds(proc))
        return snap

    before = snapshot()
    t0 = time.perf_counter()
    time.sleep(window)
    after = snapshot()
    elapsed = time.perf_counter() - t0
    used = sched_used = 0.0
    per_process: dict[str, float] = {}
    for pid, (proc, cpu, sched) in after.items():
        _p, cpu0, sched0 = before.get(pid, (proc, 0.0, 0.0))
        used += cpu - cpu0
        sched_used += sched - sched0
        name = names.get(pid) or _proc_label(proc)
        per_process[f"{name}[{pid}]"] = round(100 * (sched - sched0) / elapsed, 4)
    return {
        "percent": 100 * used / elapsed,
        "schedstat_percent": 100 * sched_used / elapsed,
        "window_s": elapsed,
        "processes": len(after),
        "per_process_schedstat_percent": per_process,
    }


def _proc_label(proc: psutil.Process) -> str:
    """A descendant that is not a component (an agent): its program name."""
    try:
        cmd = proc.cmdline()
        name = str(proc.name())
    except psutil.Error:
        return "?"
    if name.startswith("python") and len(cmd) > 1:
        name = Path(cmd[1]).name
    return name


# ------------------------------------------------------------------ driver


def run(plan: Plan, progress: Callable[[str], None]) -> dict[str, Any]:
    bench_overrides = {"supervisor": {"max_restarts": 100000, "max_seconds": 1}}
    where = placements()

    progress("baseline: fork + first message")
    fork_ms = fork_first_message(plan.forks)
    raw: dict[str, dict[str, Any]] = {}
    for placement in where:
        progress(f"baseline: raw Pipe echo, {placement.label}")
        raw[placement.key] = raw_pipe(
            placement, plan.round_trips, plan.pipelined, plan.pipelined_runs
        )

    progress("tree: calls and restarts")
    rtt: dict[str, dict[str, Any]] = {}
    rates: dict[str, list[float]] = {}
    trees: list[TreeProc] = []
    with _common.running(TreeProc("test", bench_overrides, extra=True)) as tree:
        trees.append(tree)
        for placement in where:
            progress(f"tree: calls, {placement.label}")
            pin_components(tree, placement)
            rtt[placement.key] = driver_call(tree, ["bench_rtt", plan.round_trips])
            rates[placement.key] = [
                float(driver_call(tree, ["bench_pipelined", plan.pipelined, WINDOW])["calls_per_s"])
                for _ in range(plan.pipelined_runs)
            ]
        pin_components(tree, None)
        progress("tree: restarts")
        restart_ms = component_restart(tree, plan.restarts)

    progress("tree: idle CPU (shipped tree, prod config)")
    with _common.running(TreeProc("prod", {}, extra=False)) as tree:
        trees.append(tree)
        idle = idle_cpu(tree, plan.idle_settle, plan.idle_window)
        telemetry_period_ms = tree.cfg.telemetry.period

    figures: dict[str, Any] = {}
    restart_median = median(restart_ms)
    fork_median = median(fork_ms)
    figures["restart"] = {
        "median_ms": restart_median,
        "p90_ms": p90(restart_ms),
        "n": len(restart_ms),
        "baseline_fork_first_message_ms": fork_median,
        "baseline_p90_ms": p90(fork_ms),
        "ratio": restart_median / fork_median,
        "target": "median <= 50 ms",
        "pass": restart_median <= 50.0,
    }
    for placement in where:
        mine, base = rtt[placement.key], raw[placement.key]
        ratio = mine["median_us"] / base["median_us"]
        figures[f"round_trip_{placement.key}"] = {
            "placement": placement.label,
            "median_us": mine["median_us"],
            "p90_us": mine["p90_us"],
            "n": plan.round_trips,
            "baseline_raw_pipe_median_us": base["median_us"],
            "baseline_raw_pipe_p90_us": base["p90_us"],
            "ratio": ratio,
            "target": "ratio <= 1.5x",
            "pass": ratio <= 1.5,
        }
        rate, raw_rate = median(rates[placement.key]), median(base["rates"])
        figures[f"pipelined_{placement.key}"] = {
            "placement": placement.label,
            "calls_per_s": rate,
            "runs_calls_per_s": rates[placement.key],
            "total": plan.pipelined,
            "window": WINDOW,
            "baseline_raw_pipe_per_s": raw_rate,
            "baseline_runs_per_s": base["rates"],
            "ratio": rate / raw_rate,
            "target": "ratio >= 0.5",
            "pass": rate / raw_rate >= 0.5,
        }
    figures["idle_cpu"] = {
        "percent_of_one_core": idle["percent"],
        "schedstat_percent_of_one_core": idle["schedstat_percent"],
        "window_s": idle["window_s"],
        "settle_s": plan.idle_settle,
        "processes": idle["processes"],
        "per_process_schedstat_percent": idle["per_process_schedstat_percent"],
        "telemetry_period_ms": telemetry_period_ms,
        "target": "< 1 %",
        "pass": idle["percent"] < 1.0,
    }
    figures["trees"] = [t.report() for t in trees]
    return figures


def render(figures: dict[str, Any]) -> str:
    r, i = figures["restart"], figures["idle_cpu"]
    rows = [
        (
            "component restart (SIGKILL -> answering)",
            f"median {r['median_ms']:.1f} ms  p90 {r['p90_ms']:.1f} ms",
            f"fork+first message {r['baseline_fork_first_message_ms']:.1f} ms"
            f"  ratio {r['ratio']:.2f}x",
            f"target median <= 50 ms: {verdict(r['pass'])}",
        )
    ]
    for key in ("1cpu", "2cpu"):
        c = figures.get(f"round_trip_{key}")
        if c is None:
            continue
        rows.append(
            (
                f"call round trip ({c['placement']})",
                f"median {c['median_us']:.0f} us  p90 {c['p90_us']:.0f} us",
                f"raw Pipe echo {c['baseline_raw_pipe_median_us']:.0f} us  ratio {c['ratio']:.2f}x",
                f"target <= 1.5x: {verdict(c['pass'])}",
            )
        )
    for key in ("1cpu", "2cpu"):
        p = figures.get(f"pipelined_{key}")
        if p is None:
            continue
        rows.append(
            (
                f"pipelined calls ({p['window']} in flight, {p['placement']})",
                f"{p['calls_per_s']:.0f} calls/s",
                f"raw Pipe {p['baseline_raw_pipe_per_s']:.0f}/s  ratio {p['ratio']:.2f}",
                f"target >= 0.5: {verdict(p['pass'])}",
            )
        )
    rows.append(
        (
            "idle tree CPU",
            f"{i['percent_of_one_core']:.2f} % of one core",
            f"schedstat {i['schedstat_percent_of_one_core']:.3f} %, {i['window_s']:.0f} s,"
            f" {i['processes']} processes, telemetry {i['telemetry_period_ms'] / 1000:g} s",
            f"target < 1 %: {verdict(i['pass'])}",
        )
    )
    return "\n".join(_common.table(rows))


def main(argv: list[str] | None = None) -> int:
    args = _common.parse_args(__doc__, argv)
    started = time.perf_counter()
    figures = _common.measure(run, QUICK if args.quick else FULL, args)
    if figures is None:
        return 2
    figures["meta"] = _common.meta(args, started, sorted(os.sched_getaffinity(0)))
    _common.emit(args, figures, render)
    _common.warn_unclean(figures["trees"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
