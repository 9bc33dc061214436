"""The control socket: the parent's command endpoint for the CLI and client library.

A Unix stream socket in the run dir, mode 0600. The same server class serves the agent
manager's data-plane socket, with other handlers. Each request is one frame of the wire codec
(:mod:`osup_mp.codec`): ``{"id": int, "command": str, "args": map}``; each answer is
``{"id", "ok": true, "data"}`` or ``{"id", "ok": false, "error"}``. Many requests may be in
flight on one connection; handlers may answer later (``status`` waits for telemetry).

Design decisions: the server lives in the supervisor's loop (a registered reader), so it
never delays reaping; peers are checked with ``SO_PEERCRED`` and only the tree's own uid (and
root) is served; input is untrusted — bounded frames, strict decoding, and any error in a
handler becomes an error reply, never a crash of the parent.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loguru import logger

from osup_mp.codec import FrameDecoder, FrameError, pack

Respond = Callable[[bool, Any], None]
Handler = Callable[[dict[str, Any], Respond], None]
# A hot-path handler answers through ``connection.answer(request_id, ok, value)`` itself, so
# no closure is made per request (the data plane's ``request``).
DirectHandler = Callable[["Connection", Any, dict[str, Any]], None]
Register = Callable[[Any, Callable[[], None]], None]
Unregister = Callable[[Any], None]

_UCRED = struct.Struct("3i")
_SEND_TIMEOUT = 2.0


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
    ) -> None:
        self.path = path
        self.handlers = handlers
        self.direct = direct or {}
        self.max_frame = max_frame
        self._conns: dict[int, Connection] = {}
        self._dirty: set[Connection] = set()
        self._register: Register | None = None
        self._unregister: Unregister | None = None
        path.unlink(missing_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)  # created 0600: no window where others could connect
        try:
            sock.bind(str(path))
        finally:
            os.umask(old_umask)
        sock.listen(64)
        sock.setblocking(False)
        self.sock = sock

    def attach(self, register: Register, unregister: Unregister) -> None:
        self._register, self._unregister = register, unregister
        register(self.sock, self._accept)

    def flush(self) -> None:
        """Write every queued reply: one write per connection per loop wake-up."""
        while self._dirty:
            self._dirty.pop().flush()

    def close(self) -> None:
        """Close every socket (used in forked children too: the file stays)."""
        for conn in list(self._conns.values()):
            conn.sock.close()
        self._conns.clear()
        self.sock.close()

    def shutdown(self) -> None:
        """Close and remove the socket file (the parent, at exit)."""
        self.close()
        self.path.unlink(missing_ok=True)

    def _accept(self) -> None:
        while True:
            try:
                sock, _addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            pid, uid, _gid = _UCRED.unpack(
                sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
            )
            conn = Connection(self, sock, pid)
            if not peer_uid_allowed(uid):
                logger.warning("control: refused connection from pid {} uid {}", pid, uid)
                conn.send({"id": None, "ok": False, "error": "permission denied"})
                conn.flush()
                self._dirty.discard(conn)
                sock.close()
                continue
            sock.setblocking(False)
            self._conns[sock.fileno()] = conn
            assert self._register is not None
            self._register(sock, conn.on_readable)

    def _drop(self, conn: Connection) -> None:
        if self._conns.pop(conn.fd, None) is not None and self._unregister is not None:
            self._unregister(conn.sock)
        conn.sock.close()


class Connection:
    def __init__(self, server: ControlServer, sock: socket.socket, pid: int) -> None:
        self.server = server
        self.sock = sock
        self.fd = sock.fileno()
        self.pid = pid
        self.decoder = FrameDecoder(max_frame=server.max_frame)
        self.closed = False
        self.out = bytearray()

    def on_readable(self) -> None:
        try:
            data = self.sock.recv(65536)
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
            logger.warning("control: bad frame from pid {}: {}", self.pid, exc)
            self.send({"id": None, "ok": False, "error": f"bad frame: {exc}"})
            self.flush()
            self.close()
            return
        for msg in messages:
            self._dispatch(msg)

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
                logger.exception("control: command {} failed", command)
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
        try:
            handler(args, respond)
        except Exception as exc:
            logger.exception("control: command {} failed", command)
            respond(False, f"{command} failed: {type(exc).__name__}: {exc}")

    def answer(self, req_id: Any, ok: bool, value: Any) -> None:
        """Queue the answer to request ``req_id`` (errors travel as text)."""
        if ok:
            self.send({"id": req_id, "ok": True, "data": value})
        else:
            self.send({"id": req_id, "ok": False, "error": str(value)})

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
        self.server._dirty.add(self)

    def flush(self) -> None:
        if self.closed or not self.out:
            return
        try:
            sent = self.sock.send(self.out)  # the common case: one non-blocking send
        except BlockingIOError:
            sent = 0
        except OSError:
            self.close()
            return
        if sent < len(self.out):
            try:
                # A client that stops reading is dropped rather than waited on for long.
                self.sock.settimeout(_SEND_TIMEOUT)
                self.sock.sendall(memoryview(self.out)[sent:])
                self.sock.setblocking(False)
            except OSError:
                self.close()
        self.out.clear()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.server._drop(self)
