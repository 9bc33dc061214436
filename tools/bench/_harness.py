"""The harness of the benchmarks in ``tools/bench``: sampling, bench-owned segments, quick and
full plans, the command line, and the table of each figure beside its same-run baseline and
target. Benchmarks report, they do not gate: missed targets exit 0, a failed measurement 2."""

import argparse
import contextlib
import json
import multiprocessing
import operator
import os
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeVar

import numpy as np
import psutil
from rich.console import Console
from rich.table import Table
from rich.text import Text

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # runnable from a checkout

from osup_mp.storage.shm.segment import SharedState

FORK = multiprocessing.get_context("fork")
Plan = SimpleNamespace  # a benchmark's counts and durations, full or quick
Layers = dict[str, dict[str, Any]]
SEGMENTS: list[str] = []  # every segment name this run made: none may be left
STOPS: list[Callable[[], list[str]]] = []  # each stops a tree of this run: what was unclean
T = TypeVar("T")
_QUIET = [False]  # --json: no progress lines
_OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


class BenchError(RuntimeError):
    """A measurement could not be taken."""


def progress(text: str) -> None:
    if not _QUIET[0]:
        print(f"... {text}", file=sys.stderr, flush=True)


def median(values: Sequence[float]) -> float:
    return float(np.median(values))


def p90(values: Sequence[float]) -> float:
    return float(np.percentile(values, 90))  # linear, as statistics.quantiles "inclusive"


def p99(values: Sequence[float]) -> float:
    return sorted(values)[min(len(values) - 1, int(len(values) * 0.99))]  # nearest rank


def spread(values: Sequence[float], unit: str, fmt: str = ".1f") -> str:
    return f"median {median(values):{fmt}} {unit}  p90 {p90(values):{fmt}} {unit}"


def timed_us(fn: Callable[[], object], n: int, warm_up: int = 0) -> list[float]:
    """µs of each of ``n`` calls of ``fn``, after ``warm_up`` untimed ones."""
    clock, out = time.perf_counter_ns, []
    for i in range(-warm_up, n):
        t0 = clock()
        fn()
        if i >= 0:
            out.append((clock() - t0) / 1000)
    return out


def since_ms(t0_ns: int, t1_ns: int = 0) -> float:
    return ((t1_ns or time.perf_counter_ns()) - t0_ns) / 1e6


def cpu_seconds(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


def cpu_percent(procs: Sequence[psutil.Process], seconds: float) -> list[float]:
    """Percent of one core (user + system) that each of ``procs`` uses over ``seconds``."""
    before = [cpu_seconds(p) for p in procs]
    time.sleep(seconds)
    return [(cpu_seconds(p) - b) / seconds * 100 for p, b in zip(procs, before, strict=True)]


def in_turns(
    rounds: int, subjects: dict[str, T], measure: Callable[[T], float | list[float]]
) -> dict[str, list[float]]:
    """``measure`` each of ``subjects`` in turns, so that all see the same background load."""
    out: dict[str, list[float]] = {name: [] for name in subjects}
    for _ in range(rounds):
        for name, subject in subjects.items():
            got = measure(subject)
            out[name] += got if isinstance(got, list) else [got]
    return out


@contextlib.contextmanager
def pinned(cpus: set[int]) -> Iterator[None]:
    """This process on ``cpus`` until the block ends."""
    saved = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, cpus)
        yield
    finally:
        os.sched_setaffinity(0, saved)


def unlink_segment(name: str) -> bool:
    """True when it was still there."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(f"/dev/shm/{name.lstrip('/')}")
        return True
    return False


def new_segment_name() -> str:
    SEGMENTS.append(f"/osup_bench_{uuid.uuid4().hex[:12]}")
    return SEGMENTS[-1]


@contextlib.contextmanager
def segment(size: int) -> Iterator[tuple[str, SharedState]]:
    name = new_segment_name()
    shm, _note = SharedState.create(name, size)
    try:
        yield name, shm
    finally:
        shm.close()
        unlink_segment(name)


class Report:
    """Rows of (figure, same-run baseline, target, verdict), notes, and for ``--json`` the
    numbers behind each row (keyed by the row's name)."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str, bool | None]] = []
        self.notes: list[str] = []
        self.data: dict[str, Any] = {"meta": {}, "notes": self.notes}

    def row(
        self, what: str, fig: str, base: str, target: str = "", ok: bool | None = None, **data: Any
    ) -> None:
        self.rows.append((what, fig, base, target or "(reported)", ok))
        self.data[what] = {"target": target or None, "pass": ok, **data}

    def compare(
        self, what: str, xs: list[float], base: list[float], label: str, target: str, unit: str
    ) -> None:
        """``xs`` against the same run's ``base``; ``target`` reads "ratio|median OP LIMIT ..."
        (empty: reported only). Rates (a unit in "/s") show their median, times their p90 too."""
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


def main(doc: str | None, run: Callable[[Plan, Report], None], plans: dict[str, Any]) -> int:
    """``run`` fills the report with ``plans``' values (name: (full, quick)). No tree or
    segment of the run outlives it (SIGTERM included)."""
    parser = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run (CI smoke)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    _QUIET[0] = args.json

    def on_term(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    report, started = Report(), time.perf_counter()
    try:
        run(Plan(**{name: both[args.quick] for name, both in plans.items()}), report)
    except Exception as exc:
        print(f"benchmark failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    finally:
        unclean = [what for stop in STOPS if (what := stop())]
        leaked = [name for name in SEGMENTS if unlink_segment(name)]
    meta = {"quick": args.quick, "cpus": sorted(os.sched_getaffinity(0)), **report.data["meta"]}
    meta.update(python=sys.version.split()[0], elapsed_s=round(time.perf_counter() - started))
    report.data["meta"] = meta
    if args.json:
        print(json.dumps(report.data, sort_keys=True, default=str))
    else:
        report.print()
    for what in unclean:
        print(f"warning: a tree did not stop cleanly: {what}", file=sys.stderr)
    if leaked:
        print(f"warning: removed segments left behind: {leaked}", file=sys.stderr)
    return 0
