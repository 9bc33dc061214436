"""Socket helpers for tests of clients and servers."""

from __future__ import annotations

import socket
from pathlib import Path


def full_listener(path: Path) -> tuple[socket.socket, list[socket.socket]]:
    """A listening socket that never accepts, with its backlog filled."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)
    queued: list[socket.socket] = []
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.connect(str(path))
        except BlockingIOError:
            s.close()
            return listener, queued
        queued.append(s)
        assert len(queued) < 100
