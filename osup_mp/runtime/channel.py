"""Framed message channel between processes of the tree.

Every link inside the tree (parent ⇄ component, component ⇄ component) is a duplex pipe —
the Unix ``socketpair`` that ``multiprocessing.Pipe`` is built on — wrapped in a
:class:`Channel` that frames and batches messages itself.

Design decisions:

* Frames are a 4-byte big-endian length plus a pickle. Both ends are processes of the same
  tree (forked from one parent), so pickle is safe here and is the fastest codec for the small
  tuples the runtime sends. Nothing from outside the tree (agents, control clients) ever
  reaches a Channel: those use the strict MessagePack codec in :mod:`osup_mp.wire`.
* The socket is non-blocking and I/O is batched: :meth:`Channel.receive` drains everything the
  kernel holds and returns all complete messages at once, and :meth:`Channel.send` only
  queues; the owner's loop flushes once per wake-up, pickling up to 64 queued messages into
  one frame (a list marks such a batch). A burst of pipelined calls therefore costs one
  read, one write and a pickle per 64 messages, not one of each per message.
* File descriptors travel with ``SCM_RIGHTS`` (the parent hands two components the two ends
  of a fresh pipe). A message sent with :meth:`Channel.send_with_fds` must be a tuple; it is
  received with the list of descriptors appended as its last element.
"""

from __future__ import annotations

import array
import collections
import errno
import os
import pickle
import select
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

_HEADER = struct.Struct(">I")
_READ_SIZE = 256 * 1024
_BATCH = 64  # messages per frame at most
MAX_FDS = 32  # descriptors one message may carry (more would be cut off on receipt)
_ANCILLARY = socket.CMSG_SPACE(MAX_FDS * array.array("i").itemsize)
MAX_MESSAGE = 64 * 1024 * 1024


class ChannelClosed(ConnectionError):
    """The other end of the channel is gone."""


def channel_pair() -> tuple[Channel, Channel]:
    """Two connected channels: the ``socketpair`` a duplex ``multiprocessing.Pipe`` is made of."""
    a, b = socket.socketpair()
    return Channel(a), Channel(b)


class Channel:
    """One end of a framed, batched, non-blocking message pipe."""

    __slots__ = (
        "_consumed",
        "_fd_marks",
        "_fileno",
        "_in",
        "_out",
        "_out_base",
        "_out_fds",
        "_queued",
        "_rbuf",
        "_rview",
        "closed",
        "on_output",
        "sock",
    )

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.closed = False
        # (stream offset where the frame carrying them ends, fds): Linux ends a read at a
        # message that carried descriptors, so they belong to the frame ending there.
        self._fd_marks: collections.deque[tuple[int, list[int]]] = collections.deque()
        self._consumed = 0
        self._out = bytearray()
        self._out_base = 0  # stream offset of _out[0]
        # Frames waiting to carry descriptors: (stream offset, length, our copies of them).
        self._out_fds: collections.deque[tuple[int, int, list[int]]] = collections.deque()
        self._in = bytearray()
        self._queued: list[Any] = []
        self._rbuf = bytearray(_READ_SIZE)
        self._rview = memoryview(self._rbuf)
        self._fileno = sock.fileno()
        # Called when output starts waiting for a flush: the owner's loop then flushes
        # this channel, not every channel it has, after each wake-up.
        self.on_output: Callable[[Channel], object] | None = None

    @classmethod
    def from_fd(cls, fd: int) -> Channel:
        return cls(socket.socket(fileno=fd))

    def fileno(self) -> int:
        return self._fileno

    # -- sending -----------------------------------------------------------------------------

    def send(self, msg: Any) -> None:
        """Queue ``msg``; it leaves on the next :meth:`flush`."""
        if not self._queued and self.on_output is not None:
            self.on_output(self)
        self._queued.append(msg)

    def _frame_queued(self) -> None:
        # Everything queued since the last flush travels as one frame: one pickle and one
        # unpickle for a whole burst instead of one per message. A list marks a batch
        # (messages themselves are tuples).
        queued, self._queued = self._queued, []
        for start in range(0, len(queued), _BATCH):  # bounded, so a peer can start early
            chunk = queued[start : start + _BATCH]
            payload = chunk[0] if len(chunk) == 1 else chunk
            data = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
            self._out += _HEADER.pack(len(data))
            self._out += data

    @property
    def pending_output(self) -> bool:
        return bool(self._out) or bool(self._queued)

    @property
    def backlog(self) -> int:
        """Bytes framed but not yet taken by the socket (a peer that does not read)."""
        return len(self._out)

    def flush(self) -> bool:
        """Write as much queued output as the socket takes; True when all of it left."""
        if self._queued:
            self._frame_queued()
        while self._out:
            try:
                n = self._send_some()
            except BlockingIOError:
                return False
            except OSError as exc:
                self._mark_closed()
                if exc.errno in (errno.EPIPE, errno.ECONNRESET):
                    return True
                raise
            del self._out[:n]
            self._out_base += n
        return True

    def _send_some(self) -> int:
        """One write: up to the next frame with descriptors, or that frame with them (alone,
        so that the receiver's read ends with it: see ``_fd_marks``)."""
        if not self._out_fds:
            return self.sock.send(self._out)
        start, length, fds = self._out_fds[0]
        if start > self._out_base:
            return self.sock.send(self._out[: start - self._out_base])
        anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())]
        n = self.sock.sendmsg([self._out[:length]], anc)
        self._out_fds.popleft()  # sent with the first byte; the rest of the frame follows
        for fd in fds:
            os.close(fd)
        return n

    def flush_blocking(self, timeout: float | None = None) -> None:
        """Flush everything, waiting for buffer space (used on control paths only)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.flush():
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError("channel flush timed out")
            self._wait(select.POLLOUT, remaining)

    def send_now(self, msg: Any) -> None:
        self.send(msg)
        self.flush_blocking()

    def send_with_fds(self, msg: Any, fds: list[int]) -> bool:
        """Queue ``msg`` with ``fds`` attached (SCM_RIGHTS), after what is queued, and write
        what the socket takes now; the rest leaves with the next :meth:`flush`, never
        waited for here. The caller keeps its descriptors (the channel sends copies). False
        if the peer is known gone (its process died, perhaps not yet reaped)."""
        if len(fds) > MAX_FDS:
            raise ValueError(f"{len(fds)} descriptors in one message: at most {MAX_FDS}")
        if self.closed:
            return False
        if self._queued:
            self._frame_queued()
        data = pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
        frame = _HEADER.pack(len(data)) + data
        copies = [os.dup(fd) for fd in fds]
        self._out_fds.append((self._out_base + len(self._out), len(frame), copies))
        self._out += frame
        if not self.flush() and self.on_output is not None:
            self.on_output(self)  # the rest leaves when the owner's loop flushes
        return not self.closed

    # -- receiving ---------------------------------------------------------------------------

    def receive(self) -> list[Any]:
        """Everything that has arrived, decoded; sets :attr:`closed` at EOF."""
        while not self.closed:
            try:
                # Into one reused buffer: a fresh 256 KiB bytes per read would cost an
                # mmap/munmap pair on every message.
                size, anc, _flags, _addr = self.sock.recvmsg_into([self._rbuf], _ANCILLARY)
            except BlockingIOError:
                break
            except (ConnectionResetError, OSError):
                self._mark_closed()
                break
            if not size:
                self._mark_closed()
                break
            self._in += self._rview[:size]
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds = array.array("i")
                    fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
                    self._fd_marks.append((self._consumed + len(self._in), list(fds)))
            if size < _READ_SIZE and not anc:
                break  # drained: skip the extra recv that would only say EAGAIN
        return self._decode()

    def _decode(self) -> list[Any]:
        buf = self._in
        out: list[Any] = []
        pos = 0
        end = len(buf)
        with memoryview(buf) as view:  # frames are unpickled in place, not copied out first
            while end - pos >= 4:
                (size,) = _HEADER.unpack_from(buf, pos)
                if size > MAX_MESSAGE:
                    raise ValueError(f"channel frame of {size} bytes exceeds {MAX_MESSAGE}")
                if end - pos - 4 < size:
                    break
                msg = pickle.loads(view[pos + 4 : pos + 4 + size])
                pos += 4 + size
                if type(msg) is list:  # a batch of messages queued together
                    out.extend(msg)
                    continue
                marks = self._fd_marks
                if marks and marks[0][0] <= self._consumed + pos:
                    # Descriptors ride on tuple messages and arrive appended as a last element.
                    msg = (*msg, marks.popleft()[1])
                out.append(msg)
        if pos:
            del buf[:pos]
            self._consumed += pos
        return out

    def wait_readable(self, timeout: float | None) -> bool:
        return self._wait(select.POLLIN, timeout)

    def _wait(self, events: int, timeout: float | None) -> bool:
        # poll, not select: select() fails for descriptors above 1023.
        poller = select.poll()
        poller.register(self._fileno, events)
        return bool(poller.poll(None if timeout is None else max(0.0, timeout) * 1000))

    # -- lifecycle ---------------------------------------------------------------------------

    def _mark_closed(self) -> None:
        self.closed = True

    def close(self) -> None:
        self.closed = True
        for fds in [f for _end, f in self._fd_marks] + [f for _s, _n, f in self._out_fds]:
            for fd in fds:
                os.close(fd)
        self._fd_marks.clear()
        self._out_fds.clear()
        self.sock.close()
