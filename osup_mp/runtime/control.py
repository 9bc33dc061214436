"""The control socket: the parent's command endpoint for the CLI and client library.

A Unix stream socket in the run dir, mode 0600. The same server class serves the agent
manager's data-plane socket, with other handlers. Each request is one frame of the wire codec
(:mod:`osup_mp.wire`): ``{"id": int, "command": str, "args": map}``; each answer is
``{"id", "ok": true, "data"}`` or ``{"id", "ok": false, "error"}``. Many requests may be in
flight on one connection; handlers may answer later (``status`` waits for telemetry).

Design decisions: the server lives in the supervisor's loop (a registered reader), so it
never delays reaping; peers are checked with ``SO_PEERCRED`` and only the tree's own uid (and
root) is served; input is untrusted — bounded frames, strict decoding, and any error in a
handler becomes an error reply, never a crash of the parent.

No client can stall the loop that serves it:

* Writes never block. What the socket does not take stays queued and the socket is watched
  for writability; a connection whose unread answers pass ``MAX_PENDING_OUTPUT`` (or twice
  the frame limit, if larger) is dropped with one log line naming the peer's pid.
* Requests in flight per connection are bounded (``max_in_flight``): at the bound the server
  stops reading that connection (back-pressure through the socket buffer) until answers
  drain; a dropped connection's late answers are discarded.
* A connection holding part of a frame for more than ``PARTIAL_FRAME_TIMEOUT`` seconds is
  dropped and logged.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from loguru import logger

from osup_mp.wire import FrameDecoder, FrameError, pack
from osup_mp.wire.api import Command

Respond = Callable[[bool, Any], None]
Handler = Callable[[dict[str, Any], Respond], None]
# A hot-path handler answers through ``connection.answer(request_id, ok, value)`` itself, so
# no closure is made per request (the data plane's ``request``).
DirectHandler = Callable[["Connection", Any, dict[str, Any]], None]
Callback = Callable[[], None]
# ``watch(sock, on_readable, on_writable)``: what the loop runs when; None stops that side.
Watch = Callable[[socket.socket, Callback | None, Callback | None], None]

_UCRED = struct.Struct("3i")
_READ_SIZE = 65536
#: Unread answers queued for one client beyond which it is dropped (at least 2 * max_frame).
MAX_PENDING_OUTPUT = 8 * 1024 * 1024
#: Requests of one connection in flight before the server stops reading from it.
MAX_IN_FLIGHT = 1024
#: Seconds a connection may hold an incomplete frame before it is dropped.
PARTIAL_FRAME_TIMEOUT = 10.0


def peer_uid_allowed(uid: int, own_uid: int | None = None) -> bool:
    """Only the tree's own user, or root, may drive it."""
    own = os.getuid() if own_uid is None else own_uid
    return uid in (own, 0)


class ControlServer:
    """Listens on ``path`` and dispatches commands to ``handlers``."""

    def __init__(
        self,
        path: Path,
        handlers: dict[str, Handler],
        *,
        max_frame: int,
        direct: dict[str, DirectHandler] | None = None,
        commands: Mapping[str, Command] | None = None,
        label: str = "control",
        max_in_flight: int = MAX_IN_FLIGHT,
        max_pending_output: int = MAX_PENDING_OUTPUT,
        partial_frame_timeout: float = PARTIAL_FRAME_TIMEOUT,
    ) -> None:
        self.path = path
        self.handlers = handlers
        self.direct = direct or {}
        # Declarations (osup_mp.wire.api) the arguments of non-direct commands are checked
        # against before their handler runs.
        self.commands = commands or {}
        self.max_frame = max_frame
        self.label = label  # names the socket in log lines: "control", "data-plane (…)"
        self.max_in_flight = max_in_flight
        self.max_pending_output = max(max_pending_output, 2 * max_frame)
        self.partial_frame_timeout = partial_frame_timeout
        self._conns: dict[int, Connection] = {}
        self._dirty: set[Connection] = set()
        self._watch: Watch | None = None
        #: Called with each connection as it closes (its pending requests can be cancelled).
        self.on_close: Callable[[Connection], None] | None = None
        self._next_sweep = 0.0
        self._accepts_paused_until = 0.0  # out of descriptors: accepting resumes then
        path.unlink(missing_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)  # created 0600: no window where others could connect
        try:
            sock.bind(str(path))
        finally:
            os.umask(old_umask)
        self._bound = _identity(path)
        sock.listen(socket.SOMAXCONN)  # clients also retry a full backlog (client.py)
        sock.setblocking(False)
        self.sock = sock

    def attach(self, watch: Watch) -> None:
        """Hook into a loop (see :data:`Watch`)."""
        self._watch = watch
        watch(self.sock, self._accept, None)

    def flush(self) -> None:
        """Write every queued reply: one write per connection per loop wake-up. Also drops,
        about once a second, connections that sat on part of a frame for too long."""
        while self._dirty:
            self._dirty.pop().flush()
        if self._accepts_paused_until and time.monotonic() >= self._accepts_paused_until:
            self._accepts_paused_until = 0.0
            if self._watch is not None:
                self._watch(self.sock, self._accept, None)
        if self._conns:
            now = time.monotonic()
            if now >= self._next_sweep:
                self._next_sweep = now + 1.0
                self._sweep(now)

    def next_deadline(self) -> float | None:
        """Seconds until :meth:`flush` should run again to sweep stalled connections."""
        now = time.monotonic()
        if self._accepts_paused_until:
            return max(0.0, self._accepts_paused_until - now)
        if not any(c.partial_since for c in self._conns.values()):
            return None
        return max(0.0, self._next_sweep - now)

    def _sweep(self, now: float) -> None:
        limit = self.partial_frame_timeout
        for conn in list(self._conns.values()):
            if conn.partial_since and now - conn.partial_since > limit:
                conn.drop(
                    "stalled",
                    f"{conn.decoder.buffered} bytes of an incomplete frame for more than "
                    f"{limit:g}s",
                )

    def close(self) -> None:
        """Close every socket (used in forked children too: the file stays)."""
        for conn in list(self._conns.values()):
            conn.sock.close()
        self._conns.clear()
        self.sock.close()

    def shutdown(self) -> None:
        """Close and remove the socket file (the parent, at exit) unless it is no longer the
        one we bound: a successor may have bound the path already."""
        self.close()
        if _identity(self.path) == self._bound:
            self.path.unlink(missing_ok=True)

    def _accept(self) -> None:
        while True:
            try:
                sock, _addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                if exc.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    raise
                # Out of descriptors: the listening socket stays readable, so retrying at
                # once would spin. Stop watching it for a second (clients wait in the backlog).
                logger.warning(
                    "{}: cannot accept a connection ({}): pausing accepts for 1 s",
                    self.label,
                    exc.strerror,
                )
                self._accepts_paused_until = time.monotonic() + 1.0
                if self._watch is not None:
                    self._watch(self.sock, None, None)
                return
            pid, uid, _gid = _UCRED.unpack(
                sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
            )
            conn = Connection(self, sock, pid)
            if not peer_uid_allowed(uid):
                logger.warning("{}: refused connection from pid {} uid {}", self.label, pid, uid)
                conn.send({"id": None, "ok": False, "error": "permission denied"})
                conn.flush()
                self._dirty.discard(conn)
                sock.close()
                continue
            sock.setblocking(False)
            self._conns[sock.fileno()] = conn
            conn.rewatch()

    def _drop(self, conn: Connection) -> None:
        self._dirty.discard(conn)
        if self._conns.pop(conn.fd, None) is not None and self._watch is not None:
            self._watch(conn.sock, None, None)
        conn.sock.close()
        if self.on_close is not None and conn.in_flight > 0:
            self.on_close(conn)


class Connection:
    """One client; see the module docstring for the bounds it is held to."""

    def __init__(self, server: ControlServer, sock: socket.socket, pid: int) -> None:
        self.server = server
        self.sock = sock
        self.fd = sock.fileno()
        self.pid = pid
        self.decoder = FrameDecoder(max_frame=server.max_frame)
        self.closed = False
        self.out = bytearray()
        self.in_flight = 0  # requests dispatched and not answered yet
        self.partial_since = 0.0  # monotonic time a partial frame was first held, or 0
        self._paused = False  # not read from: too many requests in flight
        self._held: deque[dict[str, Any]] = deque()  # decoded, waiting for room in flight
        self._pumping = False
        self._writable_watched = False

    def on_readable(self) -> None:
        try:
            data = self.sock.recv(_READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.close()
            return
        try:
            messages = self.decoder.feed(data)
        except FrameError as exc:
            logger.warning("{}: bad frame from pid {}: {}", self.server.label, self.pid, exc)
            self.send({"id": None, "ok": False, "error": f"bad frame: {exc}"})
            self.flush()
            self.close()
            return
        if self.decoder.at_boundary:
            self.partial_since = 0.0
        elif not self.partial_since:
            self.partial_since = time.monotonic()
        self._held.extend(messages)
        self._pump()

    def _pump(self) -> None:
        """Dispatch held requests while fewer than the bound are in flight; at the bound,
        stop reading (back-pressure: the client's further requests wait in the socket
        buffers) until answers bring it down to half."""
        if self._pumping:
            return  # an answer given inside a dispatch below: the loop below continues
        self._pumping = True
        try:
            bound = self.server.max_in_flight
            held = self._held
            while held and self.in_flight < bound and not self.closed:
                self.in_flight += 1
                self._dispatch(held.popleft())
        finally:
            self._pumping = False
        if self.closed:
            return
        busy = bool(self._held) or self.in_flight >= self.server.max_in_flight
        if busy and not self._paused:
            self._paused = True
            self.rewatch()
        elif self._paused and not self._held and self.in_flight <= self.server.max_in_flight // 2:
            self._paused = False
            self.rewatch()

    def rewatch(self) -> None:
        """Tell the loop what this connection waits for now."""
        if not self.closed and self.server._watch is not None:
            self.server._watch(
                self.sock,
                None if self._paused else self.on_readable,
                self.flush if self._writable_watched else None,
            )

    def _dispatch(self, msg: dict[str, Any]) -> None:
        req_id = msg.get("id")
        command = msg.get("command")
        args = msg.get("args") or {}
        if type(command) is not str or type(args) is not dict:
            self.answer(req_id, False, "a request is {id, command: str, args: map}")
            return
        direct = self.server.direct.get(command)
        if direct is not None:
            try:
                direct(self, req_id, args)
            except Exception as exc:
                logger.exception("{}: command {} failed", self.server.label, command)
                self.answer(req_id, False, f"{command} failed: {type(exc).__name__}: {exc}")
            return
        answered = False

        def respond(ok: bool, value: Any) -> None:
            nonlocal answered
            if not answered:
                answered = True
                self.answer(req_id, ok, value)

        handler = self.server.handlers.get(command)
        if handler is None:
            known = ", ".join(sorted([*self.server.handlers, *self.server.direct]))
            respond(False, f"unknown command {command!r} (known: {known})")
            return
        declared = self.server.commands.get(command)
        problem = declared.check(args) if declared is not None else None
        if problem is not None:
            respond(False, problem)
            return
        try:
            handler(args, respond)
        except Exception as exc:
            logger.exception("{}: command {} failed", self.server.label, command)
            respond(False, f"{command} failed: {type(exc).__name__}: {exc}")

    def answer(self, req_id: Any, ok: bool, value: Any) -> None:
        """Queue the answer to request ``req_id`` (errors travel as text); one request of
        this connection is no longer in flight. Dropped when the connection is closed."""
        if self.closed:
            return
        self.in_flight -= 1
        if ok:
            self.send({"id": req_id, "ok": True, "data": value})
        else:
            self.send({"id": req_id, "ok": False, "error": str(value)})
        if self._paused:
            self._pump()

    def send(self, reply: dict[str, Any]) -> None:
        """Queue a reply; it is written by :meth:`flush` at the end of the batch."""
        if self.closed:
            return
        try:
            # Replies carry our own data or what the strict decoder let in: no deep re-check.
            data = pack(reply, max_frame=self.server.max_frame, strict=False)
        except FrameError as exc:
            data = pack({"id": reply.get("id"), "ok": False, "error": f"reply too large: {exc}"})
        self.out += data
        if len(self.out) > self.server.max_pending_output:
            self.flush()  # what the socket still takes does not count against the client
            if len(self.out) > self.server.max_pending_output:
                self.drop("slow", f"{len(self.out)} bytes unread")
                return
        self.server._dirty.add(self)

    def flush(self) -> None:
        """Write what the socket takes now, never waiting; the rest waits for writability."""
        if self.closed or not self.out:
            return
        try:
            sent = self.sock.send(self.out)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self.close()
            return
        del self.out[:sent]
        want = bool(self.out)
        if want != self._writable_watched:
            self._writable_watched = want
            self.rewatch()

    def drop(self, kind: str, why: str) -> None:
        """Close a misbehaving client, with one log line saying who and why."""
        if not self.closed:
            logger.warning(
                "{}: dropped a {} client (pid {}): {}", self.server.label, kind, self.pid, why
            )
            self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.out.clear()
            self._held.clear()
            self.server._drop(self)


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino
