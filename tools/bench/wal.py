"""Benchmark of durability: acknowledged WAL appends, recovery time, checkpoint saves.

Run as ``python tools/bench/wal.py [--quick] [--json]``. Every figure is a median over
repeated runs, printed next to a baseline measured in the same run, on the same machine and
in the same directory (so the ratio, not the absolute number, is what carries from one host
to another), and next to its target with PASS/FAIL. The script reports; it does not gate:
the exit status is 0 when targets are missed and non-zero only when a measurement itself
fails. Everything is written below ``tempfile.gettempdir()`` — set ``TMPDIR`` to measure
another filesystem (its type is printed: on tmpfs an fsync costs nothing).

What is measured, and how:

1. Acknowledged appends/s per fsync policy (``always``, ``everysec``, ``no``). A tree
   (``run_tree``: supervisor, control socket, pidfile, log relay) runs in a forked process
   with two children: the WAL component (``WALManager(cfg)``, name ``wal``, with
   ``[wal] fsync`` set to the policy) and a ``driver`` component defined here. The driver
   keeps a window of W ``("append", [entry] * B)`` calls in flight on its peer connection to
   the WAL (each answer releases the next call; each entry MessagePack-encoded as the call is
   made, as an agent manager does) for a fixed time and counts the entries whose
   answer — the acknowledgement, sent only after the sync the policy requires — arrived; it
   checks that the acknowledged LSNs are consecutive. Two shapes: W=16 calls of B=64 entries,
   and W=256 calls of B=1 entry (an agent that logs one operation per request). Entries are
   shaped like the reference agent's ``memory_add`` WAL entries (operation, params {text, id,
   embedding: 64 float32 = 256 bytes}, timestamp; ~375 bytes of msgpack). Baselines, in the
   same run, interleaved with the WAL runs, in the tree's directory: for ``no`` (and for
   ``everysec``) a raw loop that frames the same msgpack payloads with
   :func:`~osup_mp.storage.wal.store.encode_record` and ``os.write``\\ s them to one file, B
   records per write;
   for ``always`` a raw group-commit loop: write a batch of as many records as the bench keeps
   in flight (W x B), ``os.fdatasync``, repeat (also reported: batches of one call's B).
   Target: acknowledged appends >= 25 % of the raw loop of the same policy.
2. Recovery of a checkpoint plus N replayed entries (N = 100,000; ``--quick`` 20,000). A data
   directory is prepared with :class:`~osup_mp.storage.checkpoints.store.CheckpointStore`
   (one checkpoint at LSN 1000 of a reference-agent snapshot with 1000 memory blocks) and
   :class:`~osup_mp.storage.wal.store.WALStore` (``lsn.floor`` 1000, then N ``memory_add``
   entries with unique ids, LSN 1001 on).
   The shipped tree (``child_specs``: telemetry, vault, wal, watchdog, agent:main running the
   reference agent) is started on it (``checkpoint_dir``/``wal_dir`` pointed there,
   ``vault.checkpoint_interval`` 0 so nothing new is checkpointed, ``agent.startsecs`` 0
   so each kill restarts at once, log level info for the phase timestamps). Measured,
   from the fork of the tree (cold start) and from SIGKILL of the agent (restart; the manager
   replays everything again): until slot 0 of the shared-memory segment says RUNNING (with a
   new generation), and — the figure held to the target — until the agent answers a ``stats``
   request sent over the data-plane socket the moment it is RUNNING. The manager counts the
   agent's first heartbeat as ready, but the SDK sends neither ``ready`` nor a heartbeat
   before the last restore frame is applied, so RUNNING comes just after the replay; the
   request queues behind the restore frames on the agent's stdin, so its answer marks the
   moment the restored state serves.
   The answer must report 1000 + N blocks and the manager's ``applied_lsn`` must be 1000 + N.
   Baseline: the same tree on an empty data directory (the fixed cost of starting). Target:
   < 1 s (``RECOVERY_TARGET_MS``). The log's timestamps split the cold start into phases, and
   the restore pipeline is also run stage by stage in this process on the same data (WAL
   open, reading the payloads after the checkpoint, the channel's pickling, the manager's
   restore framing, the agent's frame decoding, ``restore`` + ``apply_wal_batch``, building
   its embedding matrix), so a miss says where the time goes.
3. Durable save of a 1 MiB checkpoint (file + diskcache row): ``CheckpointStore.save`` with a
   1 MiB payload, median of 30 (``--quick`` 10), with ``vault.generations`` pruning as in the
   tree. Baseline, interleaved: write + ``fsync`` of 1 MiB to a new file in the same
   directory. The parts of a save (encode, atomic file write, cache row, prune) are timed
   separately too. Target: median < 50 ms.

Every tree runs in its own temporary directory with its own shared-memory name and is stopped
through the control socket (SIGTERM, then SIGKILL as last resorts), even on error; temporary
directories are removed and ``/dev/shm`` is checked for segments of this run.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import itertools
import os
import pickle
import re
import select
import signal
import sys
import tempfile
import time
import types
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import psutil

# Runnable as ``python tools/bench/wal.py`` from a checkout without installing; the
# second entry is for the helpers the bench scripts share (``_common.py`` beside this one).
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common
from _common import BenchError, median, p90, verdict

from osup_mp.agent.reference import MemoryAgent
from osup_mp.agent.sdk import AgentOptions
from osup_mp.client import Client, ClientError
from osup_mp.components.agent.durability import _PAGE as RESTORE_PAGE
from osup_mp.components.agent.durability import Durability
from osup_mp.components.messages import Append
from osup_mp.components.vault import MemoryVault
from osup_mp.components.wal import MAX_SPANS, WALManager
from osup_mp.config import Config, load_config
from osup_mp.lowlevel.files import atomic_write
from osup_mp.runtime.component import Caller, Component
from osup_mp.runtime.supervisor import ChildSpec, Restart
from osup_mp.storage.checkpoints.store import CheckpointStore
from osup_mp.storage.checkpoints.store import encode as encode_checkpoint
from osup_mp.storage.shm.segment import SlotState
from osup_mp.storage.wal.store import FLOOR_FILE, PayloadRun, WALStore, encode_record
from osup_mp.wire import FrameDecoder

SHM_PREFIX = "osup_bench_wal_"
POLL = 0.0005  # s between shared-memory polls
DIM = 64  # the reference agent's embedding size (memory_system.DIM)
POLICIES = ("always", "everysec", "no")
SHAPES = ((16, 64), (256, 1))  # (calls in flight W, entries per call B)
CHECKPOINT_BLOCKS = 1000
CHECKPOINT_LSN = 1000
SAVE_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class Plan:
    append_seconds: float
    append_runs: int
    recovery_entries: int
    cold_starts: int
    restarts: int
    saves: int


FULL = Plan(1.5, 5, 100_000, 3, 5, 30)
RECOVERY_TARGET_MS = 1000  # checkpoint + 100,000 entries (FULL) until the state answers
QUICK = Plan(0.5, 3, 20_000, 2, 3, 10)


SHM = _common.ShmNames(SHM_PREFIX)  # every segment name this run made (not to leave behind)


# ------------------------------------------------------------------ entries


def make_entries(n: int, seed: int = 1, prefix: str = "memory") -> list[dict[str, Any]]:
    """``memory_add`` WAL entries as the reference agent logs them (valid for apply_wal)."""
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, DIM)).astype(np.float32)
    now = time.time()
    return [
        {
            "operation": "memory_add",
            "params": {
                "text": f"{prefix} {i}",
                "id": str(uuid.UUID(int=int(rng.integers(1 << 62)) << 64 | i, version=4)),
                "embedding": vectors[i].tobytes(),
            },
            "timestamp": now,
        }
        for i in range(n)
    ]


def entry_bytes(entry: dict[str, Any]) -> int:
    return len(msgpack.packb(entry, use_bin_type=True))


# ------------------------------------------------------------------ the driver component


class AppendDriver(Component):
    """Keeps W append calls of B entries in flight to the ``wal`` peer for a while."""

    def __init__(self) -> None:
        self._pools: dict[int, list[list[dict[str, Any]]]] = {}

    def handle_call(self, request: Any, caller: Caller) -> Any:
        kind = request[0] if isinstance(request, tuple | list) and request else request
        if kind == "bench_append":
            return self._append(int(request[1]), int(request[2]), float(request[3]))
        return super().handle_call(request, caller)

    def _append(self, window: int, batch: int, seconds: float) -> dict[str, Any]:
        calls = self._pools.get(batch)
        if calls is None:  # built once per shape (the warm-up run), outside the timed runs
            pool = make_entries(4096, seed=batch)
            calls = self._pools[batch] = [pool[i : i + batch] for i in range(0, 4096, batch)]
        mux = self.peer("wal").mux()
        channel = mux.channel
        sent = done = errors = acked = 0
        last_lsn = first_lsn = 0
        gaps: list[str] = []
        error_text = ""
        clock = time.perf_counter
        deadline = 0.0
        t_last = 0.0

        pack = msgpack.Packer(use_bin_type=True).pack

        def issue() -> None:
            nonlocal sent
            # Encoded per call, as an agent manager encodes each entry it forwards.
            entries = [pack(e) for e in calls[sent % len(calls)]]
            mux.call_async(Append(entries), on_reply, timeout=30.0)
            sent += 1

        def on_reply(ok: bool, value: Any) -> None:
            nonlocal done, errors, acked, last_lsn, first_lsn, t_last, error_text
            done += 1
            t_last = clock()
            if not ok:
                errors += 1
                error_text = str(value)
            elif not isinstance(value, list) or len(value) != batch:
                errors += 1
                error_text = f"ack of {len(value) if isinstance(value, list) else value!r}"
            else:
                if not first_lsn:
                    first_lsn = value[0]
                elif value[0] != last_lsn + 1 and len(gaps) < 5:
                    gaps.append(f"{last_lsn} -> {value[0]}")
                if value[-1] != value[0] + batch - 1 and len(gaps) < 5:
                    gaps.append(f"inside {value[0]}..{value[-1]}")
                last_lsn = value[-1]
                acked += len(value)
            if t_last < deadline:
                issue()

        t0 = clock()
        deadline = t0 + seconds
        while sent < window:
            issue()
        while done < sent:
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
                raise RuntimeError(f"append: no ack for 10 s ({done}/{sent} answered)")
            if readable:
                mux.dispatch(channel.receive())
            if channel.closed and done < sent:
                raise RuntimeError("append: the wal connection closed")
            mux.expire()
        elapsed = t_last - t0
        return {
            "entries": acked,
            "calls": done,
            "errors": errors,
            "error": error_text,
            "gaps": gaps,
            "elapsed_s": elapsed,
            "entries_per_s": acked / elapsed if elapsed > 0 else 0.0,
            "first_lsn": first_lsn,
            "last_lsn": last_lsn,
        }


# ------------------------------------------------------------------ trees


Specs = Callable[[Config, Any], list[ChildSpec]] | None  # (cfg, shm) -> children; None: shipped


class TreeProc(_common.ForkedTree):
    """A tree run by ``run_tree`` in a forked process, with its config in ``tmp`` (which it
    leaves to its owner). With ``agent``, it is up once its segment is mapped (the caller
    polls slot 0 from there), else once its status says running."""

    def __init__(
        self,
        tmp: Path,
        overrides: dict[str, dict[str, Any]],
        specs: Specs,
        *,
        agent: bool = False,
    ) -> None:
        shm_name = SHM.new()
        bench = {"supervisor": {"max_restarts": 100000, "max_seconds": 1}}
        cfg = _common.tree_config("test", tmp, shm_name, bench, overrides)
        factory = None if specs is None else functools.partial(specs, cfg)
        super().__init__(tmp, shm_name, cfg, factory, stop_join=30.0, remove_tmp=False)
        self.agent = agent

    def call(self, name: str, request: list[Any], timeout: float = 10.0) -> Any:
        """``request`` to component ``name`` through the control socket's ``call``."""
        with Client.for_config(self.cfg, timeout=timeout + 5.0) as client:
            return client.request("call", name=name, request=request, timeout=timeout)

    def _up(self) -> bool:
        return self.attach() if self.agent else self.pings()

    def _not_up(self, timeout: float) -> str:
        return f"tree did not come up within {timeout:g}s"

    def _poll(self) -> float:
        return POLL if self.agent else 0.02

    def start(self, timeout: float = 60.0) -> None:
        super().start(timeout)

    def wait_running(self, old_generation: int | None, timeout: float) -> int:
        """Poll slot 0 until RUNNING (with a generation other than ``old_generation``);
        return the perf_counter_ns at which it was seen."""
        s = self.slot()
        deadline = time.perf_counter() + timeout
        while True:
            state = int(s["state"])
            generation = int(s["generation"])
            if state == SlotState.RUNNING and generation not in (old_generation, 0):
                seen = time.perf_counter_ns()
                self.remember(int(s["pid"]))
                return seen
            if state == SlotState.FATAL:
                raise BenchError(f"the manager made the agent FATAL (log: {self.cfg.log_file})")
            if self.proc.exitcode is not None:
                raise BenchError(
                    f"the tree exited with status {self.proc.exitcode} (log: {self.cfg.log_file})"
                )
            if time.perf_counter() > deadline:
                raise BenchError(
                    f"agent not RUNNING within {timeout:g}s (slot state {SlotState(state).name})"
                )
            time.sleep(POLL)


def temp_dir(tag: str) -> contextlib.AbstractContextManager[Path]:
    return _common.temp_dir(f"osup_bench_wal_{tag}_")


@contextlib.contextmanager
def running_tree(
    tmp: Path,
    overrides: dict[str, dict[str, Any]],
    specs: Specs,
    trees: list[TreeProc],
    *,
    agent: bool = False,
) -> Iterator[TreeProc]:
    tree = TreeProc(tmp, overrides, specs, agent=agent)
    trees.append(tree)
    with _common.running(tree):
        yield tree


# ------------------------------------------------------------------ 1. appends


def raw_append_loop(
    path: Path, payloads: list[bytes], batch: int, seconds: float, sync: bool
) -> dict[str, Any]:
    """Frame ``payloads`` with encode_record, ``batch`` records per os.write (+ fdatasync
    when ``sync``), for ``seconds``; entries/s."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_EXCL, 0o600)
    n_payloads = len(payloads)
    lsn = 1
    written = 0
    clock = time.perf_counter
    try:
        t0 = clock()
        deadline = t0 + seconds
        now = t0
        while now < deadline:
            chunk = b"".join(
                [encode_record(lsn + k, payloads[(lsn + k) % n_payloads]) for k in range(batch)]
            )
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view) :]
            if sync:
                os.fdatasync(fd)
            lsn += batch
            written += batch
            now = clock()
        elapsed = now - t0
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    return {"entries": written, "elapsed_s": elapsed, "entries_per_s": written / elapsed}


def append_specs(cfg: Config, shm: Any) -> list[ChildSpec]:
    """The WAL component and the driver: nothing else in the tree."""
    return [
        ChildSpec("wal", functools.partial(WALManager, cfg), Restart.PERMANENT, 5.0),
        ChildSpec("driver", AppendDriver, Restart.PERMANENT, shutdown_timeout=2.0),
    ]


def wal_stats(tree: TreeProc) -> dict[str, Any]:
    stats: dict[str, Any] = tree.call("wal", ["stats"], timeout=30.0)
    return stats


def measure_appends(
    plan: Plan, trees: list[TreeProc], progress: Callable[[str], None]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    payload_pool = [msgpack.packb(e, use_bin_type=True) for e in make_entries(4096, seed=7)]
    sizes = [float(len(p)) for p in payload_pool]
    out["entry_bytes"] = {"median": median(sizes), "min": int(min(sizes)), "max": int(max(sizes))}
    for policy in POLICIES:
        with (
            temp_dir(f"append_{policy}") as tmp,
            running_tree(tmp, {"wal": {"fsync": policy}}, append_specs, trees) as tree,
        ):
            out[policy] = _measure_policy(plan, tree, policy, payload_pool, progress)
    return out


def _measure_policy(
    plan: Plan,
    tree: TreeProc,
    policy: str,
    payloads: list[bytes],
    progress: Callable[[str], None],
) -> dict[str, Any]:
    raw_dir = tree.tmp / "raw"
    raw_dir.mkdir()
    wal_dir = tree.cfg.o_supervisor.wal_dir
    if os.stat(raw_dir).st_dev != os.stat(wal_dir).st_dev:
        raise BenchError(f"{raw_dir} and {wal_dir} are on different filesystems")
    result: dict[str, Any] = {}
    timeout = plan.append_seconds + 60.0
    pids = {c["name"]: c["pid"] for c in tree.request("status")["components"]}
    procs = {name: psutil.Process(pids[name]) for name in ("wal", "driver")}

    def cpu_seconds() -> dict[str, float]:
        return {name: sum(proc.cpu_times()[:2]) for name, proc in procs.items()}

    for window, batch in SHAPES:
        key = f"w{window}_b{batch}"
        progress(f"appends, fsync {policy}: {window} calls x {batch} entries in flight")
        tree.call("driver", ["bench_append", window, batch, 0.2], timeout=timeout)  # warm-up
        runs: list[dict[str, Any]] = []
        raw_runs: list[float] = []
        raw_call_runs: list[float] = []
        syncs_per_run: list[int] = []
        busy: dict[str, list[float]] = {name: [] for name in procs}
        for counter in range(plan.append_runs):
            before = wal_stats(tree)
            cpu0 = cpu_seconds()
            run = tree.call(
                "driver", ["bench_append", window, batch, plan.append_seconds], timeout=timeout
            )
            cpu1 = cpu_seconds()
            after = wal_stats(tree)
            for name in procs:
                busy[name].append(100 * (cpu1[name] - cpu0[name]) / run["elapsed_s"])
            if run["errors"] or run["gaps"]:
                raise BenchError(
                    f"fsync {policy}: {run['errors']} failed appends ({run['error']}), "
                    f"LSN gaps {run['gaps']}"
                )
            runs.append(run)
            syncs_per_run.append(int(after["syncs"]) - int(before["syncs"]))
            # Keep the disk use bounded: drop every segment but the active one.
            tree.call("wal", ["truncate_through", after["last_lsn"]], timeout=60.0)
            if policy == "always":
                raw = raw_append_loop(
                    raw_dir / f"raw{counter}", payloads, window * batch, plan.append_seconds, True
                )
                raw_call = raw_append_loop(
                    raw_dir / f"rawc{counter}", payloads, batch, plan.append_seconds, True
                )
                raw_call_runs.append(raw_call["entries_per_s"])
            else:
                raw = raw_append_loop(
                    raw_dir / f"raw{counter}", payloads, batch, plan.append_seconds, False
                )
            raw_runs.append(raw["entries_per_s"])
        rates = [r["entries_per_s"] for r in runs]
        rate, raw_rate = median(rates), median(raw_runs)
        entries_total = sum(r["entries"] for r in runs)
        syncs_total = sum(syncs_per_run)
        fig: dict[str, Any] = {
            "window": window,
            "batch": batch,
            "in_flight_entries": window * batch,
            "entries_per_s": rate,
            "runs_entries_per_s": rates,
            "seconds_per_run": plan.append_seconds,
            "entries_acked": entries_total,
            "fdatasyncs": syncs_total,
            "entries_per_fdatasync": entries_total / syncs_total if syncs_total else None,
            "cpu_percent_of_one_core": {name: round(median(v), 1) for name, v in busy.items()},
            "baseline_raw_per_s": raw_rate,
            "baseline_runs_per_s": raw_runs,
            "baseline": (
                f"raw write of {window * batch} records + fdatasync"
                if policy == "always"
                else f"raw os.write of {batch} record(s), no sync"
            ),
            "ratio": rate / raw_rate,
            "target": "ratio >= 0.25",
            "pass": rate / raw_rate >= 0.25,
        }
        if policy == "always":
            fig["baseline_per_call_batch_per_s"] = median(raw_call_runs)
            fig["baseline_per_call_batch"] = f"raw write of {batch} record(s) + fdatasync"
            fig["ratio_vs_per_call_batch"] = rate / median(raw_call_runs)
        result[key] = fig
    return result


# ------------------------------------------------------------------ 2. recovery


def snapshot_blocks(n: int) -> dict[str, Any]:
    """A reference-agent checkpoint (MemoryAgent.snapshot's shape) with ``n`` blocks."""
    entries = make_entries(n, seed=3, prefix="checkpointed memory")
    blocks = [
        {
            "id": e["params"]["id"],
            "text": e["params"]["text"],
            "metadata": {},
            "embedding": e["params"]["embedding"],
        }
        for e in entries
    ]
    return {
        "agent_state": {"operations": n, "started": time.time()},
        "memory_blocks": blocks,
        "tool_registry": {},
    }


def prepare_data(root: Path, cfg: Config, n_entries: int) -> dict[str, Any]:
    """A checkpoint at LSN 1000 with 1000 blocks + ``n_entries`` WAL entries after it."""
    t0 = time.perf_counter()
    checkpoints, wal_dir = root / "checkpoints", root / "wal"
    store = CheckpointStore(checkpoints, cfg.vault.generations)
    try:
        payload = msgpack.packb(snapshot_blocks(CHECKPOINT_BLOCKS), use_bin_type=True)
        checkpoint = store.save(str(uuid.uuid4()), CHECKPOINT_LSN, payload)
    finally:
        store.close()
    wal_dir.mkdir(mode=0o700, parents=True)
    # As after a checkpoint let every older segment go: the log continues at LSN 1001.
    atomic_write(wal_dir / FLOOR_FILE, f"{CHECKPOINT_LSN}\n".encode())
    wal = WALStore(
        wal_dir,
        segment_entries=cfg.wal.segment_entries,
        segment_bytes=cfg.wal.segment_bytes,
        salvage=cfg.wal.salvage,
    )
    wal.open()
    try:
        step = 5000
        for start in range(0, n_entries, step):
            entries = make_entries(min(step, n_entries - start), seed=100 + start)
            wal.append([msgpack.packb(e, use_bin_type=True) for e in entries])
        wal.sync()
        stats = wal.stats()
    finally:
        wal.close()
    if stats["last_lsn"] != CHECKPOINT_LSN + n_entries:
        raise BenchError(f"prepared WAL ends at LSN {stats['last_lsn']}")
    return {
        "checkpoint_id": checkpoint.id,
        "checkpoint_lsn": checkpoint.lsn,
        "checkpoint_bytes": len(payload),
        "wal_entries": n_entries,
        "wal_segments": stats["segments"],
        "wal_bytes": stats["bytes"],
        "last_lsn": stats["last_lsn"],
        "prepare_s": time.perf_counter() - t0,
    }


_LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) (\S+) \[(\w+)\] (.*)$")
_PHASES = (
    ("tree_start", re.compile(r"osup-mp starting")),
    ("wal_open", re.compile(r"wal: open at LSN")),
    ("restore_fetched", re.compile(r"agent main: restoring checkpoint")),
    ("agent_spawned", re.compile(r"agent main: started pid")),
    ("agent_running", re.compile(r"agent main: ready \(pid")),
)


def log_phases(log_file: Path, occurrence: int) -> dict[str, float] | None:
    """Wall-clock seconds of the cold start's phases from the tree's log (ms resolution):
    the ``occurrence``-th (0-based) start of the main agent."""
    try:
        lines = log_file.read_text(errors="replace").splitlines()
    except OSError:
        return None
    seen: dict[str, list[float]] = {}
    for line in lines:
        m = _LOG_LINE.match(line)
        if not m:
            continue
        for name, pattern in _PHASES:
            if pattern.search(m.group(4)):
                stamp = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f").timestamp()
                seen.setdefault(name, []).append(stamp)
    try:
        return {
            name: seen[name][0 if name in ("tree_start", "wal_open") else occurrence]
            for name, _ in _PHASES
        }
    except (KeyError, IndexError):
        return None


def replay_counts(log_file: Path) -> list[int]:
    """The number of WAL entries each restore of the main agent replayed (from its log)."""
    try:
        text = log_file.read_text(errors="replace")
    except OSError:
        return []
    pattern = r"agent main: restoring checkpoint \S+ \(LSN \d+\) \+ (\d+) WAL"
    return [int(n) for n in re.findall(pattern, text)]


def first_answer(tree: TreeProc, timeout: float = 120.0) -> tuple[int, float, dict[str, Any]]:
    """The agent's ``stats`` over the data-plane socket, asked as soon as the manager says
    RUNNING: (perf_counter_ns and wall time of the answer, the stats). The request queues
    behind the restore frames on the agent's stdin, so its answer marks the moment the
    restored state is served."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with Client(
                tree.cfg.data_socket("main"),
                timeout=timeout,
                max_frame=tree.cfg.agent.max_frame,
            ) as client:
                stats: dict[str, Any] = client.request("request", data={"op": "stats"})
            return time.perf_counter_ns(), time.time(), stats
        except ClientError as exc:
            if time.monotonic() > deadline:
                raise BenchError(f"the agent did not answer stats: {exc}") from exc
            time.sleep(POLL)


def verify_agent(
    tree: TreeProc, stats: dict[str, Any], expected_blocks: int, expected_lsn: int
) -> dict[str, Any]:
    status = tree.request("status", timeout=30.0)
    agents = status.get("agents") or []
    applied = agents[0].get("applied_lsn") if agents else None
    state = agents[0].get("state") if agents else None
    if stats.get("blocks") != expected_blocks:
        raise BenchError(f"agent has {stats.get('blocks')} blocks, expected {expected_blocks}")
    if expected_lsn and applied != expected_lsn:
        raise BenchError(f"manager applied_lsn {applied}, expected {expected_lsn}")
    if str(state).lower() != "running":
        raise BenchError(f"control status says the agent is {state}")
    return {"blocks": stats["blocks"], "applied_lsn": applied}


def measure_starts(
    tmp: Path,
    overrides: dict[str, dict[str, Any]],
    plan: Plan,
    expected_blocks: int,
    expected_lsn: int,
    trees: list[TreeProc],
    label: str,
    progress: Callable[[str], None],
) -> dict[str, Any]:
    """Cold starts (fork -> RUNNING -> first answer) and agent restarts (SIGKILL -> RUNNING
    -> first answer)."""
    out: dict[str, Any] = {
        "cold_start_running_ms": [],
        "cold_start_served_ms": [],
        "cold_start_ping_ms": [],
        "restart_running_ms": [],
        "restart_served_ms": [],
    }
    phases: list[dict[str, float]] = []
    replayed: list[int] = []
    check: dict[str, Any] | None = None
    for run in range(plan.cold_starts):
        progress(f"recovery ({label}): cold start {run + 1}/{plan.cold_starts}")
        run_dir = tmp / f"tree{run}"
        run_dir.mkdir()
        with running_tree(run_dir, overrides, None, trees, agent=True) as tree:
            running = tree.wait_running(None, timeout=120.0)
            served, served_wall, stats = first_answer(tree)
            out["cold_start_running_ms"].append((running - tree.started_ns) / 1e6)
            out["cold_start_served_ms"].append((served - tree.started_ns) / 1e6)
            while not tree.pings():  # the ordered start is done
                time.sleep(0.002)
            out["cold_start_ping_ms"].append((time.perf_counter_ns() - tree.started_ns) / 1e6)
            check = verify_agent(tree, stats, expected_blocks, expected_lsn)
            if run == 0:
                slot = tree.slot()
                pause = max(tree.cfg.agent.startsecs, 0.05)
                for i in range(plan.restarts):
                    progress(f"recovery ({label}): agent restart {i + 1}/{plan.restarts}")
                    time.sleep(pause)  # up past startsecs: each kill restarts at once
                    pid, generation = int(slot["pid"]), int(slot["generation"])
                    if pid <= 0:
                        raise BenchError("slot 0 has no agent pid")
                    t0 = time.perf_counter_ns()
                    os.kill(pid, signal.SIGKILL)
                    running = tree.wait_running(generation, timeout=120.0)
                    served, _wall, stats = first_answer(tree)
                    out["restart_running_ms"].append((running - t0) / 1e6)
                    out["restart_served_ms"].append((served - t0) / 1e6)
                    check = verify_agent(tree, stats, expected_blocks, expected_lsn)
            log_file = tree.cfg.log_file
            if expected_lsn:
                replayed.extend(replay_counts(log_file))
                p = log_phases(log_file, 0)
                if p is not None:
                    phases.append({**p, "first_answer": served_wall})
    out["checks"] = check
    if expected_lsn:
        out["replayed_per_start"] = replayed
        out["log_phases_ms"] = [_phase_deltas(p) for p in phases]
    return out


def _phase_deltas(p: dict[str, float]) -> dict[str, float]:
    names = [*(name for name, _ in _PHASES), "first_answer"]
    return {f"{a}->{b}": round((p[b] - p[a]) * 1000, 1) for a, b in itertools.pairwise(names)}


class _Stages:
    """Times named stages; between the processes of the pipeline it drops what the previous
    process held and collects, so each stage runs with a heap like its real process's."""

    def __init__(self) -> None:
        self.ms: dict[str, float] = {}

    def run(self, name: str, fn: Callable[..., Any], *args: Any) -> Any:
        t0 = time.perf_counter()
        value = fn(*args)
        self.ms[name] = round((time.perf_counter() - t0) * 1000, 1)
        return value

    @staticmethod
    def next_process() -> None:
        gc.collect()


def _wal_process(root: Path, cfg: Config, stages: _Stages) -> list[bytes]:
    """What the WAL component does for the manager's ``("read_spans_after", lsn, page)``
    calls: the pickled replies (the descriptors that ride along are opened by the manager
    stage here)."""
    wal = WALStore(
        root / "wal", segment_entries=cfg.wal.segment_entries, segment_bytes=cfg.wal.segment_bytes
    )
    stages.run("wal: WALStore.open (scans + verifies every segment)", wal.open)

    def spans() -> list[dict[str, Any]]:
        pages: list[dict[str, Any]] = []
        cursor = CHECKPOINT_LSN
        while True:  # paged as Durability.plan asks
            found = wal.spans_after(cursor, RESTORE_PAGE, MAX_SPANS)
            if not found:
                return pages
            cursor = found[-1].first_lsn + len(found[-1]) - 1
            pages.append({"spans": found, "more": cursor < wal.last_lsn})

    try:
        pages = stages.run("wal: spans_after (the open's index: no read, no re-scan)", spans)
    finally:
        wal.close()
    replies: list[bytes] = stages.run(
        "wal: pickle.dumps of the replies (channel)",
        lambda: [pickle.dumps(("reply", 1, True, p), pickle.HIGHEST_PROTOCOL) for p in pages],
    )
    return replies


def _vault_process(root: Path, cfg: Config, stages: _Stages) -> bytes:
    """What the vault does for ``("latest", True)``: the pickled reply (payload unopened)."""
    store = CheckpointStore(root / "checkpoints", cfg.vault.generations)
    try:
        checkpoint = stages.run("vault: latest (read + sha256)", lambda: store.latest()[0])
    finally:
        store.close()
    loaded = stages.run("vault: _loaded (payload as stored)", MemoryVault._loaded, checkpoint, True)
    reply: bytes = stages.run(
        "vault: pickle.dumps of the reply (channel)",
        pickle.dumps,
        ("reply", 1, True, loaded),
        pickle.HIGHEST_PROTOCOL,
    )
    return reply


def _restore_sender(cfg: Config) -> tuple[Callable[[dict[str, Any]], None], bytearray]:
    """The agent manager's own restore framing (``Durability.send_restore``), run on a
    stand-in host whose queued frames land in the returned buffer."""
    out = bytearray()
    host: Any = types.SimpleNamespace(cfg=cfg, send_agent_raw=out.extend)
    return Durability(host, durable=True).send_restore, out


def _manager_process(
    cfg: Config, vault_reply: bytes, wal_replies: list[bytes], stages: _Stages
) -> bytes:
    """What the agent manager does to plan a restore and send it: the frames."""
    vault_value = stages.run("manager: pickle.loads of the vault reply", pickle.loads, vault_reply)
    checkpoint = vault_value[3]
    pages = stages.run(
        "manager: pickle.loads of the wal replies",
        lambda: [pickle.loads(reply)[3] for reply in wal_replies],
    )

    def read() -> list[PayloadRun]:
        runs = []
        for page in pages:
            for span in page["spans"]:
                fd = os.open(span.path, os.O_RDONLY)  # the descriptor the WAL hands over
                try:
                    runs.append(span.payloads(span.read(fd)))
                finally:
                    os.close(fd)
        return runs

    runs = stages.run("manager: read the entries (pread + payloads back to back)", read)
    restore = {
        "checkpoint_id": checkpoint["id"],
        "payload": checkpoint["payload"],
        "lsn": checkpoint["lsn"],
        "entries": runs,
    }
    send_restore, out = _restore_sender(cfg)
    stages.run("manager: send_restore (stored entries spliced into frames)", send_restore, restore)
    return bytes(out)


def _agent_process(cfg: Config, frames: bytes, stages: _Stages) -> tuple[int, int]:
    """What the reference agent does with the restore frames: (frames, blocks)."""
    agent = MemoryAgent(AgentOptions(max_frame=cfg.agent.max_frame))
    # As the SDK does for an agent started with --restore: no cyclic GC until ready (which
    # resumes it).
    agent._pause_gc()
    decoder = FrameDecoder(max_frame=cfg.agent.max_frame, require_type=True)

    def decode() -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        view = memoryview(frames)
        step = 256 * 1024  # as the agent reads its stdin
        for start in range(0, len(frames), step):
            out.extend(decoder.feed(view[start : start + step]))
        return out

    messages = stages.run("agent: frame decoding (256 KiB reads)", decode)

    def apply() -> None:
        for msg in messages:
            agent._on_restore(msg)

    try:
        stages.run("agent: restore + apply_wal_batch per frame (GC resumed at ready)", apply)
        stages.run("agent: embedding matrix (first search or publish)", agent._current_matrix)
    finally:
        agent._resume_gc()  # in case no frame said more=false
        gc.unfreeze()  # what ready froze: this process goes on to other measurements
    return len(messages), len(agent.blocks)


def profile_restore(root: Path, cfg: Config, expected_blocks: int) -> dict[str, Any]:
    """The restore pipeline stage by stage, in this process, on the prepared data: what the
    WAL component, the vault, the agent manager and the agent each do (channel pickling
    included). Times include the garbage collector, as in the real processes."""
    stages = _Stages()
    stages.next_process()
    wal_replies = _wal_process(root, cfg, stages)
    stages.next_process()
    vault_reply = _vault_process(root, cfg, stages)
    stages.next_process()
    frames = _manager_process(cfg, vault_reply, wal_replies, stages)
    wal_reply_bytes = sum(len(reply) for reply in wal_replies)
    del wal_replies, vault_reply
    stages.next_process()
    n_frames, blocks = _agent_process(cfg, frames, stages)
    if blocks != expected_blocks:
        raise BenchError(f"profile: agent has {blocks} blocks, not {expected_blocks}")
    return {
        "stages_ms": stages.ms,
        "sum_ms": round(sum(stages.ms.values()), 1),
        "read_after_reply_pickle_bytes": wal_reply_bytes,
        "restore_frames": n_frames,
        "restore_frame_bytes": len(frames),
    }


def measure_recovery(
    plan: Plan, trees: list[TreeProc], progress: Callable[[str], None]
) -> dict[str, Any]:
    n = plan.recovery_entries
    common: dict[str, dict[str, Any]] = {
        "vault": {"checkpoint_interval": 0},
        "agent": {"startsecs": 0, "max_restarts": 100000},  # every kill restarts at once
        "logger": {"level": "info"},
    }
    with temp_dir("recovery") as tmp:
        progress("recovery baseline: the same tree on an empty data directory")
        empty = tmp / "empty"
        empty.mkdir()
        baseline = measure_starts(
            empty,
            common,
            plan,
            expected_blocks=0,
            expected_lsn=0,
            trees=trees,
            label="empty",
            progress=progress,
        )
        progress(f"recovery: preparing a checkpoint of {CHECKPOINT_BLOCKS} blocks + {n} entries")
        data = tmp / "data"
        cfg = load_config(None, "test", cwd=tmp)
        prepared = prepare_data(data, cfg, n)
        expected_blocks = CHECKPOINT_BLOCKS + n  # ids are unique: no duplicates
        overrides = {
            **common,
            "o_supervisor": {
                "checkpoint_dir": str(data / "checkpoints"),
                "wal_dir": str(data / "wal"),
            },
        }
        runs_dir = tmp / "runs"
        runs_dir.mkdir()
        loaded = measure_starts(
            runs_dir,
            overrides,
            plan,
            expected_blocks,
            prepared["last_lsn"],
            trees,
            label=f"{n} entries",
            progress=progress,
        )
        progress("recovery: the restore pipeline stage by stage (in this process)")
        profile = profile_restore(data, cfg, expected_blocks)
    return {
        "entries": n,
        "prepared": prepared,
        "baseline": baseline,
        "loaded": loaded,
        "profile": profile,
        "expected_blocks": expected_blocks,
    }


# ------------------------------------------------------------------ 3. checkpoint saves


def raw_write_fsync(directory: Path, data: bytes, index: int) -> float:
    """ms to create a new file, write ``data``, fsync and close it."""
    path = directory / f"raw-{index}.bin"
    t0 = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    elapsed = (time.perf_counter() - t0) * 1000
    path.unlink()
    return elapsed


def measure_saves(plan: Plan, progress: Callable[[str], None]) -> dict[str, Any]:
    progress(f"checkpoint saves: {plan.saves} x 1 MiB (file + diskcache), raw write+fsync")
    cfg = load_config(None, "test")
    generations = cfg.vault.generations
    payload = os.urandom(SAVE_BYTES)
    with temp_dir("save") as tmp:
        store = CheckpointStore(tmp / "checkpoints", generations)
        raw_dir = store.files  # the same directory the checkpoint files go to
        try:
            for i in range(3):  # warm-up: the cache database, the page cache
                store.save(str(uuid.uuid4()), i, payload)
                raw_write_fsync(raw_dir, payload, -1 - i)
            save_ms: list[float] = []
            raw_ms: list[float] = []
            for i in range(plan.saves):
                t0 = time.perf_counter()
                store.save(str(uuid.uuid4()), 100 + i, payload)
                save_ms.append((time.perf_counter() - t0) * 1000)
                raw_ms.append(raw_write_fsync(raw_dir, payload, i))
            kept = len(store.catalog())
            parts = _save_parts(store, payload, plan.saves)
        finally:
            store.close()
    return {
        "payload_bytes": SAVE_BYTES,
        "generations": generations,
        "kept_after": kept,
        "save_ms": save_ms,
        "raw_ms": raw_ms,
        "parts_median_ms": parts,
    }


def _save_parts(store: CheckpointStore, payload: bytes, n: int) -> dict[str, float]:
    """What CheckpointStore.save does, piece by piece (same order, same calls)."""
    from osup_mp.storage.checkpoints.store import Checkpoint

    parts: dict[str, list[float]] = {
        "encode (sha256)": [],
        "atomic file write": [],
        "diskcache set": [],
        "prune": [],
    }
    clock = time.perf_counter
    for i in range(n):
        checkpoint_id = str(uuid.uuid4())
        t0 = clock()
        image = encode_checkpoint(Checkpoint(checkpoint_id, 10_000 + i, time.time_ns(), payload))
        t1 = clock()
        atomic_write(store.files / f"{checkpoint_id}.ckpt", image)
        t2 = clock()
        store.cache.set(checkpoint_id, image)
        t3 = clock()
        store.prune()
        t4 = clock()
        for key, a, b in (
            ("encode (sha256)", t0, t1),
            ("atomic file write", t1, t2),
            ("diskcache set", t2, t3),
            ("prune", t3, t4),
        ):
            parts[key].append((b - a) * 1000)
    return {key: round(median(v), 2) for key, v in parts.items()}


# ------------------------------------------------------------------ driver


def fs_type(path: str) -> str:
    """The filesystem type holding ``path`` (from /proc/self/mounts)."""
    best, kind = "", "?"
    real = os.path.realpath(path)
    with contextlib.suppress(OSError), open("/proc/self/mounts") as f:
        for line in f:
            parts = line.split()
            if len(parts) < 3:
                continue
            mount = parts[1].replace("\\040", " ")
            inside = real == mount or real.startswith(mount.rstrip("/") + "/")
            if inside and len(mount) >= len(best):
                best, kind = mount, parts[2]
    return kind


def run(plan: Plan, progress: Callable[[str], None]) -> dict[str, Any]:
    trees: list[TreeProc] = []
    figures: dict[str, Any] = {}
    try:
        appends = measure_appends(plan, trees, progress)
        recovery = measure_recovery(plan, trees, progress)
        saves = measure_saves(plan, progress)
    finally:
        figures["trees"] = [t.report() for t in trees]

    figures["entry_bytes"] = appends["entry_bytes"]
    for policy in POLICIES:
        for key, fig in appends[policy].items():
            figures[f"append_{policy}_{key}"] = {"policy": policy, **fig}

    loaded, base = recovery["loaded"], recovery["baseline"]
    common = {
        "entries": recovery["entries"],
        "checkpoint_blocks": CHECKPOINT_BLOCKS,
        "blocks_after": loaded["checks"]["blocks"] if loaded["checks"] else None,
        "expected_blocks": recovery["expected_blocks"],
        "replayed_per_start": loaded["replayed_per_start"],
        "target": f"< {RECOVERY_TARGET_MS} ms until the restored state answers",
    }
    for kind in ("cold_start", "restart"):
        served, running = loaded[f"{kind}_served_ms"], loaded[f"{kind}_running_ms"]
        base_served = base[f"{kind}_served_ms"]
        rec: dict[str, Any] = {
            **common,
            "median_ms": median(served),
            "p90_ms": p90(served),
            "runs_ms": served,
            "running_median_ms": median(running),
            "running_runs_ms": running,
            "baseline_empty_median_ms": median(base_served),
            "baseline_empty_runs_ms": base_served,
            "baseline_empty_running_median_ms": median(base[f"{kind}_running_ms"]),
            "replay_cost_ms": median(served) - median(base_served),
            "ratio": median(served) / median(base_served),
            "pass": median(served) < RECOVERY_TARGET_MS,
        }
        if kind == "cold_start":
            rec["control_ping_ms"] = loaded["cold_start_ping_ms"]
            rec["log_phases_ms"] = loaded["log_phases_ms"]
        figures[f"recovery_{kind}"] = rec
    figures["recovery_prepared"] = recovery["prepared"]
    figures["recovery_profile"] = recovery["profile"]

    save_med, raw_med = median(saves["save_ms"]), median(saves["raw_ms"])
    figures["checkpoint_save"] = {
        "payload_bytes": saves["payload_bytes"],
        "median_ms": save_med,
        "p90_ms": p90(saves["save_ms"]),
        "n": len(saves["save_ms"]),
        "baseline_raw_write_fsync_median_ms": raw_med,
        "baseline_p90_ms": p90(saves["raw_ms"]),
        "ratio": save_med / raw_med,
        "parts_median_ms": saves["parts_median_ms"],
        "generations": saves["generations"],
        "kept_after": saves["kept_after"],
        "target": "median < 50 ms",
        "pass": save_med < 50.0,
    }
    return figures


def render(figures: dict[str, Any]) -> str:
    rows: list[tuple[str, str, str, str]] = []
    for policy in POLICIES:
        for window, batch in SHAPES:
            f = figures[f"append_{policy}_w{window}_b{batch}"]
            per_sync = (
                f", {f['entries_per_fdatasync']:.0f}/fdatasync"
                if f["entries_per_fdatasync"] and policy != "no"
                else ""
            )
            base = (
                f"raw {window * batch}/fdatasync {f['baseline_raw_per_s']:.0f}/s"
                if policy == "always"
                else f"raw write x{batch} {f['baseline_raw_per_s']:.0f}/s"
            )
            extra = (
                f" (raw {batch}/fdatasync {f['baseline_per_call_batch_per_s']:.0f}/s)"
                if policy == "always"
                else ""
            )
            rows.append(
                (
                    f"acked appends, fsync {policy}, {window}x{batch} in flight",
                    f"{f['entries_per_s']:.0f} entries/s{per_sync}",
                    f"{base}  ratio {f['ratio']:.2f}{extra}",
                    f"target >= 0.25: {verdict(f['pass'])}",
                )
            )
    c, r = figures["recovery_cold_start"], figures["recovery_restart"]
    for f, what, base in ((c, "cold start", "empty tree"), (r, "agent restart", "empty state")):
        rows.append(
            (
                f"{what}, checkpoint + {f['entries']} entries -> answers",
                f"median {f['median_ms']:.0f} ms  p90 {f['p90_ms']:.0f} ms",
                f"{base} {f['baseline_empty_median_ms']:.0f} ms  ratio {f['ratio']:.1f}x",
                f"target < {RECOVERY_TARGET_MS} ms: {verdict(f['pass'])}",
            )
        )
        rows.append(
            (
                f"  ({what}: manager says RUNNING)",
                f"median {f['running_median_ms']:.0f} ms",
                f"{base} {f['baseline_empty_running_median_ms']:.0f} ms",
                "(info)",
            )
        )
    s = figures["checkpoint_save"]
    rows.append(
        (
            "checkpoint save, 1 MiB (file + diskcache)",
            f"median {s['median_ms']:.1f} ms  p90 {s['p90_ms']:.1f} ms",
            f"raw write+fsync {s['baseline_raw_write_fsync_median_ms']:.1f} ms"
            f"  ratio {s['ratio']:.2f}x",
            f"target < 50 ms: {verdict(s['pass'])}",
        )
    )
    lines = _common.table(rows)
    eb = figures["entry_bytes"]
    lines.append("")
    busy = []
    for policy in POLICIES:
        for window, batch in SHAPES:
            cpu = figures[f"append_{policy}_w{window}_b{batch}"]["cpu_percent_of_one_core"]
            busy.append(f"{policy} {window}x{batch} {cpu['wal']:.0f}/{cpu['driver']:.0f}")
    lines.append("CPU during appends (% of one core, wal/driver): " + ", ".join(busy))
    lines.append(
        f"entry size: {eb['median']:.0f} bytes of msgpack (min {eb['min']}, max {eb['max']})"
    )
    lines.append(
        f"replayed per agent start: {sorted(set(c['replayed_per_start']))}; blocks after restore "
        f"{c['blocks_after']} (expected {c['expected_blocks']})"
    )
    for phases in c["log_phases_ms"][:1]:
        lines.append(
            "cold start phases (log, ms): " + ", ".join(f"{k} {v:g}" for k, v in phases.items())
        )
    prof = figures["recovery_profile"]
    lines.append(
        f"restore pipeline stage by stage (in-process, ms; sum {prof['sum_ms']:.0f}; "
        f"WAL replies {prof['read_after_reply_pickle_bytes'] / 1e6:.1f} MB pickled, "
        f"{prof['restore_frames']} restore frames {prof['restore_frame_bytes'] / 1e6:.1f} MB):"
    )
    for name, ms in prof["stages_ms"].items():
        lines.append(f"  {ms:8.1f}  {name}")
    lines.append(
        "checkpoint save parts (median ms): "
        + ", ".join(f"{k} {v:g}" for k, v in s["parts_median_ms"].items())
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _common.parse_args(__doc__, argv)

    def on_term(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)  # unwinds through every cleanup

    def sweep() -> None:
        leaked = SHM.sweep()
        if leaked:
            print(f"warning: removed shared memory left behind: {leaked}", file=sys.stderr)

    signal.signal(signal.SIGTERM, on_term)
    started = time.perf_counter()
    figures = _common.measure(run, QUICK if args.quick else FULL, args, cleanup=sweep)
    if figures is None:
        return 2
    figures["meta"] = _common.meta(
        args,
        started,
        sorted(os.sched_getaffinity(0)),
        tmpdir=tempfile.gettempdir(),
        filesystem=fs_type(tempfile.gettempdir()),
    )
    _common.emit(args, figures, render)
    if not args.json:
        print(
            f"(directory {figures['meta']['tmpdir']} on {figures['meta']['filesystem']}, "
            f"{len(figures['meta']['cpus'])} CPUs, {figures['meta']['elapsed_s']:.0f} s)"
        )
    _common.warn_unclean(figures["trees"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
