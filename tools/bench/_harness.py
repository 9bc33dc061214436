"""The harness of the benchmarks in ``tools/bench``: sampling, trees in forked processes,
bench-owned directories and segments, quick and full plans, the command line, and the one
table that prints each figure beside its same-run baseline and its target.

A figure is only shown next to a baseline measured in the same run on the same machine:
the ratio is what carries from one host to another. Benchmarks report, they do not gate:
missed targets exit 0, a measurement that could not be taken exits 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import operator
import os
import select
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psutil
from rich.console import Console
from rich.table import Table
from rich.text import Text

from osup_mp.app.tree import run_tree
from osup_mp.client import Client, ClientError
from osup_mp.config import Config, load_config
from osup_mp.lowlevel.proc import set_parent_death_signal
from osup_mp.runtime.calls import CallMux
from osup_mp.runtime.supervisor import ChildSpec
from osup_mp.storage.shm.segment import MAIN_SLOT, SharedState, ShmError, SlotState

FORK = multiprocessing.get_context("fork")
POLL = 0.0005  # s between polls of a shared-memory slot
# Kills in a benchmark restart at once, never into a crash-loop verdict.
RESTART_FREELY = {"supervisor": {"max_restarts": 100000, "max_seconds": 1}}
Progress = Callable[[str], None]
Plan = SimpleNamespace  # a benchmark's counts and durations, full or quick
Plans = dict[str, tuple[Any, Any]]  # name: (full, quick)
Layers = dict[str, dict[str, Any]]
Specs = Callable[[Config, SharedState], list[ChildSpec]]
_SEGMENTS: list[str] = []  # every segment name this run made: none may be left
_TREES: list[Tree] = []


class BenchError(RuntimeError):
    """A measurement could not be taken."""


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def p90(values: Sequence[float]) -> float:
    if len(values) < 2:
        return float(values[0])
    return float(statistics.quantiles(values, n=10, method="inclusive")[-1])


def spread(values: Sequence[float], unit: str, fmt: str = ".1f") -> str:
    return f"median {median(values):{fmt}} {unit}  p90 {p90(values):{fmt}} {unit}"


def timed_us(fn: Callable[[], object], n: int) -> list[float]:
    """µs of each of ``n`` calls of ``fn``."""
    clock, out = time.perf_counter_ns, []
    for _ in range(n):
        t0 = clock()
        fn()
        out.append((clock() - t0) / 1000)
    return out


def since_ms(t0_ns: int, t1_ns: int = 0) -> float:
    return ((t1_ns or time.perf_counter_ns()) - t0_ns) / 1e6


def cpu_seconds(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


def in_flight(
    mux: CallMux, window: int, request: Callable[[int], Any], more: Callable[[int], bool]
) -> list[tuple[bool, Any]]:
    """Inside a component: keep ``window`` calls ``request(i)`` in flight to ``mux``'s peer
    while ``more(i)``, each answer releasing the next; the answers, in order received."""
    answers: list[tuple[bool, Any]] = []
    sent = 0

    def issue() -> None:
        nonlocal sent
        mux.call_async(request(sent), answered, timeout=30.0)
        sent += 1

    def answered(ok: bool, value: Any) -> None:
        answers.append((ok, value))
        if more(sent):
            issue()

    while sent < window and more(sent):
        issue()
    channel, poller = mux.channel, select.poll()
    while len(answers) < sent:
        # Wait for answers or, while the output does not all fit the socket, for room.
        flushed = channel.flush()
        poller.register(channel.fileno(), select.POLLIN | (0 if flushed else select.POLLOUT))
        events = poller.poll(10_000)
        if any(ev & (select.POLLIN | select.POLLHUP | select.POLLERR) for _, ev in events):
            mux.dispatch(channel.receive())
        if not events or (channel.closed and len(answers) < sent):
            raise RuntimeError(f"{len(answers)} of {sent} calls answered; then nothing")
        mux.expire()
    return answers


def new_segment_name() -> str:
    _SEGMENTS.append(f"/osup_bench_{uuid.uuid4().hex[:12]}")
    return _SEGMENTS[-1]


def unlink_segment(name: str) -> bool:
    """Remove a segment; True when it was still there."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(f"/dev/shm/{name.lstrip('/')}")
        return True
    return False


@contextlib.contextmanager
def segment(size: int) -> Iterator[tuple[str, SharedState]]:
    """A bench-owned segment: (name, mapping)."""
    name = new_segment_name()
    shm, _note = SharedState.create(name, size)
    try:
        yield name, shm
    finally:
        shm.close()
        unlink_segment(name)


def _tree_main(cfg: Config, specs: Specs | None) -> None:
    set_parent_death_signal(signal.SIGTERM)  # never outlive the bench
    factory = None if specs is None else (lambda shm: specs(cfg, shm))
    sys.exit(run_tree(cfg, stderr_log=False, specs=factory))


class Tree:
    """``run_tree`` in a forked process with its own directory and segment, ``env``'s
    config with ``layers`` merged over it section by section. As a context manager it is
    up (status says running, segment mapped) inside the block. ``stop`` asks the control
    socket, then SIGTERMs, then SIGKILLs, kills what outlived the supervisor, keeps the log
    and removes the directory and the segment; ``unclean`` says what it had to do."""

    def __init__(self, *layers: Layers, specs: Specs | None = None, env: str = "test") -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="osup_bench_"))
        self.shm_name = new_segment_name()
        merged: Layers = {"o_supervisor": {"shared_memory_name": self.shm_name}}
        for layer in layers:
            for section, values in layer.items():
                merged.setdefault(section, {}).update(values)
        self.cfg = load_config(None, env, cwd=self.tmp, overrides=merged)
        self.proc = FORK.Process(target=_tree_main, args=(self.cfg, specs), name="osup-bench")
        self.shm: SharedState | None = None
        self.seen: dict[int, psutil.Process] = {}
        self.started_ns = self.pid = 0
        self.log, self.unclean, self.stopped = "", list[str](), False
        _TREES.append(self)

    def __enter__(self) -> Tree:
        self.start()
        self.until(lambda: self.attach() and self.status()["state"] == "running", 60.0, "up")
        self.remember()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Fork the tree; ``started_ns`` is the perf_counter_ns just before."""
        self.started_ns = time.perf_counter_ns()
        self.proc.start()
        self.pid = self.proc.pid or 0

    def until(self, cond: Callable[[], object], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            if self.proc.exitcode is not None:
                raise BenchError(f"the tree exited ({self.proc.exitcode}); log {self.cfg.log_file}")
            if time.monotonic() > deadline:
                raise BenchError(f"the tree was not {what} within {timeout:g}s")
            time.sleep(POLL)

    def request(self, command: str, /, wait: float = 10.0, **args: Any) -> Any:
        """``command`` on the control socket, its answer waited for ``wait`` s."""
        with Client.for_config(self.cfg, timeout=wait) as client:
            return client.request(command, **args)

    def status(self) -> dict[str, Any]:
        with contextlib.suppress(ClientError):
            return dict(self.request("status"))
        return {"state": "unreachable"}

    def pids(self) -> dict[str, int]:
        return {c["name"]: c["pid"] for c in self.status()["components"] if c["pid"]}

    def call(self, name: str, request: list[Any], timeout: float = 10.0) -> Any:
        """``request`` to component ``name`` through the control socket."""
        return self.request("call", wait=timeout + 5.0, name=name, request=request, timeout=timeout)

    def data_client(self, timeout: float = 30.0) -> Client:
        return Client(
            self.cfg.data_socket("main"), timeout=timeout, max_frame=self.cfg.agent.max_frame
        )

    def attach(self) -> bool:
        """Map the segment read-only the moment it exists (a mapping outlives an unlink by
        anything else on the host, another run's leak sweep say); True once mapped."""
        if self.shm is None:
            with contextlib.suppress(ShmError):
                self.shm = SharedState.attach(self.shm_name, writable=False)
        return self.shm is not None

    def slot(self) -> Any:
        assert self.shm is not None
        return self.shm.slot(MAIN_SLOT)

    def agent(self) -> tuple[int, int]:
        """(pid, generation) of the main agent."""
        return int(self.slot()["pid"]), int(self.slot()["generation"])

    def kill_agent(self) -> tuple[int, int]:
        """SIGKILL the main agent: (perf_counter_ns just before, its generation)."""
        pid, generation = self.agent()
        if pid <= 0:  # os.kill(0) would signal the bench's own process group
            raise BenchError("the main agent's slot has no pid")
        t0 = time.perf_counter_ns()
        os.kill(pid, signal.SIGKILL)
        return t0, generation

    def wait_running(self, old_generation: int | None, timeout: float = 120.0) -> tuple[int, int]:
        """Poll the main agent's slot until RUNNING in a generation other than
        ``old_generation``; the perf_counter_ns at which the new generation (written right
        after the manager's Popen) and RUNNING (its ready frame) were first seen."""
        spawned = running = 0

        def seen() -> bool:
            nonlocal spawned, running
            if not self.attach():
                return False
            state, generation = int(self.slot()["state"]), int(self.slot()["generation"])
            if state == SlotState.FATAL:
                raise BenchError(f"the manager made the agent FATAL; log {self.cfg.log_file}")
            if generation not in (old_generation, 0):
                spawned = spawned or time.perf_counter_ns()
                running = time.perf_counter_ns() if state == SlotState.RUNNING else 0
            return bool(running)

        self.until(seen, timeout, "running a new agent")
        self.remember(self.agent()[0])
        return spawned, running

    def remember(self, pid: int = 0) -> None:
        """Note ``pid`` (default: every descendant) to kill it if it outlives the tree."""
        with contextlib.suppress(psutil.Error):
            procs = [psutil.Process(pid)] if pid else psutil.Process(self.pid).children(True)
            for proc in procs:
                self.seen.setdefault(proc.pid, proc)

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        try:
            if self.shm is not None:
                self.shm.close()
            if self.proc.pid is not None and self.proc.exitcode is None:
                self.remember()
                for proc in self.seen.values():  # a SIGSTOPped agent would delay the stop
                    with contextlib.suppress(psutil.Error):
                        proc.resume()
                with contextlib.suppress(ClientError):
                    self.request("stop", wait=5.0)
                for sig, wait in ((0, 30.0), (signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
                    if sig and self.proc.exitcode is None:
                        self.unclean.append(f"needed {signal.Signals(sig).name}")
                        os.kill(self.pid, sig)
                    self.proc.join(wait)
                if self.proc.exitcode:
                    self.unclean.append(f"exit status {self.proc.exitcode}")
            for proc in self.seen.values():  # is_running() also checks the create time
                with contextlib.suppress(psutil.Error):
                    if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                        self.unclean.append(f"left pid {proc.pid}")
                        proc.kill()
            with contextlib.suppress(OSError):
                self.log = self.cfg.log_file.read_text(errors="replace")
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)
            if unlink_segment(self.shm_name):
                self.unclean.append("left its segment")


_OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


class Report:
    """Rows of (figure, same-run baseline, target, verdict), notes under the table, and for
    ``--json`` the numbers behind each row."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str, bool | None]] = []
        self.notes: list[str] = []
        self.data: dict[str, Any] = {"meta": {}, "notes": self.notes}

    def row(
        self, what: str, fig: str, base: str, target: str = "", ok: bool | None = None, **data: Any
    ) -> None:
        """``ok`` None: reported, without a target. ``what`` is also the key in ``--json``."""
        self.rows.append((what, fig, base, target or "(reported)", ok))
        self.data[what] = {"target": target or None, "pass": ok, **data}

    def compare(
        self, what: str, xs: list[float], base: list[float], label: str, target: str, unit: str
    ) -> float:
        """A row of samples ``xs`` in ``unit`` against the same run's ``base``; their ratio.
        ``target`` reads "ratio|median OP LIMIT ...": the text shown is the rule applied
        (none: reported only). Rates (a unit in "/s") show their median, times their p90 too."""
        mx, mb = median(xs), median(base)
        ratio, ok, fmt = mx / mb, None, ".0f" if min(mx, mb) >= 100 else ".1f"
        if target:
            subject, op, limit = target.split()[:3]
            ok = _OPS[op](ratio if subject == "ratio" else mx, float(limit.strip("x")))
        fig = f"{mx:{fmt}} {unit}" if unit.endswith("/s") else spread(xs, unit, fmt)
        shown = f"{label} {mb:{fmt}} {unit}  ratio {ratio:.2f}"
        data = {"unit": unit, "median": mx, "p90": p90(xs), "n": len(xs), "ratio": ratio}
        data.update(baseline_median=mb, baseline_p90=p90(base))
        if len(xs) <= 100:
            data.update(runs=xs, baseline_runs=base)
        self.row(what, fig, shown, target, ok, **data)
        return ratio

    def note(self, text: str) -> None:
        self.notes.append(text)

    def print(self) -> None:
        console = Console(width=None if sys.stdout.isatty() else 240, highlight=False)
        table = Table(box=None, pad_edge=False, header_style="bold")
        for header in ("figure", "this run", "baseline (same run)", "target", ""):
            table.add_column(header)
        for *cells, ok in self.rows:
            verdict = "" if ok is None else "PASS" if ok else "FAIL"
            table.add_row(*map(Text, cells), Text(verdict, "bold " + ("green" if ok else "red")))
        console.print(table)
        meta = ", ".join(f"{k} {v}" for k, v in self.data["meta"].items())
        for text in [*self.notes, meta]:
            console.print(text, soft_wrap=True, markup=False)


def main(doc: str | None, run: Callable[[Plan, Report, Progress], None], plans: Plans) -> int:
    """``--quick`` and ``--json``; ``run`` fills the report with ``plans``' values (name:
    (full, quick)). Every tree and segment of the run is gone afterwards, whatever
    happened (SIGTERM included)."""
    parser = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run (CI smoke)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    def progress(text: str) -> None:
        if not args.json:
            print(f"... {text}", file=sys.stderr, flush=True)

    def on_term(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    report, started = Report(), time.perf_counter()
    try:
        plan = Plan(**{name: both[args.quick] for name, both in plans.items()})
        run(plan, report, progress)
    except Exception as exc:
        print(f"benchmark failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    finally:
        for tree in _TREES:
            tree.stop()
        leaked = [name for name in _SEGMENTS if unlink_segment(name)]
    meta = {"quick": args.quick, "cpus": sorted(os.sched_getaffinity(0)), **report.data["meta"]}
    meta.update(python=sys.version.split()[0], elapsed_s=round(time.perf_counter() - started))
    report.data["meta"] = meta
    if args.json:
        print(json.dumps(report.data, sort_keys=True, default=str))
    else:
        report.print()
    for tree in _TREES:
        if tree.unclean:
            print(f"warning: a tree did not stop cleanly: {tree.unclean}", file=sys.stderr)
    if leaked:
        print(f"warning: removed segments left behind: {leaked}", file=sys.stderr)
    return 0
