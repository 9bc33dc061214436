"""The manager's durability bookkeeping in isolation: acknowledgements follow send order."""

from __future__ import annotations

import types
from typing import Any

import pytest

from osup_mp.components.agent.durability import Durability
from osup_mp.components.agent.states import AgentState
from osup_mp.config import load_config

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
    import msgpack

    from osup_mp.wire import FrameDecoder

    d, host, _wal = make()
    frames = bytearray()
    host.send_agent_raw = frames.extend
    limit = host.cfg.agent.max_frame
    snapshot = {"blob": b"x" * (limit - 1000)}  # the old limit was half a frame
    entries = [msgpack.packb({"op": i, "pad": b"y" * 1000}) for i in range(3000)]
    d.send_restore(
        {"checkpoint_id": "c", "lsn": 7, "payload": msgpack.packb(snapshot), "entries": entries}
    )
    decoded = FrameDecoder(max_frame=limit).feed(bytes(frames))
    assert decoded[0]["snapshot"] == snapshot and decoded[0]["wal_entries"] == []
    assert decoded[0]["more"] is True and decoded[-1]["more"] is False
    replayed = [e["op"] for m in decoded for e in m["wal_entries"]]
    assert replayed == list(range(3000))
    assert all(m.get("continue") for m in decoded[1:])
