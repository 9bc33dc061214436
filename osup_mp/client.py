"""Client library for the control socket and the data-plane socket; the CLI is built on it.

>>> with Client.for_config(cfg) as c:
...     c.request("status")["components"]

Requests may be pipelined: :meth:`Client.send` returns an id and :meth:`Client.receive`
yields answers in the order they come back.

Design decision: pipelined requests are coalesced, as Kafka's and Redis' clients do. A
``send`` is written once ``batch_bytes`` of requests are queued, when the client waits for
an answer, on :meth:`Client.flush` or on :meth:`Client.close` — one system call (and one
wake-up of the tree) per few requests instead of one each. :meth:`Client.request` waits at
once, so a lone request is never held back.
"""

from __future__ import annotations

import collections
import itertools
import select
import socket
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from osup_mp.config import Config
from osup_mp.lowlevel.spin import DEFAULT_MAX_US, Spinner
from osup_mp.wire import FrameDecoder, FrameError, FrameTooLarge, pack


class ClientError(Exception):
    """The tree answered with an error, or the conversation broke."""


class NotRunning(ClientError):
    """No tree listens on the control socket."""


class ConnectFailed(ClientError):
    """The socket exists but no connection could be made (e.g. its backlog stayed full)."""


class ErrorAnswer(ClientError):
    """The tree (or the agent) answered the request with an error."""


class Client:
    def __init__(
        self,
        path: Path,
        *,
        timeout: float = 30.0,
        max_frame: int = 1 << 20,
        busy_poll_us: int = DEFAULT_MAX_US,
        batch_bytes: int = 512,
    ) -> None:
        self.path = path
        self.batch_bytes = batch_bytes
        self.timeout = timeout
        self.max_frame = max_frame
        self._ids = itertools.count(1)
        self._decoder = FrameDecoder(max_frame=max_frame)
        self._out = bytearray()  # requests queued by send(), not yet written
        self._ready: collections.deque[dict[str, Any]] = collections.deque()
        self._spinner = Spinner(busy_poll_us)  # an answer is usually microseconds away
        self._sock = _connect(path, timeout)
        # Non-blocking from here on, waits are ours: a socket with a timeout polls before
        # every send and recv, which would double the system calls and defeat busy polling.
        self._sock.setblocking(False)
        self._poller = select.poll()
        self._poller.register(self._sock, select.POLLIN)

    @classmethod
    def for_config(cls, cfg: Config, *, timeout: float = 30.0) -> Client:
        return cls(
            cfg.control_socket,
            timeout=timeout,
            max_frame=cfg.control.max_frame,
            busy_poll_us=cfg.supervisor.busy_poll_us,
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        try:
            if self._out:
                self.flush()  # what was sent is delivered, answered or not
        finally:
            self._sock.close()

    def send(self, command: str, /, **args: Any) -> int:
        """Queue one request (see the module docstring for when it is written); its id."""
        req_id = next(self._ids)
        try:
            self._out += pack(
                {"id": req_id, "command": command, "args": args}, max_frame=self.max_frame
            )
        except FrameTooLarge as exc:  # the tree would close the connection on it
            raise ClientError(
                f"{command}: too large for the control socket: {exc} ([control] max_frame)"
            ) from None
        if len(self._out) >= self.batch_bytes:
            self.flush()
        return req_id

    def flush(self) -> None:
        """Write every queued request now."""
        data = memoryview(self._out)
        try:
            while data:
                try:
                    data = data[self._sock.send(data) :]
                except BlockingIOError:  # the tree is behind: wait for room
                    room = select.poll()
                    room.register(self._sock, select.POLLOUT)
                    if not room.poll(self.timeout * 1000):
                        raise ClientError(f"the tree took no input for {self.timeout:g}s") from None
        except OSError as exc:
            raise ClientError(f"control socket write failed: {exc}") from exc
        finally:
            data.release()
            self._out.clear()

    def receive(self) -> dict[str, Any]:
        while not self._ready:
            if not self._read(self.timeout):
                raise ClientError(f"no answer within {self.timeout:g}s")
        return self._ready.popleft()

    def poll(self, timeout: float) -> list[dict[str, Any]]:
        """Every answer that is there or arrives within ``timeout`` seconds (at most one
        read), or [] when none does: for callers that pace their own sends."""
        if not self._ready:
            self._read(max(0.0, timeout))
        answers = list(self._ready)
        self._ready.clear()
        return answers

    def _read(self, timeout: float) -> bool:
        """Flush, then one read of what arrives within ``timeout``; False if nothing did."""
        if self._out:
            self.flush()
        try:
            data = self._spinner.wait(self._recv, timeout)
        except TimeoutError:
            return False
        except OSError as exc:
            raise ClientError(f"control socket read failed: {exc}") from exc
        if data is None:
            return True  # woken without data after all: the caller looks again
        if not data:
            raise ClientError("the tree closed the control connection")
        try:
            self._ready.extend(self._decoder.feed(data))
        except FrameError as exc:
            raise ClientError(f"bad answer from the tree: {exc}") from exc
        return True

    def _recv(self, timeout: float | None) -> bytes | None:
        if not self._poller.poll(None if timeout is None else timeout * 1000):
            if timeout == 0:
                return None
            raise TimeoutError
        try:
            return self._sock.recv(65536)
        except BlockingIOError:  # woken without data after all
            return None

    def request(self, command: str, /, **args: Any) -> Any:
        """Send one command and return its ``data``; raise :class:`ClientError` on error."""
        req_id = self.send(command, **args)
        while True:
            reply = self.receive()
            if reply.get("id") in (req_id, None):
                break
        if not reply.get("ok"):
            raise ErrorAnswer(str(reply.get("error")))
        return reply.get("data")


def _connect(path: Path, timeout: float) -> socket.socket:
    """Connect, waiting up to ``timeout`` while the listen backlog is full: a Unix socket's
    non-blocking connect fails at once with EAGAIN then, where waiting is what a client wants."""
    deadline = time.monotonic() + timeout
    pause = 0.001
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            sock.connect(str(path))
            return sock
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            sock.close()
            raise NotRunning(f"no tree is listening on {path}") from exc
        except (BlockingIOError, InterruptedError) as exc:
            sock.close()
            left = deadline - time.monotonic()
            if left <= 0:
                raise ConnectFailed(
                    f"cannot connect to {path}: its listen backlog stayed full for "
                    f"{timeout:g}s (the server is overloaded or stuck)"
                ) from exc
            time.sleep(min(pause, left))
            pause = min(pause * 2, 0.05)
        except OSError as exc:
            sock.close()
            raise ConnectFailed(f"cannot connect to {path}: {exc.strerror or exc}") from exc
