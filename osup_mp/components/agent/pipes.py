"""The byte side of talking to one agent: frames on stdin/stdout, lines on stderr.

:class:`AgentPipes` holds the decoder, the output buffer and the stderr line buffer of the
current agent process and does the non-blocking reads and writes; the manager decides what
the frames mean and when to call it. A new agent process gets :meth:`AgentPipes.reset`.

Heartbeat frames of the SDK's exact shape are counted, not decoded, when a read holds many
of them (:data:`HEARTBEAT_PREFIX`): an agent flooding heartbeats then costs the manager a
byte comparison per frame instead of a decode, and the manager stamps the slot once per read.
"""

from __future__ import annotations

import fcntl
import os
import struct
from collections import deque
from typing import Any

import msgpack

from osup_mp.wire import FrameDecoder, FrameError, pack
from osup_mp.wire.frames import FromAgent

_READ = 256 * 1024
# One read buffer for every agent's pipe in the process (reads are one at a time, and what
# is read is copied out before the next): a new AgentPipes, on the path of a promotion,
# then costs nothing, where a fresh 256 KiB buffer took 70-160 us to allocate and zero.
_SCRATCH = bytearray(_READ)
_SCRATCH_VIEW = memoryview(_SCRATCH)
# stderr is read with os.read: a smaller size, as each call allocates that much first.
_STDERR_READ = 64 * 1024
_HEADER = struct.Struct(">I")
# {"type": "heartbeat", "timestamp": <float64>} as the SDK packs it: everything but the float.
_HB_BODY = msgpack.packb({"type": str(FromAgent.HEARTBEAT), "timestamp": 0.0})
HEARTBEAT_PREFIX = _HEADER.pack(len(_HB_BODY)) + _HB_BODY[:-8]
_HB_SIZE = _HEADER.size + len(_HB_BODY)
_HB_MARK = _HB_BODY[:-8]
# A read holding at least this many heartbeats is filtered before decoding.
_HB_FILTER_FROM = 64


# The agent's stdin pipe is widened to this (the default 64 KiB would take a restore's
# megabytes in as many wake-ups of both processes as it has 64 KiB pieces).
PIPE_SIZE = 1 << 20


def widen_pipe(fd: int, size: int = PIPE_SIZE) -> int:
    """Make the pipe ``fd`` hold ``size`` bytes where the kernel allows it (Linux: up to
    ``/proc/sys/fs/pipe-max-size`` unprivileged); return its capacity now."""
    try:
        return fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, size)
    except OSError:
        try:
            return fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ)
        except OSError:
            return 0


class AgentPipes:
    def __init__(self, max_frame: int) -> None:
        self.max_frame = max_frame
        self.decoder = FrameDecoder(max_frame=max_frame, require_type=True)
        self.out = bytearray()
        self._err = bytearray()
        self.stderr_tail: deque[str] = deque(maxlen=5)
        self.heartbeats = 0  # heartbeat frames counted (not decoded) since the manager looked

    def queue(self, msg: dict[str, Any]) -> None:
        # Not re-walked: request data came out of the strict decoder (control/data plane).
        self.out += pack(msg, max_frame=self.max_frame, strict=False)

    def write(self, fd: int) -> bool:
        """Write what the pipe takes; True while output remains (watch ``fd`` for writing)."""
        try:
            del self.out[: os.write(fd, self.out)]
        except BlockingIOError:
            pass
        except OSError:
            self.out.clear()  # the agent is gone; its exit is on the way
        return bool(self.out)

    def read_frames(self, fd: int) -> tuple[list[dict[str, Any]], str | None, bool]:
        """Everything readable as frames: ``(messages, malformed frame error, at EOF)``."""
        messages: list[dict[str, Any]] = []
        while True:
            try:
                size = os.readv(fd, [_SCRATCH])  # shared buffer: no 256 KiB bytes per read
            except BlockingIOError:
                return messages, None, False
            except OSError:
                size = 0
            if not size:
                return messages, None, True
            try:
                messages += self._feed(size)
            except FrameError as exc:
                return messages + getattr(exc, "messages", []), str(exc), True
            if size < _READ:
                return messages, None, False

    def _feed(self, size: int) -> list[dict[str, Any]]:
        buf = _SCRATCH
        if buf.count(_HB_MARK, 0, size) < _HB_FILTER_FROM:
            return self.decoder.feed(_SCRATCH_VIEW[:size])
        # A heartbeat flood: walk the frames, count heartbeats, decode only the others.
        out: list[dict[str, Any]] = []
        pos = 0
        if not self.decoder.at_boundary:
            # First complete the frame the decoder holds part of (its header says how much).
            held = bytes(self.decoder._buf[: _HEADER.size])
            head = held + bytes(_SCRATCH_VIEW[: _HEADER.size - len(held)])
            if len(head) < _HEADER.size:
                return self.decoder.feed(_SCRATCH_VIEW[:size])
            pos = _HEADER.size + _HEADER.unpack(head)[0] - self.decoder.buffered
            if pos > size:
                return self.decoder.feed(_SCRATCH_VIEW[:size])
            out = self.decoder.feed(_SCRATCH_VIEW[:pos])
        keep = bytearray()
        limit = self.max_frame
        beats = 0
        while size - pos >= _HEADER.size:
            if size - pos >= _HB_SIZE and buf.startswith(HEARTBEAT_PREFIX, pos):
                beats += 1
                pos += _HB_SIZE
                continue
            (length,) = _HEADER.unpack_from(buf, pos)
            end = pos + _HEADER.size + length
            if not 0 < length <= limit or end > size:
                break  # bad or incomplete: the decoder judges it with the rest
            keep += _SCRATCH_VIEW[pos:end]
            pos = end
        self.heartbeats += beats
        keep += _SCRATCH_VIEW[pos:size]
        return out + self.decoder.feed(keep)

    def read_stderr(self, fd: int | None, *, final: bool = False) -> tuple[list[str], bool]:
        """Complete lines the agent wrote to stderr (and the partial last one when final),
        and whether it is at EOF."""
        eof = False
        if fd is not None:
            try:
                while chunk := os.read(fd, _STDERR_READ):
                    self._err += chunk
                eof = True
            except BlockingIOError:
                pass
            except OSError:
                eof = True
        *lines, rest = self._err.split(b"\n")
        self._err = bytearray(rest)
        if final and rest:
            lines.append(rest)
            self._err.clear()
        texts = [line.decode("utf-8", "replace") for line in lines]
        self.stderr_tail.extend(texts)
        return texts, eof

    def truncated(self) -> str | None:
        """Why the stream ended badly at EOF: in the middle of a frame (to follow how the
        agent exited)."""
        d = self.decoder
        if d.broken or d.at_boundary:
            return None
        return f"in the middle of a frame ({d.buffered} bytes of it received): truncated frame"
