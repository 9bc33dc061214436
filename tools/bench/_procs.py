"""The trees a benchmark starts: ``run_tree`` in a forked process with its own directory and
segment, driven through its control socket, its data plane and the main agent's slot."""

import contextlib
import os
import select
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Self

import _harness as h
import psutil

from osup_mp.app.tree import run_tree
from osup_mp.client import Client, ClientError
from osup_mp.config import Config, load_config
from osup_mp.lowlevel.proc import set_parent_death_signal
from osup_mp.runtime.calls import CallMux
from osup_mp.runtime.supervisor import ChildSpec
from osup_mp.storage.shm.segment import MAIN_SLOT, SharedState, ShmError, SlotState

POLL = 0.0005  # s between polls of a shared-memory slot
# Kills in a benchmark restart at once, never into a crash-loop verdict.
RESTART_FREELY = {"supervisor": {"max_restarts": 100000, "max_seconds": 1}}
Specs = Callable[[Config, SharedState], list[ChildSpec]]


def _tree_main(cfg: Config, specs: Specs | None) -> None:
    set_parent_death_signal(signal.SIGTERM)  # never outlive the bench
    factory = None if specs is None else (lambda shm: specs(cfg, shm))
    sys.exit(run_tree(cfg, stderr_log=False, specs=factory))


class Tree:
    """``run_tree`` forked with its own directory and segment, ``env``'s config with ``layers``
    merged over it by section; up inside a ``with`` (and with ``agent``, its main RUNNING).
    ``stop`` asks the control socket, then SIGTERMs, then SIGKILLs, kills what outlived the
    tree, keeps the log, removes directory and segment, and says in ``unclean`` what it did."""

    def __init__(
        self, *layers: h.Layers, specs: Specs | None = None, env: str = "test", agent: bool = True
    ) -> None:
        self.tmp, self.shm_name = Path(tempfile.mkdtemp(prefix="osup_bench_")), h.new_segment_name()
        merged: h.Layers = {"o_supervisor": {"shared_memory_name": self.shm_name}}
        for layer in layers:
            for section, values in layer.items():
                merged.setdefault(section, {}).update(values)
        self.cfg = load_config(None, env, cwd=self.tmp, overrides=merged)
        self.proc = h.FORK.Process(target=_tree_main, args=(self.cfg, specs), name="osup-bench")
        self.shm: SharedState | None = None
        self.seen: dict[int, psutil.Process] = {}
        self.started_ns = self.pid = 0
        self.wait_agent, self.log, self.unclean, self.stopped = agent, "", list[str](), False
        h.STOPS.append(self.stop)

    def __enter__(self) -> Self:
        self.start()
        self.until(lambda: self.attach() and self.status()["state"] == "running", 60.0, "up")
        self.remember()
        if self.wait_agent:
            self.wait_running(None)
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self.started_ns = time.perf_counter_ns()
        self.proc.start()
        self.pid = self.proc.pid or 0

    def until(self, cond: Callable[[], object], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            if self.proc.exitcode is not None:
                raise h.BenchError(f"the tree exited {self.proc.exitcode}; log {self.cfg.log_file}")
            if time.monotonic() > deadline:
                raise h.BenchError(f"the tree was not {what} within {timeout:g}s")
            time.sleep(POLL)

    def request(self, command: str, /, wait: float = 10.0, **args: Any) -> Any:
        with Client.for_config(self.cfg, timeout=wait) as client:
            return client.request(command, **args)

    def status(self) -> dict[str, Any]:
        with contextlib.suppress(ClientError):
            return dict(self.request("status"))
        return {"state": "unreachable"}

    def main_status(self) -> dict[str, Any]:
        return dict((self.status().get("agents") or [{}])[0])

    def process(self, component: str) -> psutil.Process:
        pids = {c["name"]: c["pid"] for c in self.status()["components"] if c["pid"]}
        return psutil.Process(pids[component])

    def call(self, name: str, request: list[Any], timeout: float = 10.0) -> Any:
        return self.request("call", wait=timeout + 5.0, name=name, request=request, timeout=timeout)

    def data_client(self, timeout: float = 30.0) -> Client:
        max_frame = self.cfg.agent.max_frame
        return Client(self.cfg.data_socket("main"), timeout=timeout, max_frame=max_frame)

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
        return int(self.slot()["pid"]), int(self.slot()["generation"])

    def kill_agent(self) -> tuple[int, float, float]:
        """SIGKILL the main: perf_counter_ns before, ms to a new generation, and to RUNNING."""
        pid, generation = self.agent()
        if pid <= 0:  # os.kill(0) would signal the bench's own process group
            raise h.BenchError("the main agent's slot has no pid")
        t0 = time.perf_counter_ns()
        os.kill(pid, signal.SIGKILL)
        spawned, running = self.wait_running(generation)
        return t0, h.since_ms(t0, spawned), h.since_ms(t0, running)

    def wait_running(self, old_generation: int | None, timeout: float = 120.0) -> tuple[int, int]:
        """The perf_counter_ns at which a generation other than ``old_generation`` (written
        right after the manager's Popen) and it RUNNING (its ready frame) were first seen."""
        spawned = running = 0

        def seen() -> bool:
            nonlocal spawned, running
            if not self.attach():
                return False
            state, generation = int(self.slot()["state"]), int(self.slot()["generation"])
            if state == SlotState.FATAL:
                raise h.BenchError(f"the manager made the agent FATAL; log {self.cfg.log_file}")
            if generation not in (old_generation, 0):
                spawned = spawned or time.perf_counter_ns()
                running = time.perf_counter_ns() if state == SlotState.RUNNING else 0
            return bool(running)

        self.until(seen, timeout, "running a new agent")
        self.remember(self.agent()[0])
        return spawned, running

    def remember(self, pid: int = 0) -> None:
        """Note ``pid`` (0: every descendant) to kill it if it outlives the tree."""
        with contextlib.suppress(psutil.Error):
            procs = [psutil.Process(pid)] if pid else psutil.Process(self.pid).children(True)
            for proc in procs:
                self.seen.setdefault(proc.pid, proc)

    def stop(self) -> list[str]:
        if self.stopped:
            return self.unclean
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
            if h.unlink_segment(self.shm_name):
                self.unclean.append("left its segment")
        return self.unclean


def in_flight(
    mux: CallMux, window: int, request: Callable[[int], Any], more: Callable[[int], bool]
) -> list[Any]:
    """Inside a component: ``window`` calls ``request(i)`` in flight while ``more(i)``; their
    answers (a failed call raises)."""
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
    if failed := [value for ok, value in answers if not ok]:
        raise RuntimeError(f"{len(failed)} of {sent} calls failed: {failed[0]}")
    return [value for _ok, value in answers]


def load(tree: Tree, adds: Sequence[dict[str, Any]]) -> list[float]:
    """``adds`` to the main agent, 256 in flight; the rate of each tenth of them (per s)."""
    rates, done, tenth = [], 0, max(256, len(adds) // 10)
    with tree.data_client() as client:
        t0 = time.perf_counter()
        for first in range(0, len(adds), 256):
            batch = adds[first : first + 256]
            for add in batch:
                client.send("request", data=add)
            if not all(client.receive()["ok"] for _ in batch):
                raise h.BenchError(f"{batch[0]['op']} failed")
            if (end := first + len(batch)) - done >= tenth or end == len(adds):
                now = time.perf_counter()
                rates.append((end - done) / (now - t0))
                t0, done = now, end
    return rates


def memories(n: int) -> list[dict[str, Any]]:
    texts = (f"note {i % 97} about topic {i % 13} and item {i}" for i in range(n))
    return [{"op": "memory_add", "id": f"b{i}", "text": text} for i, text in enumerate(texts)]
