"""Verifying a WAL's segments at open: each by its index file when that matches the image
(:mod:`.sidecar`), else record by record; a large log's newer half in a forked helper.

Decision: the helper is a plain fork that only reads files and writes its findings to a
pipe; any failure of it leaves its segments to the caller, which verifies them itself.
"""

from __future__ import annotations

import array
import os
import pickle
import signal
import zlib
from pathlib import Path

from osup_mp.lowlevel.files import write_all
from osup_mp.storage.wal import sidecar
from osup_mp.storage.wal.records import SegmentIndex, index_segment


def verified_index(path: Path, data: bytes, first_lsn: int, sealed: bool) -> SegmentIndex:
    """:func:`index_segment`, or for a sealed segment its index file when that matches the
    image exactly (:mod:`.sidecar`); a sealed segment verified intact gets one."""
    if sealed:
        offsets = sidecar.read(path, first_lsn, data)
        if offsets is not None:
            return SegmentIndex(offsets, len(data), None, False)
    found = index_segment(data, first_lsn)
    if sealed and found.problem is None:
        sidecar.write(path, first_lsn, zlib.crc32(data), len(data), found.offsets)
    return found


class VerifyHelper:
    """:func:`index_segment` for some segments (index ``first`` on) in a forked process.
    The child only reads the files, verifies and writes its results to a pipe; any failure
    of it (or of reading its answer) leaves those segments to the caller."""

    def __init__(self, first: int, jobs: list[tuple[Path, int, bool]]) -> None:
        self.first = first
        self.pid = 0
        self.fd = -1
        self._results: list[SegmentIndex] | None = None
        self._taken = False
        self._status = -1  # the helper's exit status once reaped
        try:
            r, w = os.pipe()
        except OSError:
            return
        try:
            pid = os.fork()
        except OSError:
            os.close(r)
            os.close(w)
            return
        if pid == 0:  # the helper: nothing of the parent's is touched, nothing else runs
            code = 1
            try:
                os.close(r)
                out = []
                for path, lsn, sealed in jobs:
                    found = verified_index(path, path.read_bytes(), lsn, sealed)
                    out.append(
                        (found.offsets.tobytes(), found.good_end, found.problem, found.valid_after)
                    )
                write_all(w, pickle.dumps(out, pickle.HIGHEST_PROTOCOL))
                code = 0
            finally:
                os._exit(code)
        os.close(w)
        self.pid, self.fd = pid, r

    def result(self, index: int) -> SegmentIndex | None:
        """What the helper found for segment ``index`` (None: verify it yourself)."""
        if index < self.first:
            return None
        if not self._taken:
            self._taken = True
            self._results = self._collect()
        if self._results is None:
            return None
        return self._results[index - self.first]

    def _collect(self) -> list[SegmentIndex] | None:
        if self.pid == 0:
            return None
        chunks = []
        try:
            while chunk := os.read(self.fd, 1 << 20):
                chunks.append(chunk)
        except OSError:
            return None
        finally:
            self.close()
        if self._status != 0:
            return None
        out = []
        for raw, good_end, problem, valid_after in pickle.loads(b"".join(chunks)):
            offsets: array.array[int] = array.array("Q")
            offsets.frombytes(raw)
            out.append(SegmentIndex(offsets, good_end, problem, valid_after))
        return out

    def close(self) -> None:
        """Stop the helper if it still runs, and reap it."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self.pid:
            pid, self.pid = self.pid, 0
            _pid, status = os.waitpid(pid, os.WNOHANG)
            if _pid == 0:  # still verifying: its answer is no longer wanted
                os.kill(pid, signal.SIGKILL)
                _pid, status = os.waitpid(pid, 0)
            self._status = os.waitstatus_to_exitcode(status)
