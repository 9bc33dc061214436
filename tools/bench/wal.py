"""Benchmark of durability: acknowledged WAL appends against raw writes of the same records,
the start of a checkpoint plus a long WAL against an empty one, checkpoint saves against a
raw write + fsync. Everything is written below ``tempfile.gettempdir()`` (``TMPDIR``; the
filesystem's type is printed, on tmpfs an fsync costs nothing), each baseline in the same
directory as what it is compared to.
"""

import contextlib
import functools
import itertools
import os
import re
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import _harness as h
import msgpack
import numpy as np
import psutil
from _procs import RESTART_FREELY, Tree, in_flight

from osup_mp.client import ClientError
from osup_mp.components.messages import Append
from osup_mp.components.wal import WALManager
from osup_mp.config import Config, load_config
from osup_mp.lowlevel.files import atomic_write, write_all
from osup_mp.runtime.component import Caller, Component
from osup_mp.runtime.supervisor import ChildSpec, Restart
from osup_mp.storage.checkpoints.store import CheckpointStore
from osup_mp.storage.wal.records import encode_record
from osup_mp.storage.wal.recovery import FLOOR_FILE
from osup_mp.storage.wal.store import WALStore

DIM = 64  # the reference agent's embedding size
POLICIES = ("always", "everysec", "no")
SHAPES = ((16, 64), (256, 1))  # (append calls in flight, entries per call)
CHECKPOINT_LSN = CHECKPOINT_BLOCKS = 1000
# The tree logs the phases at info; nothing is checkpointed meanwhile; kills restart at once.
RECOVERY: h.Layers = {
    "vault": {"checkpoint_interval": 0},
    "agent": {"startsecs": 0, "max_restarts": 100000},
    "logger": {"level": "info"},
}
PHASES = {
    "tree_start": "osup-mp starting",
    "wal_open": "wal: open at LSN",
    "restore_fetched": "agent main: restoring checkpoint",
    "agent_spawned": "agent main: started pid",
    "agent_running": "agent main: ready (pid",
}
TARGET = "median < 1000 ms"  # checkpoint + 100,000 entries (the full plan) to an answer
LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) ")
PLANS = {  # name: (full, quick)
    "append_seconds": (1.5, 0.5), "append_runs": (5, 3), "recovery_entries": (100_000, 20_000),
    "cold_starts": (3, 2), "restarts": (5, 3), "saves": (30, 10),
}  # fmt: skip


def make_entries(n: int, seed: int, prefix: str = "memory") -> list[dict[str, Any]]:
    """``memory_add`` entries as the reference agent logs them (~375 bytes of msgpack)."""
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, DIM)).astype(np.float32)
    ids = [str(uuid.UUID(int=int(rng.integers(1 << 62)) << 64 | i, version=4)) for i in range(n)]
    params = [
        {"text": f"{prefix} {i}", "id": ids[i], "embedding": v.tobytes()}
        for i, v in enumerate(vectors)
    ]
    return [{"operation": "memory_add", "params": p, "timestamp": time.time()} for p in params]


@functools.cache
def calls_of(batch: int) -> list[list[dict[str, Any]]]:
    """4096 entries in calls of ``batch`` (made once per shape, in the warm-up run)."""
    pool = make_entries(4096, seed=batch)
    return [pool[i : i + batch] for i in range(0, 4096, batch)]


class AppendDriver(Component):
    """Keeps W ``append`` calls of B entries in flight to the ``wal`` peer (each answer, sent
    after the sync the policy requires, releases the next), each entry encoded as the call is
    made, as an agent manager forwards them."""

    def handle_call(self, request: Any, caller: Caller) -> Any:
        if isinstance(request, list) and request[0] == "bench_append":  # the call door
            return self.append(*request[1:])
        return super().handle_call(request, caller)

    def append(self, window: int, batch: int, seconds: float) -> dict[str, Any]:
        calls, pack = calls_of(batch), msgpack.Packer(use_bin_type=True).pack
        t0, mux = time.perf_counter(), self.peer("wal").mux()

        def request(i: int) -> Append:
            return Append([pack(e) for e in calls[i % len(calls)]])

        answers = in_flight(mux, window, request, lambda _i: time.perf_counter() < t0 + seconds)
        elapsed = time.perf_counter() - t0
        lsns = [lsn for run in answers for lsn in run]
        # Every entry acknowledged once and in order: the acknowledged log has no gap.
        if lsns != list(range(lsns[0], lsns[0] + batch * len(answers))):
            raise RuntimeError(f"appends skipped LSNs: {answers[:3]}")
        return {"entries": len(lsns), "elapsed_s": elapsed}


def wal_and_driver(cfg: Config, _shm: object) -> list[ChildSpec]:
    wal = ChildSpec("wal", functools.partial(WALManager, cfg), Restart.PERMANENT, 5.0)
    return [wal, ChildSpec("driver", AppendDriver, Restart.PERMANENT, 2.0)]


def raw_appends(path: Path, payloads: list[bytes], batch: int, seconds: float, sync: bool) -> float:
    """Entries/s framed by ``encode_record``, ``batch`` a write (and fdatasync with ``sync``)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_EXCL, 0o600)
    lsn, clock = 1, time.perf_counter
    try:
        t0 = now = clock()
        while now < t0 + seconds:
            chunk = b"".join(
                encode_record(lsn + k, payloads[(lsn + k) % len(payloads)]) for k in range(batch)
            )
            write_all(fd, chunk)
            if sync:
                os.fdatasync(fd)
            lsn, now = lsn + batch, clock()
    finally:
        os.close(fd)
        path.unlink()
    return (lsn - 1) / (now - t0)


def appends(plan: h.Plan, report: h.Report) -> None:
    """A tree of the WAL and the driver per policy and shape. Baselines, in turns with the
    appends and beside the WAL's segments: for ``always`` a raw group commit of the records
    in flight (and, reported, of one call's), else raw writes of one call's."""
    payloads = [msgpack.packb(e, use_bin_type=True) for e in make_entries(4096, seed=7)]
    sizes = [len(p) for p in payloads]
    notes = [f"entry size {h.median(sizes):.0f} bytes of msgpack ({min(sizes)}-{max(sizes)})"]
    for policy, (window, batch) in itertools.product(POLICIES, SHAPES):
        h.progress(f"appends, fsync {policy}: {window} calls x {batch} entries in flight")
        fsync = {"wal": {"fsync": policy}}
        with Tree(RESTART_FREELY, fsync, specs=wal_and_driver, agent=False) as tree:
            procs = [tree.process("wal"), tree.process("driver")]
            raw, always = tree.cfg.o_supervisor.wal_dir.parent / "raw", policy == "always"
            calls, seconds = (window, batch, plan.append_seconds), plan.append_seconds
            tree.call("driver", ["bench_append", window, batch, 0.2], seconds + 60)  # warm-up
            rates, raws, raws_call, cpu, syncs, acked = [], [], [], [0.0, 0.0], 0, 0
            for _ in range(plan.append_runs):
                before, cpu0 = tree.call("wal", ["stats"]), [h.cpu_seconds(p) for p in procs]
                run = tree.call("driver", ["bench_append", *calls], seconds + 60)
                after, elapsed = tree.call("wal", ["stats"]), run["elapsed_s"]
                spent = [h.cpu_seconds(p) - c0 for p, c0 in zip(procs, cpu0, strict=True)]
                cpu = [c + s / elapsed for c, s in zip(cpu, spent, strict=True)]
                rates.append(run["entries"] / elapsed)
                syncs, acked = syncs + after["syncs"] - before["syncs"], acked + run["entries"]
                # Bounded disk use: every segment but the active one goes.
                tree.call("wal", ["truncate_through", after["last_lsn"]], 60.0)
                group = batch * window if always else batch
                raws.append(raw_appends(raw, payloads, group, seconds, always))
                if always:
                    raws_call.append(raw_appends(raw, payloads, batch, seconds, True))
        what = f"acked appends, fsync {policy}, {window}x{batch} in flight"
        base = f"raw {window * batch}/fdatasync" if always else f"raw write x{batch}"
        report.compare(what, rates, raws, base, "ratio >= 0.25", "entries/s")
        cpu = [100 * c / plan.append_runs for c in cpu]
        notes.append(f"{policy} {window}x{batch}: CPU wal {cpu[0]:.0f} % driver {cpu[1]:.0f} %")
        if syncs and policy != "no":
            notes[-1] += f", {acked / syncs:.0f} entries per fdatasync"
        if always:
            notes[-1] += f", raw {batch}/fdatasync {h.median(raws_call):.0f}/s"
    report.note("appends: " + "; ".join(notes))


def prepare(root: Path, cfg: Config, n: int) -> int:
    """A checkpoint of 1000 blocks at LSN 1000, then ``n`` entries in the WAL; the last LSN."""
    entries = make_entries(CHECKPOINT_BLOCKS, seed=3, prefix="checkpointed memory")
    blocks = [{**e["params"], "metadata": {}} for e in entries]  # as MemoryAgent.snapshot
    snapshot = {"agent_state": {}, "memory_blocks": blocks, "tool_registry": {}}
    with contextlib.closing(CheckpointStore(root / "checkpoints", cfg.vault.generations)) as store:
        store.save(str(uuid.uuid4()), CHECKPOINT_LSN, msgpack.packb(snapshot, use_bin_type=True))
    (root / "wal").mkdir(mode=0o700)
    # As after a checkpoint, every older segment is gone: the log continues at LSN 1001.
    atomic_write(root / "wal" / FLOOR_FILE, f"{CHECKPOINT_LSN}\n".encode())
    w = cfg.wal
    wal = WALStore(root / "wal", segment_entries=w.segment_entries, segment_bytes=w.segment_bytes)
    with contextlib.closing(wal):
        wal.open()
        for start in range(0, n, 5000):
            entries = make_entries(min(5000, n - start), seed=100 + start)
            wal.append([msgpack.packb(e, use_bin_type=True) for e in entries])
        wal.sync()
        return wal.last_lsn


def first_answer(tree: Tree, blocks: int, lsn: int) -> tuple[int, float]:
    """(perf_counter_ns, wall time) of the restored agent's answer to ``stats``, asked as soon
    as the data plane takes it (it queues behind the restore frames), once checked."""
    answer: list[Any] = []

    def answered() -> bool:
        with contextlib.suppress(ClientError), tree.data_client(120.0) as client:
            stats = client.request("request", data={"op": "stats"})
            answer[:] = [stats["blocks"], time.perf_counter_ns(), time.time()]
        return bool(answer)

    tree.until(answered, 120.0, "answering")
    tree.until(lambda: tree.status()["state"] == "running", 60.0, "up")
    applied = tree.main_status().get("applied_lsn")
    if answer[0] != blocks or (lsn and applied != lsn):
        raise h.BenchError(f"{answer[0]} blocks, LSN {applied}; not {blocks}, {lsn}")
    return answer[1], answer[2]


def starts(plan: h.Plan, layers: h.Layers, blocks: int, lsn: int) -> Any:
    """Cold starts (fork -> RUNNING, -> first answer); in the first tree, agent restarts
    (SIGKILL -> the same; the manager replays everything again)."""
    out: dict[str, Any] = {k: [] for k in ("cold", "cold_running", "restart", "restart_running")}
    for i in range(plan.cold_starts):
        h.progress(f"{'recovery' if lsn else 'empty tree'}: cold start {i + 1}/{plan.cold_starts}")
        tree = Tree(RESTART_FREELY, RECOVERY, layers)
        try:
            fork_wall = time.time()
            tree.start()
            running = tree.wait_running(None)[1]
            served, served_wall = first_answer(tree, blocks, lsn)
            out["cold_running"].append(h.since_ms(tree.started_ns, running))
            out["cold"].append(h.since_ms(tree.started_ns, served))
            for _ in range(plan.restarts if i == 0 else 0):
                time.sleep(0.05)  # up past startsecs: each kill restarts at once
                t0, _spawned, running_ms = tree.kill_agent()
                out["restart_running"].append(running_ms)
                out["restart"].append(h.since_ms(t0, first_answer(tree, blocks, lsn)[0]))
        finally:
            tree.stop()
        pattern = r"agent main: restoring checkpoint \S+ \(LSN \d+\) \+ (\d+) WAL"
        out.setdefault("replayed", []).extend(int(n) for n in re.findall(pattern, tree.log))
        stamps = {"fork": fork_wall}  # ms between the phases, by each one's first log line
        for line in tree.log.splitlines():
            for name, text in PHASES.items():
                if name not in stamps and text in line and (m := LOG_TIME.match(line)):
                    stamps[name] = datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S.%f").timestamp()
        pairs = itertools.pairwise([*stamps.items(), ("first_answer", served_wall)])
        phases = {f"{a}->{b}": round((tb - ta) * 1000, 1) for (a, ta), (b, tb) in pairs}
        out.setdefault("phases", []).append(phases)
    return out


def recovery(plan: h.Plan, report: h.Report) -> None:
    n = plan.recovery_entries
    with tempfile.TemporaryDirectory(prefix="osup_bench_") as tmp:
        data = Path(tmp)
        empty = starts(plan, {}, 0, 0)
        h.progress(f"recovery: preparing a checkpoint of {CHECKPOINT_BLOCKS} blocks + {n} entries")
        last_lsn = prepare(data, load_config(None, "test", cwd=data), n)
        dirs = {"checkpoint_dir": str(data / "checkpoints"), "wal_dir": str(data / "wal")}
        full = starts(plan, {"o_supervisor": dirs}, CHECKPOINT_BLOCKS + n, last_lsn)
    for key, base in (("cold", "empty tree"), ("restart", "empty state")):
        what = f"{'cold start' if key == 'cold' else 'agent restart'}, checkpoint + {n} entries"
        report.compare(what + " -> answers", full[key], empty[key], base, TARGET, "ms")
        running = full[f"{key}_running"], empty[f"{key}_running"]
        report.compare(f"  {what} -> RUNNING", *running, base, "", "ms")
    report.note(
        f"recovery: replayed per agent start {sorted(set(full['replayed']))}; cold start "
        "phases (log, ms): " + ", ".join(f"{k} {v:g}" for k, v in full["phases"][0].items()),
    )


def saves(plan: h.Plan, report: h.Report) -> None:
    """``CheckpointStore.save`` of 1 MiB against write + fsync of a new file, in turns."""
    h.progress(f"checkpoint saves: {plan.saves} x 1 MiB, raw write + fsync")
    payload, save_ms, raw_ms = os.urandom(1 << 20), [], []
    with tempfile.TemporaryDirectory(prefix="osup_bench_") as tmp:
        generations = load_config(None, "test").vault.generations
        with contextlib.closing(CheckpointStore(Path(tmp), generations)) as store:
            for i in range(-3, plan.saves):  # 3 to warm the cache database and page cache
                t0 = time.perf_counter_ns()
                store.save(str(uuid.uuid4()), 100 + i, payload)
                t1 = time.perf_counter_ns()
                with open(store.files / "raw", "xb", buffering=0) as raw:  # a new file
                    raw.write(payload)
                    os.fsync(raw.fileno())
                if i >= 0:
                    save_ms.append(h.since_ms(t0, t1))
                    raw_ms.append(h.since_ms(t1))
                (store.files / "raw").unlink()
    what = "checkpoint save, 1 MiB (file + diskcache)"
    report.compare(what, save_ms, raw_ms, "raw write+fsync", "median < 50 ms", "ms")


def run(plan: h.Plan, report: h.Report) -> None:
    appends(plan, report)
    recovery(plan, report)
    saves(plan, report)
    where = tempfile.gettempdir()
    mounts = [p for p in psutil.disk_partitions(all=True) if where.startswith(p.mountpoint)]
    fs = max(mounts, key=lambda p: len(p.mountpoint)).fstype if mounts else "?"
    report.data["meta"].update(directory=where, filesystem=fs)


if __name__ == "__main__":
    sys.exit(h.main(__doc__, run, PLANS))
