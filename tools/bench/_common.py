"""What the benchmark scripts in ``tools/bench`` share: a tree run in a forked process,
shared-memory names, statistics, the PASS/FAIL table and the ``--quick``/``--json`` main.

Not a benchmark itself; the scripts import it with their own directory on ``sys.path``.
Nothing here measures anything (the baselines stay raw, in the scripts).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import psutil

from osup_mp.app.specs import MAIN_SLOT, SpecsFactory
from osup_mp.app.tree import run_tree
from osup_mp.client import Client, ClientError
from osup_mp.config import Config, load_config
from osup_mp.lowlevel.proc import set_parent_death_signal, spawn_piped
from osup_mp.storage.shm.segment import SharedState, ShmError

FORK = multiprocessing.get_context("fork")

Progress = Callable[[str], None]
_Plan = TypeVar("_Plan")
_Tree = TypeVar("_Tree", bound="ForkedTree")


class BenchError(RuntimeError):
    """A measurement could not be taken."""


# ------------------------------------------------------------------ statistics helpers


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def p90(values: list[float]) -> float:
    if len(values) < 2:
        return float(values[0])
    return float(statistics.quantiles(values, n=10, method="inclusive")[-1])


# ------------------------------------------------------------------ temp dirs, shm names


@contextlib.contextmanager
def temp_dir(prefix: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def unlink_shm(name: str) -> bool:
    """Remove a segment; True when it was still there."""
    try:
        os.unlink(f"/dev/shm/{name.lstrip('/')}")
    except FileNotFoundError:
        return False
    return True


class ShmNames:
    """Shared-memory names of one run, all with ``prefix``: every one it made is kept."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.created: list[str] = []  # every segment name this run made (and must remove)

    def new(self) -> str:
        name = f"/{self.prefix}{uuid.uuid4().hex[:12]}"
        self.created.append(name)
        return name

    def sweep(self) -> list[str]:
        """Remove the segments still there; their names."""
        return [name for name in self.created if unlink_shm(name)]


# ------------------------------------------------------------------ the tree


def spawn_agent(argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    """The agent executable on pipes, with the manager's ``Popen`` options for a main agent:
    its own session, no pre-exec hook (the fast ``vfork`` path); stderr discarded. It dies
    with the bench: EOF on its stdin."""
    return spawn_piped(argv, env, stderr=subprocess.DEVNULL)


def tree_config(
    env: str, tmp: Path, shm_name: str, *overrides: dict[str, dict[str, Any]]
) -> Config:
    """``env``'s config for a tree in ``tmp`` on segment ``shm_name``, with ``overrides``
    merged section by section (later ones win)."""
    merged: dict[str, dict[str, Any]] = {"o_supervisor": {"shared_memory_name": shm_name}}
    for layer in overrides:
        for section, values in layer.items():
            merged.setdefault(section, {}).update(values)
    return load_config(None, env, cwd=tmp, overrides=merged)


def _tree_main(cfg: Config, specs: SpecsFactory | None, die_with_bench: bool) -> None:
    if die_with_bench:
        set_parent_death_signal(signal.SIGTERM)  # never outlive the bench
    sys.exit(run_tree(cfg, stderr_log=False, specs=specs))


class ForkedTree:
    """A tree run by ``run_tree`` in a forked process, its config in ``tmp``.

    ``start`` returns once ``_up`` (default: the tree answers ping); ``stop`` asks the
    control socket, then SIGTERMs, then SIGKILLs, kills what outlived the supervisor, and
    removes the segment (and ``tmp`` with ``remove_tmp``). ``stop_join`` is how long the
    control ``stop`` is given.
    """

    def __init__(
        self,
        tmp: Path,
        shm_name: str,
        cfg: Config,
        specs: SpecsFactory | None = None,
        *,
        die_with_bench: bool = True,
        stop_join: float = 15.0,
        remove_tmp: bool = True,
    ) -> None:
        self.tmp = tmp
        self.shm_name = shm_name
        self.cfg = cfg
        self.stop_join = stop_join
        self.remove_tmp = remove_tmp
        self.proc = FORK.Process(
            target=_tree_main,
            args=(cfg, specs, die_with_bench),
            name="osup-bench-tree",
            daemon=False,
        )
        self.shm: SharedState | None = None
        self.seen: dict[int, psutil.Process] = {}
        self.how_stopped = ""
        self.exitcode: int | None = None
        self.leftovers: list[int] = []  # pids that had to be killed after the tree stopped
        self.shm_left = False
        self.started_ns = 0

    @property
    def pid(self) -> int:
        assert self.proc.pid is not None
        return self.proc.pid

    def report(self) -> dict[str, Any]:
        return {
            "stopped_by": self.how_stopped,
            "exit": self.exitcode,
            "killed_leftovers": self.leftovers,
            "shm_left_behind": self.shm_left,
        }

    def client(self, timeout: float = 10.0) -> Client:
        return Client.for_config(self.cfg, timeout=timeout)

    def request(self, command: str, timeout: float = 10.0, **args: Any) -> Any:
        with self.client(timeout) as client:
            return client.request(command, **args)

    def pings(self) -> bool:
        """True once the tree is up: the control socket answers (it does from the first
        moment) and says the ordered start is done."""
        try:
            return bool(self.request("status", timeout=5.0)["state"] == "running")
        except ClientError:
            return False

    def attach(self) -> bool:
        """Map the segment (read-only) if not yet done; True once it is mapped."""
        if self.shm is None:
            with contextlib.suppress(ShmError):
                self.shm = SharedState.attach(self.shm_name, writable=False)
        return self.shm is not None

    def slot(self) -> Any:
        """Slot 0 (the main agent's) of the mapped segment."""
        assert self.shm is not None
        return self.shm.slot(MAIN_SLOT)

    # start(): hooks
    def _up(self) -> bool:
        return self.pings()

    def _not_up(self, timeout: float) -> str:
        return f"tree was not up (status: running) within {timeout:g}s"

    def _poll(self) -> float:
        return 0.02

    def start(self, timeout: float = 30.0) -> None:
        """Fork the tree; return once it is up. ``started_ns`` is the perf_counter_ns just
        before the fork."""
        self.started_ns = time.perf_counter_ns()
        self.proc.start()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.exitcode is not None:
                raise BenchError(
                    f"tree exited with status {self.proc.exitcode} before answering ping "
                    f"(log: {self.cfg.log_file})"
                )
            if self._up():
                break
            if time.monotonic() > deadline:
                raise BenchError(self._not_up(timeout))
            time.sleep(self._poll())
        self._remember_pids()

    def _remember_pids(self) -> None:
        with contextlib.suppress(psutil.Error):
            for proc in psutil.Process(self.pid).children(recursive=True):
                self.seen.setdefault(proc.pid, proc)

    def remember(self, pid: int) -> None:
        if pid > 0:
            with contextlib.suppress(psutil.Error):
                self.seen.setdefault(pid, psutil.Process(pid))

    # stop(): hooks
    def _before_stop(self) -> None:
        """Runs once the tree's processes are remembered, before it is asked to stop."""

    def _after_stop(self) -> None:
        """Runs once the tree and its leftovers are gone (before the clean-up)."""

    def stop(self) -> None:
        """Stop via the control socket, then SIGTERM, then SIGKILL; remove what is left."""
        try:
            if self.shm is not None:
                self.shm.close()
                self.shm = None
            if self.proc.pid is not None:
                self.how_stopped = "control stop"
                self._remember_pids()
                self._before_stop()
                if self.proc.exitcode is None:
                    with contextlib.suppress(ClientError):
                        self.request("stop", timeout=5.0)
                    self.proc.join(self.stop_join)
                if self.proc.exitcode is None:
                    self.how_stopped = "SIGTERM"
                    os.kill(self.pid, signal.SIGTERM)
                    self.proc.join(10.0)
                if self.proc.exitcode is None:
                    self.how_stopped = "SIGKILL"
                    os.kill(self.pid, signal.SIGKILL)
                    self.proc.join(5.0)
                self.exitcode = self.proc.exitcode
                for proc in self.seen.values():  # processes that outlived their supervisor
                    # is_running() also checks the create time, so a reused pid is left alone.
                    with contextlib.suppress(psutil.Error):
                        if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                            self.leftovers.append(proc.pid)
                            proc.kill()
            self._after_stop()
        finally:
            if self.remove_tmp:
                shutil.rmtree(self.tmp, ignore_errors=True)
            self.shm_left = unlink_shm(self.shm_name)  # True: the tree left its segment


@contextlib.contextmanager
def running(tree: _Tree) -> Iterator[_Tree]:
    """``tree`` started, and stopped however the block ends."""
    try:
        tree.start()
        yield tree
    finally:
        tree.stop()


def warn_unclean(trees: list[dict[str, Any]]) -> None:
    """A warning on stderr for each tree report that says it did not stop cleanly."""
    for tree in trees:
        if (
            tree["stopped_by"] != "control stop"
            or tree["killed_leftovers"]
            or tree["shm_left_behind"]
        ):
            print(f"warning: a tree did not stop cleanly: {tree}", file=sys.stderr)


# ------------------------------------------------------------------ output


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def table(rows: list[tuple[str, str, str, str]]) -> list[str]:
    """(what, figure, baseline, target) rows, the first three columns aligned."""
    widths = [max(len(row[k]) for row in rows) for k in range(3)]
    return [f"{a:<{widths[0]}}  {b:<{widths[1]}}  | {c:<{widths[2]}}  {d}" for a, b, c, d in rows]


# ------------------------------------------------------------------ main


def parse_args(doc: str | None, argv: list[str] | None) -> argparse.Namespace:
    """``--quick`` and ``--json``; the description is the first paragraph of ``doc``."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0] if doc else None)
    parser.add_argument("--quick", action="store_true", help="fewer iterations (CI smoke)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser.parse_args(argv)


def measure(
    run: Callable[[_Plan, Progress], dict[str, Any]],
    plan: _Plan,
    args: argparse.Namespace,
    cleanup: Callable[[], None] | None = None,
) -> dict[str, Any] | None:
    """``run(plan, progress)`` (progress on stderr unless ``--json``); ``cleanup`` after it
    in any case. None, said on stderr, when a measurement failed."""

    def progress(text: str) -> None:
        if not args.json:
            print(f"... {text}", file=sys.stderr, flush=True)

    try:
        return run(plan, progress)
    except Exception as exc:
        print(f"benchmark failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return None
    finally:
        if cleanup is not None:
            cleanup()


def meta(args: argparse.Namespace, started: float, cpus: Any, **extra: Any) -> dict[str, Any]:
    return {
        "quick": args.quick,
        "elapsed_s": round(time.perf_counter() - started, 2),
        "cpus": cpus,
        "python": sys.version.split()[0],
        **extra,
    }


def emit(
    args: argparse.Namespace, figures: dict[str, Any], render: Callable[[dict[str, Any]], str]
) -> None:
    """One JSON object with ``--json``, else the rendered table."""
    if args.json:
        print(json.dumps(figures, sort_keys=True))
    else:
        print(render(figures))
