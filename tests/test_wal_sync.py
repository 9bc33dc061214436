"""Unit tests of the WAL's background fdatasync worker (osup_mp.storage.wal.sync)."""

from __future__ import annotations

import errno
import os
import select
import time
from pathlib import Path

import pytest

from osup_mp.storage.wal.sync import BackgroundSync

pytestmark = pytest.mark.unit  # no process started


def wait_finished(sync: BackgroundSync, timeout: float = 5.0) -> list[OSError | None]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        poller = select.poll()
        poller.register(sync.fileno(), select.POLLIN)
        poller.poll(max(0.0, deadline - time.monotonic()) * 1000)
        done = sync.finished()
        if done:
            return done
    raise AssertionError("no sync finished in time")


def test_syncs_a_duplicate_and_closes_it(tmp_path: Path) -> None:
    synced: list[int] = []

    def fdatasync(fd: int) -> None:
        synced.append(os.fstat(fd).st_ino)
        os.fdatasync(fd)

    path = tmp_path / "segment"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    sync = BackgroundSync(fdatasync)
    try:
        os.write(fd, b"record")
        dup = os.dup(fd)
        sync.start(dup)
        assert sync.busy
        assert wait_finished(sync) == [None]
        assert not sync.busy
        assert synced == [os.stat(path).st_ino]
        with pytest.raises(OSError) as closed:
            os.fstat(dup)  # the worker closed its duplicate; ours is still open
        assert closed.value.errno == errno.EBADF
        os.fstat(fd)
        sync.start(os.dup(fd))  # the next one may start once the last finished
        assert wait_finished(sync) == [None]
    finally:
        sync.close()
        os.close(fd)


def test_an_error_is_reported_not_raised_on_the_thread(tmp_path: Path) -> None:
    def failing(fd: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    fd = os.open(tmp_path / "segment", os.O_WRONLY | os.O_CREAT, 0o600)
    sync = BackgroundSync(failing)
    try:
        sync.start(os.dup(fd))
        (error,) = wait_finished(sync)
        assert isinstance(error, OSError) and error.errno == errno.EIO
    finally:
        sync.close()
        os.close(fd)


def test_close_waits_for_the_sync_in_flight(tmp_path: Path) -> None:
    started = []

    def slow(fd: int) -> None:
        started.append(time.monotonic())
        time.sleep(0.2)  # a slow disk: close() must not return before this ends

    fd = os.open(tmp_path / "segment", os.O_WRONLY | os.O_CREAT, 0o600)
    sync = BackgroundSync(slow)
    sync.start(os.dup(fd))
    sync.close()
    assert started and time.monotonic() - started[0] >= 0.2
    os.close(fd)
