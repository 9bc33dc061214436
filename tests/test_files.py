"""Durable file writes (lowlevel.files)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from osup_mp.lowlevel.files import atomic_write, write_all

pytestmark = pytest.mark.unit  # no process started


def test_atomic_write_replaces_the_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "file"
    atomic_write(target, b"old")
    atomic_write(target, b"new" * 1000)
    assert target.read_bytes() == b"new" * 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
    assert target.stat().st_mode & 0o777 == 0o600


def test_write_all_finishes_a_write_the_pipe_takes_in_parts() -> None:
    r, w = os.pipe()
    data = os.urandom(3 * 65536 + 17)  # more than a pipe buffer: several partial writes
    got = bytearray()

    def drain() -> None:
        while chunk := os.read(r, 1 << 16):
            got.extend(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    try:
        write_all(w, data)
    finally:
        os.close(w)
        reader.join(10)
        os.close(r)
    assert bytes(got) == data
