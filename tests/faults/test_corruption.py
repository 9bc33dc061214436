"""Fault matrix: corruption at random offsets of WAL segments and checkpoint files.

A tree writes a known set of acknowledged blocks with two checkpoints among them and
stops. For each seed a copy of its data gets one byte flipped at a random offset of a
random WAL segment or checkpoint file (for a checkpoint, its cache copy is dropped half
the time, so the file alone must serve). The start must then either refuse with one line
naming the file and offset (or the missing entries), or restore every acknowledged block:
never run with a silent gap. CI runs 12 seeds; ``OSUP_SOAK=1`` runs 100.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import pytest
from support import Tree, wait_for

from osup_mp.storage.checkpoints.store import CheckpointStore

pytestmark = [
    pytest.mark.faults,
    pytest.mark.timeout(1800 if os.environ.get("OSUP_SOAK") == "1" else 300),
]

SEEDS = 100 if os.environ.get("OSUP_SOAK") == "1" else 12
BLOCKS = 240


def _write(tree: Tree, start: int, stop: int) -> None:
    with tree.data_client(timeout=20) as client:
        for i in range(start, stop):
            client.send("request", data={"op": "memory_add", "id": f"b{i}", "text": f"t{i}"})
        assert all(client.receive()["ok"] for _ in range(start, stop))


def _holds_every_block(tree: Tree, where: str) -> None:
    with tree.data_client(timeout=20) as client:
        blocks = client.request("request", data={"op": "stats"})["blocks"]
        assert blocks == BLOCKS, f"{where}: {blocks} blocks restored"
        sent = {
            client.send("request", data={"op": "memory_get", "id": f"b{i}"}): i
            for i in range(BLOCKS)
        }
        for _ in range(BLOCKS):
            reply = client.receive()
            i = sent[reply["id"]]
            assert reply["ok"] and reply["data"]["text"] == f"t{i}", f"{where}: b{i}: {reply}"


def test_random_corruption_is_refused_or_fully_restored(make_tree) -> None:
    tree = make_tree(
        wal={"segment_entries": 40},
        vault={"checkpoint_wal_entries": 0, "generations": 2},
    ).start()
    _write(tree, 0, 80)
    tree.request("checkpoint_create")
    _write(tree, 80, 160)
    tree.request("checkpoint_create")
    _write(tree, 160, BLOCKS)
    tree.stop()
    o = tree.cfg.o_supervisor
    pristine = Path(str(o.wal_dir) + ".pristine"), Path(str(o.checkpoint_dir) + ".pristine")
    shutil.copytree(o.wal_dir, pristine[0])
    shutil.copytree(o.checkpoint_dir, pristine[1])
    outcomes: dict[str, int] = {"refused": 0, "restored": 0}
    for seed in range(SEEDS):
        rng = random.Random(seed)
        for live, saved in zip((o.wal_dir, o.checkpoint_dir), pristine, strict=True):
            shutil.rmtree(live)
            shutil.copytree(saved, live)
        files = sorted(Path(o.wal_dir).glob("wal-*.log")) + sorted(
            (Path(o.checkpoint_dir) / "files").glob("*.ckpt")
        )
        victim = rng.choice(files)
        data = bytearray(victim.read_bytes())
        offset = rng.randrange(len(data))
        data[offset] ^= rng.randrange(1, 256)
        victim.write_bytes(bytes(data))
        if victim.suffix == ".ckpt" and rng.random() < 0.5:
            store = CheckpointStore(Path(o.checkpoint_dir), 2)
            store.cache.delete(victim.stem)
            store.close()
        where = f"seed {seed}: byte {offset} of {victim.name}"
        out = tree.cli("start", "--daemon")
        if out.returncode != 0:
            lines = out.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("osup-mp: "), (where, out.stderr)
            assert (victim.name in lines[0] and "offset" in lines[0]) or "missing" in lines[0], (
                where,
                lines[0],
            )
            outcomes["refused"] += 1
            continue
        try:
            wait_for(tree.running_agent, 30, what="agent running")
            _holds_every_block(tree, where)
        finally:
            tree.stop()
        outcomes["restored"] += 1
    print(f"\ncorruption over {SEEDS} seeds: {outcomes}")
