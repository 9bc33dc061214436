"""The manager's durability bookkeeping in isolation: acknowledgements follow send order."""

from __future__ import annotations

import os
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

from osup_mp.components import wal as wal_manager
from osup_mp.components.agent import planning
from osup_mp.components.agent.durability import Durability
from osup_mp.components.agent.restore import FRAME_ENTRIES, discard, read_entries
from osup_mp.components.agent.states import AgentState
from osup_mp.components.messages import Append, ReadSpansAfter
from osup_mp.components.wal import WALManager
from osup_mp.config import load_config
from osup_mp.runtime.calls import CallError
from osup_mp.runtime.channel import channel_pair
from osup_mp.runtime.component import NOREPLY, Caller
from osup_mp.storage.wal.records import PayloadRun
from osup_mp.wire import HEADER, FrameDecoder

pytestmark = pytest.mark.unit  # no process started


class FakeWal:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, Any]] = []

    def call_async(self, request: Any, callback: Any, timeout: float) -> None:
        self.calls.append((request, callback))


def make() -> tuple[Durability, Any, FakeWal]:
    wal = FakeWal()
    host: Any = types.SimpleNamespace(
        cfg=load_config(None, "test"),
        instance_id="main",
        generation=1,
        state=AgentState.RUNNING,
        sent=[],
        killed=[],
        standby=None,
    )
    host.peer = lambda name: wal
    host.send_agent = host.sent.append
    host.kill_for = host.killed.append
    return Durability(host, durable=True), host, wal


def test_a_later_batch_never_vouches_for_a_lost_earlier_one() -> None:
    d, host, wal = make()
    released: list[Any] = []
    d.log_entry({"op": 1}, ref=1)
    d.flush()  # batch 1
    d.after_wal(released.append)  # a response that needs batch 1
    d.log_entry({"op": 2}, ref=2)
    d.flush()  # batch 2 (say, on a new connection after a WAL restart)
    (_, first), (_, second) = wal.calls
    second(True, [11])  # batch 2 answers first ...
    assert released == []  # ... but batch 1 is not known durable: nothing released
    first(False, "wal exited")  # batch 1 was lost
    assert released == [None]  # the waiting response fails
    assert host.killed and "could not be made durable" in host.killed[0]
    assert not any(m.get("seq") == 11 for m in host.sent)  # and nothing is acknowledged


def test_results_in_order_release_in_order() -> None:
    d, host, wal = make()
    released: list[Any] = []
    d.log_entry({"op": 1}, ref="a")
    d.flush()
    d.after_wal(released.append)
    d.log_entry({"op": 2}, ref="b")
    d.flush()
    d.after_wal(released.append)
    (_, first), (_, second) = wal.calls
    second(True, [6])
    assert released == []
    first(True, [5])
    assert released == [5, 6]
    assert [m["seq"] for m in host.sent if m["type"] == "wal_ack"] == [5, 6]
    assert d.applied_lsn == 6 and d.settled


class FakeStandby:
    def __init__(self) -> None:
        self.got: list[list[bytes]] = []
        self.numbered_as: list[tuple[int, int, int]] = []
        self.killed: list[str] = []

    def follow(self, entries: list[bytes]) -> int:
        self.got.append(list(entries))
        return 7  # its generation

    def numbered(self, generation: int, first_lsn: int, count: int) -> None:
        self.numbered_as.append((generation, first_lsn, count))

    def kill_for(self, reason: str) -> None:
        self.killed.append(reason)


def test_the_standby_gets_each_batch_as_it_leaves_and_a_handover_silences_old_acks() -> None:
    d, host, wal = make()
    host.standby = standby = FakeStandby()
    d.log_entry({"op": 1}, ref="a")
    d.log_entry({"op": 2}, ref="b")
    d.flush()
    assert [msgpack.unpackb(e) for e in standby.got[0]] == [{"op": 1}, {"op": 2}]
    released: list[Any] = []
    d.after_wal(released.append)  # a response of the main that is about to die
    d.log_entry({"op": 3}, ref="c")  # read from the dead main's pipe, not yet flushed
    d.hand_over()  # the standby takes over: that entry goes out too, after the others
    assert [msgpack.unpackb(e) for e in standby.got[1]] == [{"op": 3}]
    (_, first), (_, second) = wal.calls
    first(True, [10, 11])
    second(True, [12])
    assert standby.numbered_as == [(7, 10, 2), (7, 12, 1)]
    assert released == [11]  # the dead main's response, released once durable
    assert not any(m.get("type") == "wal_ack" for m in host.sent)  # none to the successor
    assert d.applied_lsn == 12 and d.settled
    d.log_entry({"op": 4}, ref="d")  # the promoted agent's own write is acknowledged
    d.flush()
    wal.calls[-1][1](True, [13])
    assert [m["seq"] for m in host.sent if m["type"] == "wal_ack"] == [13]


def test_a_lost_batch_replaces_the_standby_that_applied_it() -> None:
    d, host, wal = make()
    host.standby = standby = FakeStandby()
    d.log_entry({"op": 1}, ref="a")
    d.flush()
    wal.calls[0][1](False, "disk full")
    assert standby.killed and host.killed


def test_non_map_entries_are_refused() -> None:
    d, host, wal = make()
    d.log_entry("text", ref=3)
    assert wal.calls == [] and d.settled
    assert host.sent[0]["error"].endswith("must be a map") and host.sent[0]["ref"] == 3


def test_a_snapshot_no_restore_frame_can_carry_is_refused_at_checkpoint_time() -> None:
    d, host, wal = make()
    limit = host.cfg.agent.max_frame
    d.on_checkpoint({"blob": b"x" * (limit - 100)})  # fits a checkpoint frame, not a restore
    assert wal.calls == []  # nothing goes to the vault: the previous checkpoint stays newest
    (ack,) = host.sent
    assert ack["type"] == "checkpoint_ack" and ack["checkpoint_id"] is None
    assert "would exceed [agent] max_frame" in ack["error"]


def test_a_snapshot_over_half_a_frame_is_restored_alone_in_the_first_frame() -> None:
    d, host, _wal = make()
    frames = bytearray()
    host.send_agent_raw = frames.extend
    limit = host.cfg.agent.max_frame
    snapshot = {"blob": b"x" * (limit - 1000)}  # the old limit was half a frame
    entries = [msgpack.packb({"op": i, "pad": b"y" * 1000}) for i in range(3000)]
    d.send_restore(
        {
            "checkpoint_id": "c",
            "lsn": 7,
            "payload": msgpack.packb(snapshot),
            "entries": [PayloadRun.of(8, entries)],
        }
    )
    decoded = FrameDecoder(max_frame=limit).feed(bytes(frames))
    assert decoded[0]["snapshot"] == snapshot and decoded[0]["wal_entries"] == []
    assert decoded[0]["more"] is True and decoded[-1]["more"] is False
    replayed = [e["op"] for m in decoded for e in m["wal_entries"]]
    assert replayed == list(range(3000))
    assert all(m.get("continue") for m in decoded[1:])
    # The tail travels in frames of about 256 KiB of entries, far below half a frame.
    entry_bytes = [sum(len(msgpack.packb(e)) for e in m["wal_entries"]) for m in decoded[1:]]
    assert len(decoded) - 1 == -(-3000 * len(entries[0]) // FRAME_ENTRIES)
    assert all(size <= FRAME_ENTRIES for size in entry_bytes)


# ------------------------------------------------------------------ restore from the WAL


class ChannelWal:
    """The WAL component's answers over a real channel pair (descriptors included)."""

    def __init__(self, manager: WALManager) -> None:
        self.manager = manager
        self.ours, self.theirs = channel_pair()
        self.requests: list[Any] = []

    def call(self, request: Any, timeout: float) -> Any:
        self.requests.append(request)
        value = self.manager.handle_call(request, Caller(self.theirs, len(self.requests)))
        if value is not NOREPLY:
            return value
        messages: list[Any] = []
        while not messages:
            assert self.ours.wait_readable(5)
            messages = self.ours.receive()
        ((_reply, _call_id, ok, answer, fds),) = messages
        assert ok
        return answer, fds

    def close(self) -> None:
        self.manager.store.close()
        self.ours.close()
        self.theirs.close()


@pytest.fixture
def restore_env(tmp_path: Path) -> Iterator[Callable[..., tuple[Durability, Any, ChannelWal]]]:
    made: list[ChannelWal] = []

    def build(checkpoint: dict[str, Any] | None = None, **overrides: Any) -> Any:
        sections = {
            "o_supervisor": {"wal_dir": str(tmp_path / "wal")},
            "wal": {"segment_entries": 5},
            **overrides,
        }
        cfg = load_config(None, "test", cwd=tmp_path, overrides=sections)
        manager = WALManager(cfg)
        manager.store.open()
        wal = ChannelWal(manager)
        made.append(wal)
        vault: Any = types.SimpleNamespace(call=lambda request, timeout: checkpoint)
        host: Any = types.SimpleNamespace(cfg=cfg, instance_id="main", frames=bytearray())
        host.peer = lambda name: wal if name == "wal" else vault
        host.send_agent_raw = host.frames.extend
        return Durability(host, durable=True), host, wal

    yield build
    for wal in made:
        wal.close()


def _entries(first: int, last: int) -> list[bytes]:
    return [
        msgpack.packb({"op": lsn, "pad": "x" * (lsn % 50 + 100)}) for lsn in range(first, last + 1)
    ]


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_restore_reads_every_entry_through_the_descriptors_the_wal_hands_over(
    restore_env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(planning, "_PAGE", 7)  # several pages ...
    monkeypatch.setattr(wal_manager, "MAX_SPANS", 2)  # ... each of at most two segments
    d, _host, wal = restore_env()
    wal.manager.store.append(_entries(1, 23))
    fds_before = _open_fds()
    restore = d.plan()
    assert restore is not None and restore["checkpoint_id"] is None and restore["lsn"] == 0
    assert _open_fds() == fds_before + len(restore["spans"])  # held until the entries are read
    wal.manager.store.truncate_through(10)  # released meanwhile: read through the descriptors
    runs = read_entries(restore)
    assert [p for run in runs for p in run.payloads()] == _entries(1, 23)
    for run in runs:  # a run never crosses a segment: LSNs inside it are consecutive
        assert (run.first_lsn - 1) // 5 == (run.first_lsn + len(run) - 2) // 5
    pages = [r for r in wal.requests if isinstance(r, ReadSpansAfter)]
    assert len(pages) > 23 // 7  # paged, and a reply stops at two segments
    assert d.applied_lsn == 23 and _open_fds() == fds_before  # every descriptor closed

    # LSNs 1..10 are gone now and no checkpoint covers them: refused, descriptors closed.
    with pytest.raises(CallError, match=r"WAL entries 1\.\.10 are missing"):
        d.plan()
    assert _open_fds() == fds_before


def test_a_restart_plan_is_one_call_to_the_vault_and_one_to_the_wal(restore_env: Any) -> None:
    """A restart waits for its plan before the spawn: every round trip is on the clock."""
    d, host, wal = restore_env({"id": "c", "lsn": 2, "payload": msgpack.packb({})})
    asked: list[Any] = []
    vault = host.peer("vault")
    answer = vault.call
    vault.call = lambda request, timeout: asked.append(request) or answer(request, timeout)
    wal.manager.store.append(_entries(1, 4))
    restore = d.plan()
    assert restore is not None and restore["checkpoint_id"] == "c" and d.applied_lsn == 4
    assert len(asked) == 1 and [type(r) for r in wal.requests] == [ReadSpansAfter]
    discard(restore)


def test_a_main_with_nothing_stored_restarts_without_asking_until_it_stores(
    restore_env: Any,
) -> None:
    """Only the manager stores the main's state: once a plan found nothing, the next start
    of a stateless agent makes no call, until an entry or a checkpoint is sent (or an
    operator pins a checkpoint)."""
    d, host, wal = restore_env()
    vault, asked = host.peer("vault"), []
    answer = vault.call
    vault.call = lambda request, timeout: asked.append(request) or answer(request, timeout)
    vault.call_async = wal.call_async = lambda request, callback, timeout: None
    host.standby, host.generation = None, 1

    def calls_of_a_plan() -> int:
        before = len(asked) + len(wal.requests)
        assert d.plan() is None
        return len(asked) + len(wal.requests) - before

    assert calls_of_a_plan() == 2  # the vault, then the WAL
    assert calls_of_a_plan() == 0
    d.log_entry({"op": 1}, ref=1)
    d.flush()  # sent to be stored (this WAL drops it): ask again
    assert [calls_of_a_plan(), calls_of_a_plan()] == [2, 0]
    d._save(b"snapshot", 0)
    assert [calls_of_a_plan(), calls_of_a_plan()] == [2, 0]
    d.pinned = "c"
    assert calls_of_a_plan() == 2 and d.pinned is None


@pytest.mark.parametrize("follower", [False, True], ids=["restart", "standby"])
def test_a_restore_planned_in_the_wake_up_of_an_append_covers_its_entries(
    restore_env: Any, follower: bool
) -> None:
    """The main's last batch and the plan of its successor (or of a new standby) can reach
    the WAL in one wake-up, the batch first: the plan covers it, or its entries would be
    missing from the restore and the next ones numbered wrongly."""
    d, host, wal = restore_env()
    if follower:
        d = Durability(host, durable=False, follower=True)
    wal.manager.store.append(_entries(1, 3))
    main, ours = channel_pair()
    try:
        staged = wal.manager.handle_call(Append(_entries(4, 6)), Caller(ours, 0))
        assert staged is NOREPLY  # written at the end of the wake-up, which has not come yet
        restore = d.plan()
        assert restore is not None and d.applied_lsn == 6
        assert [p for run in read_entries(restore) for p in run.payloads()] == _entries(1, 6)
        wal.manager.after_events()  # nothing left to write twice
        assert wal.manager.store.last_lsn == 6
    finally:
        main.close()
        ours.close()


def test_a_restore_starts_after_the_checkpoint_and_refuses_a_skipped_range(
    restore_env: Any,
) -> None:
    d, _host, wal = restore_env()
    store = wal.manager.store
    store.append(_entries(1, 12))
    store.skip_through(20)  # LSNs 13..20 were never written here
    store.append(_entries(21, 24))
    fds_before = _open_fds()
    with pytest.raises(CallError, match=r"WAL entries 13\.\.20 are missing \(8 entries\)"):
        d.plan()
    assert _open_fds() == fds_before

    checkpoint = {"id": "c", "lsn": 20, "payload": msgpack.packb({"state": 1})}
    d, host, wal = restore_env(checkpoint)
    restore = d.plan()
    assert restore is not None and restore["lsn"] == 20
    assert [p for run in read_entries(restore) for p in run.payloads()] == _entries(21, 24)
    assert d.applied_lsn == 24
    fds_before = _open_fds()
    discard(d.plan() or {})  # a plan never sent gives its descriptors back
    assert _open_fds() == fds_before
    d.send_restore(d.plan() or {})  # reads the entries itself
    assert _open_fds() == fds_before
    decoded = FrameDecoder(max_frame=host.cfg.agent.max_frame).feed(bytes(host.frames))
    assert decoded[0]["snapshot"] == {"state": 1}
    assert [e["op"] for m in decoded for e in m["wal_entries"]] == list(range(21, 25))


def test_restore_frames_fill_up_across_runs_and_keep_the_order(restore_env: Any) -> None:
    d, host, _wal = restore_env(agent={"max_frame": 4096})
    entries = _entries(1, 60)
    runs = [PayloadRun.of(1, entries[:7]), PayloadRun.of(8, []), PayloadRun.of(8, entries[7:])]
    snapshot = msgpack.packb({"blocks": list(range(10))})
    d.send_restore({"checkpoint_id": "c", "lsn": 0, "payload": snapshot, "entries": runs})
    frames = bytes(host.frames)
    decoded = FrameDecoder(max_frame=4096).feed(frames)
    assert len(decoded) > 2
    assert decoded[0]["snapshot"] == {"blocks": list(range(10))}
    assert [e for m in decoded for e in m["wal_entries"]] == [msgpack.unpackb(e) for e in entries]
    assert [m["more"] for m in decoded] == [True] * (len(decoded) - 1) + [False]
    assert all(m.get("continue") for m in decoded[1:])
    offset, sizes = 0, []
    while offset < len(frames):
        (size,) = HEADER.unpack_from(frames, offset)
        sizes.append(size)
        offset += HEADER.size + size
    assert all(size <= 4096 // 2 + 160 for size in sizes)  # half a frame plus the framing
    assert all(m["wal_entries"] for m in decoded[1:])  # no frame after the first is empty
