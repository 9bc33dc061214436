"""fdatasync on a worker thread, so the WAL manager writes the next group while one syncs.

Group commit with one thread is a stop-and-go cycle: write a group, block in ``fdatasync``
while appends pile up unread, answer, read the next group. With the sync on a worker thread
the WAL manager's loop keeps reading and writing appends while the disk works, and each sync
covers everything written before it started — the pipelined group commit of database WAL
writers.

Design decisions: the thread only calls ``fdatasync`` on a duplicate of the segment's
descriptor (so the loop may roll over to a new segment and close the old one meanwhile) and
reports through a pipe the loop watches; it never logs, never touches the component's state,
and is started in the component's own process, after the fork.
"""

from __future__ import annotations

import collections
import os
import queue
import threading
from collections.abc import Callable


class BackgroundSync:
    """One worker thread; one sync at a time, started by :meth:`start`."""

    def __init__(self, fdatasync: Callable[[int], None]) -> None:
        self._fdatasync = fdatasync
        self._requests: queue.SimpleQueue[int | None] = queue.SimpleQueue()
        self._results: collections.deque[OSError | None] = collections.deque()
        self._done_r, self._done_w = os.pipe()
        os.set_blocking(self._done_r, False)
        self.busy = False
        self._thread = threading.Thread(target=self._run, name="wal-fdatasync", daemon=True)
        self._thread.start()

    def fileno(self) -> int:
        """Readable when a sync has finished: call :meth:`finished`."""
        return self._done_r

    def start(self, fd: int) -> None:
        """fdatasync ``fd`` (a duplicate the worker closes) on the worker thread."""
        assert not self.busy, "one sync at a time"
        self.busy = True
        self._requests.put(fd)

    def finished(self) -> list[OSError | None]:
        """The outcome of each sync finished since the last call (None: it succeeded)."""
        try:
            while os.read(self._done_r, 64):
                pass
        except BlockingIOError:
            pass
        out: list[OSError | None] = []
        while self._results:
            out.append(self._results.popleft())
        if out:
            self.busy = False
        return out

    def close(self) -> None:
        """Wait for the sync in flight, stop the worker, close the pipe."""
        self._requests.put(None)
        self._thread.join()
        os.close(self._done_r)
        os.close(self._done_w)

    def _run(self) -> None:
        while (fd := self._requests.get()) is not None:
            error: OSError | None = None
            try:
                self._fdatasync(fd)
            except OSError as exc:
                error = exc
            finally:
                os.close(fd)
            self._results.append(error)
            os.write(self._done_w, b"\0")
