"""Client library for the control socket; the CLI is built on it.

>>> with Client.for_config(cfg) as c:
...     c.request("status")["components"]

Requests may be pipelined: :meth:`Client.send` returns an id and :meth:`Client.receive`
yields answers in the order they come back.
"""

from __future__ import annotations

import itertools
import socket
from pathlib import Path
from types import TracebackType
from typing import Any

from osup_mp.codec import FrameDecoder, FrameError, pack
from osup_mp.config import Config
from osup_mp.runtime.spin import DEFAULT_MAX_US, Spinner


class ClientError(Exception):
    """The tree answered with an error, or the conversation broke."""


class NotRunning(ClientError):
    """No tree listens on the control socket."""


class Client:
    def __init__(
        self,
        path: Path,
        *,
        timeout: float = 30.0,
        max_frame: int = 1 << 20,
        busy_poll_us: int = DEFAULT_MAX_US,
    ) -> None:
        self.path = path
        self.timeout = timeout
        self.max_frame = max_frame
        self._ids = itertools.count(1)
        self._decoder = FrameDecoder(max_frame=max_frame)
        self._ready: list[dict[str, Any]] = []
        self._spinner = Spinner(busy_poll_us)  # an answer is usually microseconds away
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        try:
            self._sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            self._sock.close()
            raise NotRunning(f"no tree is listening on {path}") from exc
        except OSError as exc:
            self._sock.close()
            raise ClientError(f"cannot connect to {path}: {exc.strerror or exc}") from exc

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
        self._sock.close()

    def send(self, command: str, /, **args: Any) -> int:
        req_id = next(self._ids)
        try:
            self._sock.sendall(pack({"id": req_id, "command": command, "args": args}))
        except OSError as exc:
            raise ClientError(f"control socket write failed: {exc}") from exc
        return req_id

    def receive(self) -> dict[str, Any]:
        while not self._ready:
            try:
                data = self._spinner.wait(self._recv_now, self._recv, self.timeout)
            except TimeoutError as exc:
                raise ClientError(f"no answer within {self.timeout:g}s") from exc
            except OSError as exc:
                raise ClientError(f"control socket read failed: {exc}") from exc
            if not data:
                raise ClientError("the tree closed the control connection")
            try:
                self._ready.extend(self._decoder.feed(data))
            except FrameError as exc:
                raise ClientError(f"bad answer from the tree: {exc}") from exc
        return self._ready.pop(0)

    def _recv_now(self) -> bytes | None:
        try:
            return self._sock.recv(65536, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return None

    def _recv(self, _timeout: float | None) -> bytes:
        return self._sock.recv(65536)  # the socket's own timeout applies

    def request(self, command: str, /, **args: Any) -> Any:
        """Send one command and return its ``data``; raise :class:`ClientError` on error."""
        req_id = self.send(command, **args)
        while True:
            reply = self.receive()
            if reply.get("id") in (req_id, None):
                break
        if not reply.get("ok"):
            raise ClientError(str(reply.get("error")))
        return reply.get("data")
