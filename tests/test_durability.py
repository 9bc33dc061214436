"""Crash recovery end to end: nothing acknowledged is lost, nothing is applied twice."""

from __future__ import annotations

import collections
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from support import FAULTY_TREE, SCRIPTED_AGENT, TESTS_DIR, Tree, wait_for

from osup_mp.client import Client, ClientError
from osup_mp.storage.checkpoints.store import CheckpointStore
from osup_mp.storage.wal.recovery import verify_dir

# The kills here test durability, not restart policy: a killed agent or component comes
# back at once, never after a crash-loop backoff.
FAST = {
    "o_supervisor": {"heartbeat_interval": 200, "heartbeat_timeout": 2000},
    "agent": {
        "backoff_base": 20,
        "backoff_cap": 200,
        "max_retries": 1000,
        "startsecs": 0,
        "max_restarts": 1000,
        "max_seconds": 1,
    },
    "supervisor": {"max_restarts": 1000, "max_seconds": 1},
}
WAL_DUMP = TESTS_DIR.parent / "tools" / "wal_dump.py"


def _tree(make_tree, **extra: dict[str, Any]) -> Tree:
    sections = {k: dict(v) for k, v in FAST.items()}
    for key, values in extra.items():
        sections.setdefault(key, {}).update(values)
    return make_tree(**sections)


class Driver:
    """A pipelined data-plane client that retries every operation until it is acknowledged.

    Operations are idempotent (explicit ids), and two operations on the same key are never in
    flight together, so the final state must equal the model: every key's last op applied.
    """

    def __init__(self, tree: Tree, window: int = 32) -> None:
        self.tree = tree
        self.window = window
        self.client = Client(tree.cfg.data_socket("main"), timeout=30)
        self.model_blocks: dict[str, str] = {}
        self.model_tools: set[str] = set()
        self.acked = 0
        self.failures = 0

    def close(self) -> None:
        self.client.close()

    def run(self, ops: list[dict[str, Any]], on_acked: Any = None) -> None:
        pending = collections.deque(ops)
        in_flight: dict[int, dict[str, Any]] = {}
        busy_keys: set[str] = set()
        while pending or in_flight:
            skipped: list[dict[str, Any]] = []
            while len(in_flight) < self.window and pending and len(skipped) <= self.window:
                op = pending.popleft()
                if op["key"] in busy_keys:
                    skipped.append(op)  # an op on this key is in flight: keep the order
                    continue
                busy_keys.add(op["key"])
                in_flight[self.client.send("request", data=op["data"], timeout=20)] = op
            pending.extendleft(reversed(skipped))
            reply = self.client.receive()
            op = in_flight.pop(reply["id"])
            busy_keys.discard(op["key"])
            if reply["ok"]:
                self._apply(op["data"])
                self.acked += 1
                if on_acked is not None:
                    on_acked(self.acked)
            else:
                self.failures += 1
                if "not RUNNING" in str(reply.get("error")):
                    wait_for(self.tree.running_agent, 30, what="agent back")
                pending.appendleft(op)  # retried until acknowledged

    def _apply(self, data: dict[str, Any]) -> None:
        if data["op"] == "memory_add":
            self.model_blocks[data["id"]] = data["text"]
        elif data["op"] == "memory_delete":
            self.model_blocks.pop(data["id"], None)
        elif data["op"] == "tool_register":
            self.model_tools.add(data["name"])

    def check(self) -> None:
        """The agent's state equals the model exactly (every block read back, pipelined on
        one connection)."""
        with self.tree.data_client(timeout=30) as client:
            stats = client.request("request", data={"op": "stats"})
            assert stats["blocks"] == len(self.model_blocks)
            sent = {
                client.send("request", data={"op": "memory_get", "id": block_id}): block_id
                for block_id in self.model_blocks
            }
            for _ in sent:
                reply = client.receive()
                block_id = sent[reply["id"]]
                assert reply["ok"], (block_id, reply)
                assert reply["data"]["text"] == self.model_blocks[block_id], block_id
            tools = {t["name"] for t in client.request("request", data={"op": "tool_list"})}
        assert tools == self.model_tools


def workload(n: int, keys: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    ops = []
    for i in range(n):
        k = rng.randrange(keys)
        roll = rng.random()
        if roll < 0.6:
            data = {"op": "memory_add", "id": f"k{k}", "text": f"text {k} version {i}"}
        elif roll < 0.9:
            data = {"op": "memory_delete", "id": f"k{k}"}
        else:
            data = {"op": "tool_register", "name": f"tool{k % 50}", "description": str(i)}
            k = -(k % 50) - 1
        ops.append({"key": str(k), "data": data})
    return ops


def _agent_pid(tree: Tree) -> int:
    agent = wait_for(tree.running_agent, 30, what="agent running")
    return int(agent["pid"])


def test_state_survives_agent_kills(make_tree) -> None:
    """10,000 operations, the agent SIGKILLed at 20 random points: state == model."""
    tree = _tree(make_tree, vault={"checkpoint_wal_entries": 1500}).start()
    rng = random.Random(7)
    kill_at = set(rng.sample(range(200, 10_000), 20))
    driver = Driver(tree)
    kills = 0

    def maybe_kill(acked: int) -> None:
        nonlocal kills
        if acked in kill_at:
            kill_at.discard(acked)
            os.kill(_agent_pid(tree), signal.SIGKILL)
            kills += 1

    try:
        driver.run(workload(10_000, 800, seed=1), maybe_kill)
        assert kills == 20
        driver.check()
        # A whole-tree restart recovers the same state from disk.
        tree.stop()
        tree.start()
        driver.client.close()
        driver.client = Client(tree.cfg.data_socket("main"), timeout=30)
        driver.check()
    finally:
        driver.close()
    log = tree.log_text
    assert log.count("killed by SIGKILL") >= 20
    assert "restoring checkpoint" in log
    stats = tree.request("wal_stats")
    assert stats["last_lsn"] >= 10_000  # every acknowledged operation is one WAL entry


def test_a_restart_waiting_for_the_wal_leaves_the_manager_serving(make_tree) -> None:
    """The restore of a restarting agent is looked up through the manager's loop: with the
    WAL stopped (SIGSTOP), the manager still answers at once, and the restart completes
    with the state once the WAL answers."""
    tree = _tree(make_tree).start()
    tree.agent_request({"op": "memory_add", "id": "b1", "text": "kept"})
    wal, agent = tree.pids()["wal"], tree.running_agent()["pid"]
    os.kill(wal, signal.SIGSTOP)
    try:
        os.kill(agent, signal.SIGKILL)

        def status() -> dict[str, Any]:
            return dict(tree.request("call", name="agent:main", request=["status"]))

        wait_for(lambda: status()["state"] == "STARTING", what="the restart planning")
        times = []
        for _ in range(3):
            t0 = time.monotonic()
            now = status()
            times.append(time.monotonic() - t0)
            assert (now["state"], now["pid"]) == ("STARTING", None)  # still planning
        assert min(times) < 0.05, times
        with pytest.raises(ClientError, match="is STARTING, not RUNNING"):
            tree.agent_request({"op": "stats"})
        # An operator restart meanwhile plans again (the first plan's late replies are
        # dropped, their descriptors closed).
        assert tree.request("agent_restart", id="main") is True
        assert status()["state"] == "STARTING"
    finally:
        os.kill(wal, signal.SIGCONT)
    wait_for(lambda: (a := tree.running_agent()) and a["pid"] != agent, what="the agent back")
    assert tree.agent_request({"op": "memory_get", "id": "b1"})["text"] == "kept"


def test_wal_process_killed_while_writing(make_tree) -> None:
    tree = _tree(make_tree).start()
    driver = Driver(tree, window=64)
    killed = []

    def kill_wal(acked: int) -> None:
        if acked in (300, 900, 1500):
            pid = tree.pids()["wal"]
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    try:
        driver.run(workload(2_000, 400, seed=2), kill_wal)
        driver.check()
    finally:
        driver.close()
    assert len(killed) == 3
    tree.stop()
    report = verify_dir(tree.cfg.o_supervisor.wal_dir)
    assert report["problems"] == [] or all(p["kind"] == "torn tail" for p in report["problems"])
    dump = subprocess.run(
        [sys.executable, str(WAL_DUMP), str(tree.cfg.o_supervisor.wal_dir), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    lsns = [r["lsn"] for r in json.loads(dump.stdout)["records"]]
    assert lsns == list(range(1, len(lsns) + 1)), "LSNs must be contiguous from 1"
    assert len(lsns) >= driver.acked  # every acknowledged operation is one WAL entry


def test_corrupt_newest_checkpoint_falls_back(make_tree) -> None:
    tree = _tree(make_tree, vault={"checkpoint_wal_entries": 0}).start()
    driver = Driver(tree)
    try:
        driver.run(workload(300, 100, seed=3))
        first = tree.request("checkpoint_create")
        driver.run(workload(300, 100, seed=4))
        newest = tree.request("checkpoint_create")
        driver.run(workload(300, 100, seed=5))
        assert newest["lsn"] > first["lsn"]
    finally:
        driver.close()
    tree.stop()
    ckpt_dir = tree.cfg.o_supervisor.checkpoint_dir
    path = ckpt_dir / "files" / f"{newest['id']}.ckpt"
    image = bytearray(path.read_bytes())
    image[len(image) // 2] ^= 0xFF
    path.write_bytes(bytes(image))
    store = CheckpointStore(ckpt_dir, 3)
    store.cache.delete(newest["id"])
    store.close()
    tree.start()
    driver.client = Client(tree.cfg.data_socket("main"), timeout=30)
    try:
        driver.check()  # previous generation + a longer replay: the same state
    finally:
        driver.close()
    log = tree.log_text
    assert "checksum mismatch" in log
    assert f"restoring checkpoint {first['id']}" in log


@pytest.mark.parametrize(("fault", "message"), [("fsync", "fdatasync"), ("write", "write to")])
def test_disk_errors_stop_the_tree_cleanly(make_tree, fault, message) -> None:
    tree = _tree(make_tree)
    tree.start(command=[str(FAULTY_TREE), fault, "40"])
    driver = Driver(tree, window=4)
    acked: list[str] = []
    ops = workload(400, 400, seed=6)
    try:
        for op in ops:
            try:
                tree.agent_request(op["data"], timeout=10)
            except (ClientError, OSError):
                break
            acked.append(op["data"].get("id", ""))
    finally:
        driver.close()
    assert tree.wait_exit(30) == 1
    log = tree.log_text
    assert message in log and "never retried" in log and "stopping the tree" in log
    assert len(acked) < len(ops)
    # Nothing acknowledged was lost: every acknowledged operation is in the WAL.
    lsns = verify_dir(tree.cfg.o_supervisor.wal_dir)
    assert lsns["problems"] == [] or all(p["kind"] == "torn tail" for p in lsns["problems"])
    total = sum(f["records"] for f in lsns["files"])
    assert total >= len(acked)


def test_checkpoint_and_wal_cli(make_tree) -> None:
    tree = _tree(make_tree).start()
    for i in range(5):
        tree.agent_request({"op": "memory_add", "id": f"b{i}", "text": f"block {i}"})
    out = tree.cli("checkpoint", "create", "--json")
    assert out.returncode == 0, out.stderr
    created = json.loads(out.stdout)
    assert created["lsn"] == 5
    listed = json.loads(tree.cli("checkpoint", "list", "--json").stdout)
    assert [c["id"] for c in listed] == [created["id"]]
    shown = tree.cli("checkpoint", "show", created["id"])
    assert "memory_blocks: list (5)" in shown.stdout
    tree.agent_request({"op": "memory_delete", "id": "b0"})
    stats = json.loads(tree.cli("wal", "stats", "--json").stdout)
    assert stats["last_lsn"] == 6 and stats["fsync"] == "always"
    tail = tree.cli("wal", "tail", "-n", "2").stdout
    assert "memory_delete" in tail
    assert tree.cli("wal", "verify").returncode == 0
    assert tree.cli("checkpoint", "restore", created["id"]).returncode == 0
    wait_for(lambda: tree.running_agent() and tree.running_agent()["restarts"] >= 1)
    assert tree.agent_request({"op": "stats"})["blocks"] == 4  # checkpoint + replayed delete
    bad = tree.cli("checkpoint", "show", "nope")
    assert bad.returncode == 1 and "missing" in bad.stderr
    assert tree.cli("checkpoint", "delete", created["id"]).returncode == 0
    offline = subprocess.run(
        [sys.executable, str(WAL_DUMP), str(tree.cfg.o_supervisor.wal_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert offline.returncode == 0 and "ok" in offline.stdout


def test_corrupt_wal_refuses_to_start_with_file_and_offset(make_tree) -> None:
    tree = _tree(make_tree).start()
    for i in range(20):
        tree.agent_request({"op": "memory_add", "id": f"b{i}", "text": f"block {i}"})
    tree.stop()
    segment = sorted(Path(tree.cfg.o_supervisor.wal_dir).glob("wal-*.log"))[0]
    data = bytearray(segment.read_bytes())
    data[40] ^= 0x01  # inside the first record's payload
    segment.write_bytes(bytes(data))
    out = tree.cli("start")
    assert out.returncode == 1
    assert f"WAL corruption in {segment} at offset 16" in out.stderr
    assert "Traceback" not in out.stderr


def test_bad_requests_get_errors_and_crash_nothing(make_tree, tmp_path) -> None:
    tree = _tree(make_tree).start()
    before = wait_for(tree.running_pids)
    for command, args, expected in [
        ("wal_tail", {}, "wal_tail: missing argument n"),
        ("wal_tail", {"n": "ten"}, "wal_tail: n must be an integer, not str"),
        ("hot_reload", {"module": "memory_system"}, "hot_reload: missing argument code"),
        ("hot_reload", {"code": b"x = 1"}, "code must be a string, not bytes"),
        ("checkpoint_show", {"id": "../../etc/passwd"}, "is not a checkpoint id"),
        ("checkpoint_delete", {}, "checkpoint_delete: missing argument id"),
        ("checkpoint_restore", {}, "checkpoint_restore: missing argument id"),
        ("shadow_start", {"id": "s", "colour": "red"}, "unknown argument 'colour'"),
        ("no_such_command", {}, "unknown command 'no_such_command'"),
        # The raw call door: the component checks the record it is turned into.
        ("call", {"name": "wal", "request": ["tail", "ten"]}, "tail: n must be int, not str"),
        ("call", {"name": "vault", "request": ["load"]}, r"load: takes id raw; got 0"),
        ("call", {"name": "vault", "request": ["load", "../x"]}, "is not a checkpoint id"),
        ("call", {"name": "agent:main", "request": ["obey"]}, "unknown call 'obey'"),
        ("call", {"name": "watchdog", "request": 42}, "unknown call: 42"),
    ]:
        with pytest.raises(ClientError, match=expected):
            tree.request(command, **args)
    assert tree.running_pids() == before  # no component crashed or restarted


def test_non_map_wal_entries_are_refused_not_stored(make_tree) -> None:
    """An agent that logs a non-map entry gets an error ack; replay stays possible."""
    agent = SCRIPTED_AGENT
    tree = _tree(
        make_tree,
        o_supervisor={"gerbil_executable": sys.executable, "gerbil_main_script": str(agent)},
    ).start()
    tree.agent_request({"do": "log_text"})  # the scripted agent logs a bare string
    ack = wait_for(lambda: tree.agent_request({"do": "last_ack"}), what="the error ack")
    assert "must be a map" in ack
    first = _agent_pid(tree)
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: (tree.running_agent() or {"pid": first})["pid"] != first)
    assert tree.request("wal_stats")["entries"] == 0  # nothing stored; the restart replayed


def test_stop_with_appends_in_flight_keeps_every_acknowledged_one(make_tree) -> None:
    tree = _tree(make_tree).start()
    ops = [{"op": "memory_add", "id": f"s{i}", "text": f"stop {i}"} for i in range(400)]
    answered_ok = 0
    with Client(tree.cfg.data_socket("main"), timeout=30, batch_bytes=1 << 20) as client:
        for op in ops:
            client.send("request", data=op)
        client.flush()
        for _ in range(50):  # the tree is busy appending when the stop comes
            answered_ok += bool(client.receive()["ok"])
        assert tree.proc is not None
        tree.proc.send_signal(signal.SIGTERM)
        try:
            while True:
                answered_ok += bool(client.receive()["ok"])
        except ClientError:
            pass  # the tree closed the connection on its way down
    assert tree.wait_exit(30) == 0
    report = verify_dir(tree.cfg.o_supervisor.wal_dir)
    assert report["problems"] == []
    total = sum(f["records"] for f in report["files"])
    assert answered_ok >= 50 and total >= answered_ok  # nothing acknowledged was lost


def _add(tree: Tree, prefix: str, n: int) -> None:
    """``n`` acknowledged memory_adds with ids ``prefix0..``, pipelined on one connection."""
    with tree.data_client(timeout=30) as client:
        for i in range(n):
            client.send("request", data={"op": "memory_add", "id": f"{prefix}{i}", "text": "t"})
        replies = [client.receive() for _ in range(n)]
    assert all(r["ok"] for r in replies), [r for r in replies if not r["ok"]][:1]


def _ids(tree: Tree, prefix: str, n: int) -> set[str]:
    """Which of ``prefix0..prefix{n-1}`` the agent holds."""
    found = set()
    with tree.data_client(timeout=30) as client:
        for i in range(n):
            try:
                reply = client.request("request", data={"op": "memory_get", "id": f"{prefix}{i}"})
            except ClientError:  # no such block
                continue
            if isinstance(reply, dict) and reply.get("text") == "t":
                found.add(f"{prefix}{i}")
    return found


def _damage_record(wal_dir: Path, lsn: int) -> Path:
    from osup_mp.storage.wal.records import scan_segment

    for path in sorted(wal_dir.glob("wal-*.log")):
        data = bytearray(path.read_bytes())
        for record in scan_segment(bytes(data), int(path.stem.split("-")[1])).records:
            if record.lsn == lsn:
                data[record.offset + 30] ^= 0xFF  # inside the payload
                path.write_bytes(bytes(data))
                return path
    raise AssertionError(f"no record with LSN {lsn}")


def _rewrite(tree: Tree, tag: str, **sections: dict[str, Any]) -> None:
    from support import write_config

    merged = {k: dict(v) for k, v in FAST.items()}
    for key, values in sections.items():
        merged.setdefault(key, {}).update(values)
    write_config(tree.config_path.parent, tag, **merged)


def test_salvage_never_hands_out_an_lsn_twice(make_tree, tag) -> None:
    """Salvage cuts LSNs a checkpoint covers: new writes must not reuse them (they would be
    skipped at the next restore), and what salvage lost is refused until accepted."""
    sections: dict[str, dict[str, Any]] = {
        "wal": {"segment_entries": 50},
        "vault": {"checkpoint_wal_entries": 0, "generations": 3},
    }
    tree = _tree(make_tree, **sections).start()
    _add(tree, "a", 10)
    tree.request("checkpoint_create")
    _add(tree, "b", 140)  # LSNs 11..150
    covering = tree.request("checkpoint_create")
    assert covering["lsn"] == 150
    _add(tree, "c", 50)  # LSNs 151..200: only in the WAL
    tree.stop()
    _damage_record(tree.cfg.o_supervisor.wal_dir, 60)

    _rewrite(tree, tag, vault=sections["vault"], wal={"segment_entries": 50, "salvage": "truncate"})
    out = tree.cli("start")
    assert out.returncode == 1, out.stderr
    assert (
        f"checkpoint {covering['id']} covers through LSN 150, but WAL entries 151..200 are "
        "missing (50 entries)"
    ) in out.stderr
    assert "Traceback" not in out.stderr

    _rewrite(tree, tag, vault=sections["vault"], wal={"segment_entries": 50, "accept_gap": True})
    tree.start()
    assert "accepted by [wal] accept_gap: 50 entries lost" in tree.log_text
    _add(tree, "d", 100)  # must get LSNs above 200, never 60.. again
    tree.stop()
    tree.start()
    assert len(_ids(tree, "a", 10) | _ids(tree, "b", 140)) == 150
    assert _ids(tree, "c", 50) == set()  # what salvage cut, as accepted
    assert len(_ids(tree, "d", 100)) == 100


def test_no_valid_checkpoint_and_a_pruned_wal_refuses_a_partial_restore(make_tree, tag) -> None:
    sections: dict[str, dict[str, Any]] = {
        "wal": {"segment_entries": 50},
        "vault": {"checkpoint_wal_entries": 0, "generations": 1},
    }
    tree = _tree(make_tree, **sections).start()
    _add(tree, "a", 120)
    ckpt = tree.request("checkpoint_create")  # releases segments 1-50 and 51-100
    _add(tree, "b", 40)
    tree.stop()
    ckpt_dir = tree.cfg.o_supervisor.checkpoint_dir
    path = ckpt_dir / "files" / f"{ckpt['id']}.ckpt"
    image = bytearray(path.read_bytes())
    image[len(image) // 2] ^= 0xFF
    path.write_bytes(bytes(image))
    store = CheckpointStore(ckpt_dir, 1)
    store.cache.delete(ckpt["id"])
    store.close()

    out = tree.cli("start")
    assert out.returncode == 1, out.stderr
    assert (
        "no valid checkpoint (LSN 0), but WAL entries 1..100 are missing (100 entries)"
    ) in out.stderr
    assert "Traceback" not in out.stderr

    _rewrite(tree, tag, vault=sections["vault"], wal={"segment_entries": 50, "accept_gap": True})
    tree.start()
    assert _ids(tree, "a", 120) == {f"a{i}" for i in range(100, 120)}
    assert len(_ids(tree, "b", 40)) == 40
    # The accepted loss is checkpointed at once, so the next start needs no override.
    wait_for(
        lambda: any(c.get("lsn", 0) >= 160 for c in tree.request("checkpoint_list")),
        what="a checkpoint of the restored state",
    )
    tree.stop()
    _rewrite(tree, tag, **sections)
    tree.start()
    assert len(_ids(tree, "b", 40)) == 40


def test_a_checkpoint_over_half_a_frame_restores_and_shows(make_tree) -> None:
    """Restore once refused snapshots over half of [agent] max_frame (the agent went FATAL);
    `checkpoint show` failed for any checkpoint over the control frame limit."""
    tree = _tree(make_tree, agent={"max_frame": 4 << 20}, vault={"checkpoint_wal_entries": 0})
    tree.start()
    big = "x" * (2500 << 10)  # 2.5 MiB: over half a frame, over the control socket's 1 MiB
    tree.agent_request({"op": "memory_add", "id": "big", "text": big})
    ckpt = tree.request("checkpoint_create")
    assert ckpt["bytes"] > 2 << 20
    old = _agent_pid(tree)
    os.kill(old, signal.SIGKILL)
    wait_for(lambda: _agent_pid(tree) != old, 30, what="agent restored")
    assert tree.agent_request({"op": "memory_get", "id": "big"})["text"] == big
    assert f"restoring checkpoint {ckpt['id']}" in tree.log_text

    out = tree.cli("checkpoint", "show", ckpt["id"])
    assert out.returncode == 0, out.stderr
    assert "blocks: list (1)" in out.stdout
    assert "snapshot not shown" in out.stdout and ".ckpt" in out.stdout
    out = tree.cli("checkpoint", "show", "--json", ckpt["id"])
    assert out.returncode == 0, out.stderr
    shown = json.loads(out.stdout)
    assert shown["snapshot"] is None and shown["snapshot_bytes"] >= len(big)
