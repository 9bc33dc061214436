"""Fault matrix: the disk fills up during writes.

The WAL and the checkpoints live on a small tmpfs with a filler file on it. Writes go on
until the disk is full: the tree must stop with a clear reason and lose nothing it
acknowledged; once the filler is removed it starts again with every acknowledged write.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import wait_for

from osup_mp.client import ClientError

pytestmark = pytest.mark.faults

SIZE_MB = 24
FILLER_MB = 6


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SIZE_MB}m,mode=0700", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_stops_the_tree_and_loses_nothing(make_tree, small_disk: Path) -> None:
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (FILLER_MB << 20))
    tree = make_tree(
        o_supervisor={
            "wal_dir": str(small_disk / "wal"),
            "checkpoint_dir": str(small_disk / "checkpoints"),
        },
        vault={"checkpoint_wal_entries": 0},
        wal={"segment_bytes": 1 << 20},
    ).start()
    acked: list[str] = []
    text = "x" * (60 << 10)
    with tree.data_client(timeout=20) as client:
        for i in range(2000):  # 2000 x 60 KiB: far more than the disk holds
            try:
                client.request("request", data={"op": "memory_add", "id": f"b{i}", "text": text})
            except ClientError:
                break
            acked.append(f"b{i}")
    assert 10 < len(acked) < 2000
    assert tree.proc is not None
    assert tree.wait_exit(30) == 1  # it stops itself, and says why
    log = tree.log_text
    assert "No space left on device" in log
    assert "CRITICAL" in log

    filler.unlink()  # the operator frees space
    tree.start()
    wait_for(tree.running_agent, 30, what="agent restored")
    stats = tree.agent_request({"op": "stats"})
    assert stats["blocks"] >= len(acked)  # nothing acknowledged lost (one more may be there)
    with tree.data_client(timeout=20) as client:
        for block in acked:
            assert client.request("request", data={"op": "memory_get", "id": block})["text"] == text
        client.request("request", data={"op": "memory_add", "id": "after", "text": "ok"})
