"""Run the shipped tree with a fault injected into the WAL's disk I/O.

``python faulty_tree.py CONFIG fsync|write AFTER``: after AFTER successful calls, every
``fdatasync`` fails with EIO (``fsync``) or every ``write`` to a WAL segment fails with
ENOSPC (``write``: a full disk). Only the WAL module's view of ``os`` is replaced, so pipes
and sockets elsewhere are untouched; the tree is otherwise exactly the shipped one.
"""

from __future__ import annotations

import errno
import os
import sys
import types
from pathlib import Path
from typing import Any

from osup_mp.app.tree import run_tree
from osup_mp.config import load_config
from osup_mp.storage.wal import store as wal


def failing(real: Any, after: int, code: int) -> Any:
    calls = 0

    def call(*args: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls > after:
            raise OSError(code, os.strerror(code))
        return real(*args)

    return call


def main() -> int:
    config, what, after = sys.argv[1], sys.argv[2], int(sys.argv[3])
    fake_os = types.SimpleNamespace(**vars(os))
    if what == "fsync":
        fake_os.fdatasync = failing(os.fdatasync, after, errno.EIO)
    else:
        fake_os.write = failing(os.write, after, errno.ENOSPC)
    wal.os = fake_os  # type: ignore[assignment]

    def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)  # the WAL's whole-buffer writes, through the faulty os
        while view:
            view = view[fake_os.write(fd, view) :]

    wal.write_all = write_all  # type: ignore[assignment]
    return run_tree(load_config(Path(config), "test"))


if __name__ == "__main__":
    sys.exit(main())
