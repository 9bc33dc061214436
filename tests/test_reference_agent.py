"""The agent SDK's restore hooks and the reference agent's state, in this process (no tree):
a WAL tail applied in bulk must leave exactly the state applying it entry by entry does."""

from __future__ import annotations

import gc
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytest

from osup_mp.agent.reference import MemoryAgent, memory_system
from osup_mp.agent.reference.matrix import EmbeddingMatrix
from osup_mp.agent.sdk import Agent, AgentOptions, RequestError


def vec(seed: int) -> bytes:
    return np.random.default_rng(seed).standard_normal(memory_system.DIM).astype("f4").tobytes()


def add(block_id: str, text: str, embedding: Any = None, **extra: Any) -> dict[str, Any]:
    params = {"id": block_id, "text": text, **extra}
    if embedding is not None:
        params["embedding"] = embedding
    return {"operation": "memory_add", "params": params, "timestamp": 1.0}


def mixed_tail() -> list[dict[str, Any]]:
    """Adds (logged embeddings, computed ones, list ones, metadata), replacements of blocks
    from the checkpoint and from the tail itself, deletes, a tool."""
    tail = [add(f"n{i}", f"new {i}", vec(i)) for i in range(40)]
    tail += [
        add("c1", "replaced checkpoint block", vec(100)),
        add("n3", "replaced in the tail", vec(101), metadata={"k": "v"}),
        add("t1", "no embedding logged: embed the text"),
        add("t2", "embedding as a list", list(np.frombuffer(vec(102), "f4").tolist())),
        {"operation": "memory_delete", "params": {"id": "n5"}, "timestamp": 1.0},
        {"operation": "memory_delete", "params": {"id": "missing"}, "timestamp": 1.0},
        {"operation": "tool_register", "params": {"name": "calc"}, "timestamp": 1.0},
        add("n5", "added again after its delete", vec(103)),
    ]
    tail += [add(f"m{i}", f"more {i}", vec(200 + i)) for i in range(30)]
    return tail


def checkpoint() -> dict[str, Any]:
    return {
        "agent_state": {"operations": 7, "started": 0.0},
        "memory_blocks": [
            {"id": f"c{i}", "text": f"old {i}", "metadata": {}, "embedding": vec(1000 + i)}
            for i in range(5)
        ],
        "tool_registry": {},
    }


def state(agent: MemoryAgent) -> tuple[Any, ...]:
    blocks = [
        (b["id"], b["text"], b["metadata"], b["embedding"].tobytes()) for b in agent.blocks.values()
    ]
    order = list(agent.blocks)
    matrix = agent.matrix.current(agent.blocks)
    assert agent.matrix.order == order  # row i of the matrix is the i-th block
    rows = [agent.blocks[i]["embedding"].tobytes() for i in order]
    assert [row.tobytes() for row in matrix] == rows
    query = np.frombuffer(vec(7), "f4")
    hits = memory_system.search(matrix, query, 5)
    return blocks, agent.tools, agent.operations, [order[i] for i, _ in hits]


def one_by_one(snapshot: Mapping[str, Any] | None, tail: list[dict[str, Any]]) -> MemoryAgent:
    agent = MemoryAgent(AgentOptions())
    agent.restore(snapshot)
    for entry in tail:
        agent.apply_wal(entry)
    return agent


@pytest.mark.parametrize("frame", [1, 3, 17, 1000], ids=lambda n: f"{n} per frame")
def test_a_tail_applied_in_batches_leaves_the_state_one_by_one_does(frame: int) -> None:
    tail = mixed_tail()
    batched = MemoryAgent(AgentOptions())
    batched.restore(checkpoint())
    for start in range(0, len(tail), frame):
        batched.apply_wal_batch(tail[start : start + frame])
    assert state(batched) == state(one_by_one(checkpoint(), mixed_tail()))
    assert all(b["embedding"].flags.writeable for b in batched.blocks.values())


def test_adds_after_a_built_matrix_extend_it_and_a_delete_rebuilds_it() -> None:
    agent = MemoryAgent(AgentOptions())
    agent.restore(checkpoint())
    first = agent.matrix.current(agent.blocks)
    assert first.shape == (5, memory_system.DIM)
    agent.apply_wal_batch([add("a", "a", vec(1)), add("b", "b", vec(2))])
    agent.apply_wal(add("c", "c", vec(3)))
    grown = agent.matrix.current(agent.blocks)
    assert grown.shape == (8, memory_system.DIM) and np.shares_memory(first, grown)  # in place
    assert np.array_equal(grown[:5], first) and agent.matrix.order[5:] == ["a", "b", "c"]
    assert state(agent) == state(
        one_by_one(
            checkpoint(), [add("a", "a", vec(1)), add("b", "b", vec(2)), add("c", "c", vec(3))]
        )
    )
    agent.apply_wal({"operation": "memory_delete", "params": {"id": "c1"}})
    assert agent.matrix.current(agent.blocks).shape == (7, memory_system.DIM)
    assert "c1" not in agent.matrix.order and len(agent.matrix.order) == 7


def test_a_bad_entry_fails_the_batch_after_the_entries_before_it() -> None:
    tail = [add("a", "a", vec(1)), add("b", "b", b"\0" * 8), add("c", "c", vec(3))]
    agent = MemoryAgent(AgentOptions())
    with pytest.raises(RequestError, match="float32"):
        agent.apply_wal_batch(tail)
    assert list(agent.blocks) == ["a"]
    assert agent.blocks["a"]["embedding"].tobytes() == vec(1)
    assert agent.operations == 1
    assert agent.matrix.current(agent.blocks).shape == (1, memory_system.DIM)


class Recorder(Agent):
    def __init__(self) -> None:
        super().__init__(AgentOptions())
        self.calls: list[Any] = []

    def restore(self, snapshot: Mapping[str, Any] | None) -> None:
        self.calls.append(("restore", snapshot))

    def apply_wal(self, entry: Mapping[str, Any]) -> None:
        self.calls.append(("apply", entry["n"]))


class BatchRecorder(Recorder):
    def apply_wal_batch(self, entries: Sequence[Mapping[str, Any]]) -> None:
        self.calls.append(("batch", [e["n"] for e in entries]))


def restore_frames() -> list[dict[str, Any]]:
    return [
        {"type": "restore", "checkpoint_id": "c", "snapshot": {"s": 1}, "more": True,
         "wal_entries": [{"n": 1}, {"n": 2}]},
        {"type": "restore", "continue": True, "more": True, "wal_entries": []},
        {"type": "restore", "continue": True, "more": False, "wal_entries": [{"n": 3}]},
    ]  # fmt: skip


def test_the_default_batch_hook_applies_each_entry_in_order() -> None:
    agent = Recorder()
    for msg in restore_frames():
        agent._on_restore(msg)
    assert agent.calls == [("restore", {"s": 1}), ("apply", 1), ("apply", 2), ("apply", 3)]
    assert agent.ready and agent.checkpoint_id == "c"


def test_an_agent_overriding_the_batch_hook_gets_each_frames_entries_at_once() -> None:
    agent = BatchRecorder()
    for msg in restore_frames():
        agent._on_restore(msg)
    assert agent.calls == [("restore", {"s": 1}), ("batch", [1, 2]), ("batch", [3])]


def test_the_collector_pauses_during_a_restore_and_resumes_at_ready() -> None:
    agent = Recorder()
    assert gc.isenabled()
    try:
        agent._pause_gc()
        assert not gc.isenabled()
        frames = restore_frames()
        agent._on_restore(frames[0])
        assert not gc.isenabled()  # more frames follow
        agent._on_restore(frames[1])
        agent._on_restore(frames[2])
        assert gc.isenabled() and gc.get_freeze_count() > 0  # restored state frozen
    finally:
        gc.enable()
        gc.unfreeze()


def test_an_agent_that_disabled_the_collector_itself_keeps_it_disabled() -> None:
    agent = Recorder()
    gc.disable()
    try:
        agent._pause_gc()
        for msg in restore_frames():
            agent._on_restore(msg)
        assert not gc.isenabled()
    finally:
        gc.enable()


class FakeShm:
    def __init__(self) -> None:
        self.published: list[tuple[int, int]] = []  # (rows, unchanged_rows)

    def publish(self, matrix: Any, *, unchanged_rows: int = 0) -> int:
        self.published.append((len(matrix), unchanged_rows))
        return len(self.published)


def test_the_matrix_grows_in_place_and_publishes_only_what_was_added() -> None:
    m = EmbeddingMatrix(4)
    blocks: dict[str, dict[str, Any]] = {}
    shm = FakeShm()
    buffers = set()
    for n in range(1, 301):
        row = np.full((1, 4), n, dtype=np.float32)
        blocks[f"b{n}"] = {"embedding": row[0]}
        m.append([f"b{n}"], row)
        current = m.current(blocks)
        buffers.add(current.base.__array_interface__["data"][0] if current.base is not None else 0)
        if n % 50 == 0:
            m.publish_to(shm, blocks)
    assert current.shape == (300, 4) and current[:, 0].tolist() == list(range(1, 301))
    assert len(buffers) <= 4  # 64, 128, 256, 512 rows: doubling, not a copy per add
    assert shm.published == [(50, 0), (100, 50), (150, 100), (200, 150), (250, 200), (300, 250)]
    del blocks["b7"]
    m.invalidate()
    m.publish_to(shm, blocks)
    assert shm.published[-1] == (299, 0)  # rows moved: a full publish
    assert m.order == list(blocks)


class SlotShm:
    """The part of a segment a standby touches: its slots (a plain array here)."""

    def __init__(self) -> None:
        from osup_mp.storage.shm.segment import SLOT_DTYPE

        self.slots = np.zeros(4, dtype=SLOT_DTYPE)

    def slot(self, index: int) -> Any:
        return self.slots[index]


def test_a_standby_applies_writes_keeps_its_matrix_built_and_takes_the_main_slot() -> None:
    agent = MemoryAgent(AgentOptions(role="standby", shm_slot=1))
    shm = SlotShm()
    agent.shm, agent._slot = shm, shm.slot(1)
    agent._on_restore({"type": "restore", "snapshot": None, "lsn": 0, "wal_entries": []})
    assert agent.ready and int(shm.slots[1]["applied_lsn"]) == 0
    agent._dispatch({"type": "wal_apply", "lsn": 1, "wal_entries": [add("a", "x", vec(1))]})
    agent._dispatch({"type": "wal_apply", "lsn": 2, "wal_entries": [add("b", "y", vec(2))]})
    assert agent.applied_lsn == 2 and int(shm.slots[1]["applied_lsn"]) == 2
    agent.after_batch()  # a standby builds its matrix now, not at its first request
    assert agent.matrix.order == ["a", "b"] and not agent.matrix._tail
    promoted: list[str] = []
    agent.on_promote = lambda: promoted.append(agent.options.role)  # type: ignore[method-assign]
    agent._dispatch({"type": "promote", "slot": 0})
    assert promoted == ["main"] and agent.options.shm_slot == 0
    agent._heartbeat()
    assert int(shm.slots[0]["hb_counter"]) == 1 and int(shm.slots[1]["hb_counter"]) == 0
    agent._out.clear()
    assert agent.handle_request({"op": "memory_add", "id": "c", "text": "z"}) == {"id": "c"}
    assert b"wal_entry" in agent._out  # the main logs its writes


def test_a_snapshot_too_large_for_a_frame_is_reported_not_fatal() -> None:
    from osup_mp.wire import FrameDecoder

    agent = MemoryAgent(AgentOptions(max_frame=4096))
    agent.apply_wal_batch([add(f"b{i}", "text " * 20, vec(i)) for i in range(40)])
    agent.checkpoint()  # about 18 KB of snapshot: more than a frame holds
    (msg,) = FrameDecoder(max_frame=4096).feed(bytes(agent._out))
    assert msg["type"] == "checkpoint" and msg["data"] is None
    assert "raise [agent] max_frame" in msg["error"]


def test_a_timed_request_is_answered_with_its_handling_time() -> None:
    from osup_mp.wire import FrameDecoder

    agent = MemoryAgent(AgentOptions())
    agent._dispatch({"type": "process_request", "id": 1, "data": {"op": "stats"}, "timed": True})
    agent._dispatch({"type": "process_request", "id": 2, "data": {"op": "stats"}})
    timed, plain = FrameDecoder(max_frame=1 << 20).feed(bytes(agent._out))
    assert timed["id"] == 1 and 0 < timed["took_ms"] < 1000
    assert 0 <= timed["waited_ms"] <= timed["took_ms"]  # its waits for a CPU meanwhile
    assert plain["id"] == 2 and "took_ms" not in plain and "waited_ms" not in plain
