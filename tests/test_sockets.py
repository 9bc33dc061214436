"""Sockets and loops under hostile peers: slow readers, floods, half frames, full backlogs,
descriptors above 1023."""

from __future__ import annotations

import contextlib
import os
import resource
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from loguru import logger
from support.sockets import full_listener

from osup_mp.client import Client, ClientError, ConnectFailed
from osup_mp.lowlevel.proc import readable
from osup_mp.runtime.calls import CallMux
from osup_mp.runtime.channel import Channel, channel_pair
from osup_mp.runtime.control import ControlServer
from osup_mp.wire import FrameDecoder, pack

pytestmark = pytest.mark.unit  # no process started

Callback = Callable[[], None]


class MiniLoop:
    """The smallest event loop a ControlServer can be attached to (epoll, like the tree's)."""

    def __init__(self) -> None:
        self.epoll = select.epoll()
        self.watches: dict[int, tuple[Callback | None, Callback | None]] = {}
        self.slowest = 0.0  # the longest single wake-up, seconds

    def watch(self, sock: socket.socket, reader: Callback | None, writer: Callback | None) -> None:
        fd = sock.fileno()
        mask = (select.EPOLLIN if reader else 0) | (select.EPOLLOUT if writer else 0)
        if fd in self.watches:
            if mask:
                self.epoll.modify(fd, mask)
            else:
                self.epoll.unregister(fd)
                del self.watches[fd]
                return
        elif mask:
            self.epoll.register(fd, mask)
        else:
            return
        self.watches[fd] = (reader, writer)

    def run_once(self, server: ControlServer, timeout: float = 0.01) -> None:
        started = time.monotonic()
        for fd, events in self.epoll.poll(timeout):
            reader, writer = self.watches.get(fd, (None, None))
            if writer is not None and events & select.EPOLLOUT:
                writer()
            if reader is not None and events & (select.EPOLLIN | select.EPOLLHUP):
                reader()
        server.flush()
        self.slowest = max(self.slowest, time.monotonic() - started)

    def run_until(self, server: ControlServer, done: Callable[[], bool], limit: float) -> None:
        deadline = time.monotonic() + limit
        while not done():
            assert time.monotonic() < deadline, "condition not reached in time"
            self.run_once(server)


@pytest.fixture
def logs() -> Iterator[list[str]]:
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m)), level="WARNING", format="{message}")
    yield lines
    logger.remove(sink)


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., tuple[ControlServer, MiniLoop]]]:
    servers: list[ControlServer] = []

    def make(**kwargs: Any) -> tuple[ControlServer, MiniLoop]:
        handlers = kwargs.pop(
            "handlers",
            {
                "ping": lambda _a, respond: respond(True, "pong"),
                "echo": lambda args, respond: respond(True, args),
            },
        )
        server = ControlServer(
            tmp_path / f"s{len(servers)}.sock", handlers, max_frame=1 << 16, **kwargs
        )
        loop = MiniLoop()
        server.attach(loop.watch)
        servers.append(server)
        return server, loop

    yield make
    for server in servers:
        server.shutdown()


def _connect(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(path))
    return sock


def _ping(loop: MiniLoop, server: ControlServer, sock: socket.socket, req_id: int) -> float:
    """One request/answer round trip through the loop; its latency in seconds."""
    started = time.monotonic()
    sock.sendall(pack({"id": req_id, "command": "ping", "args": {}}))
    decoder = FrameDecoder(max_frame=1 << 16)
    sock.setblocking(False)
    try:
        while True:
            loop.run_once(server, 0.001)
            with contextlib.suppress(BlockingIOError):
                for msg in decoder.feed(sock.recv(65536)):
                    assert msg == {"id": req_id, "ok": True, "data": "pong"}
                    return time.monotonic() - started
            assert time.monotonic() - started < 5, "no answer"
    finally:
        sock.setblocking(True)


def test_a_client_that_never_reads_does_not_block_the_loop(server_factory, logs) -> None:
    server, loop = server_factory(max_pending_output=1 << 20)
    hog = _connect(server.path)
    hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    polite = _connect(server.path)
    loop.run_until(server, lambda: len(server._conns) == 2, 5)
    big = pack({"id": 0, "command": "echo", "args": {"pad": "x" * 2000}})
    hog.setblocking(False)
    worst = 0.0
    # The hog asks and never reads: its answers pile up until it is dropped.
    for i in range(4000):
        with contextlib.suppress(BlockingIOError):
            hog.send(big)
        loop.run_once(server, 0)
        if i % 200 == 0:
            worst = max(worst, _ping(loop, server, polite, i))
        if len(server._conns) == 1:
            break
    assert len(server._conns) == 1, "the client that never reads was not dropped"
    assert loop.slowest < 0.5, f"a loop wake-up took {loop.slowest:.3f}s"
    assert worst < 0.5
    drops = [line for line in logs if "dropped a slow client" in line]
    assert len(drops) == 1 and "bytes unread" in drops[0] and f"pid {os.getpid()}" in drops[0]
    assert drops[0].startswith("control:")
    hog.close()
    polite.close()


def test_a_request_over_the_frame_limit_is_refused_by_the_client(server_factory) -> None:
    """The tree would close the connection on it (the client then saw a broken pipe): the
    client says what is wrong before anything is written, and its connection stays usable."""
    server, loop = server_factory()
    with Client(server.path, max_frame=4096, timeout=5) as client:
        with pytest.raises(
            ClientError, match=r"^echo: too large for the control socket: .*max_frame"
        ):
            client.send("echo", pad="x" * 5000)
        client.send("ping")
        client.flush()
        answers: list[dict[str, Any]] = []
        deadline = time.monotonic() + 5
        while not answers and time.monotonic() < deadline:
            loop.run_once(server, 0.01)
            answers = client.poll(0)
    assert answers == [{"id": 2, "ok": True, "data": "pong"}]


def test_requests_in_flight_are_bounded_per_connection(server_factory) -> None:
    pending: list[Callable[[bool, Any], None]] = []
    server, loop = server_factory(
        handlers={"hold": lambda _a, respond: pending.append(respond)}, max_in_flight=8
    )
    client = _connect(server.path)
    loop.run_until(server, lambda: len(server._conns) == 1, 5)
    client.sendall(b"".join(pack({"id": i, "command": "hold", "args": {}}) for i in range(100)))
    for _ in range(50):
        loop.run_once(server, 0.005)
    assert len(pending) == 8, "the server kept reading past its in-flight bound"
    for respond in pending[:]:
        respond(True, None)
    loop.run_until(server, lambda: len(pending) >= 16, 5)
    assert len(pending) <= 8 + 8
    client.close()
    loop.run_until(server, lambda: not server._conns, 5)
    pending[-1](True, "too late")  # the answer of a dropped connection is discarded
    loop.run_once(server)


def test_a_half_frame_is_not_kept_for_ever(server_factory, logs) -> None:
    server, loop = server_factory(partial_frame_timeout=0.2, label="data-plane (agent:main)")
    client = _connect(server.path)
    loop.run_until(server, lambda: len(server._conns) == 1, 5)
    client.sendall(pack({"id": 1, "command": "ping", "args": {}})[:5])
    sent = time.monotonic()

    def dropped() -> bool:
        server._next_sweep = 0.0  # sweep at every turn, not once a second
        return not server._conns

    loop.run_until(server, dropped, 5)
    assert time.monotonic() - sent > 0.2  # not before the partial-frame timeout
    assert client.recv(10) == b""
    drops = [line for line in logs if "incomplete frame" in line]
    assert len(drops) == 1 and drops[0].startswith("data-plane (agent:main): dropped")
    client.close()


def test_listen_backlog_is_large(server_factory) -> None:
    server, _loop = server_factory()
    clients = [_connect(server.path) for _ in range(200)]  # none accepted yet: no EAGAIN
    for c in clients:
        c.close()


# -- descriptors above 1023 ------------------------------------------------------------------


@pytest.fixture
def high_fd_pair() -> Iterator[tuple[Channel, Channel]]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2048:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard), hard))
    a, b = channel_pair()
    high = 1500
    os.dup2(a.fileno(), high)
    a.close()
    hi = Channel.from_fd(high)
    assert hi.fileno() > 1023
    yield hi, b
    hi.close()
    b.close()


def test_channel_and_calls_work_with_descriptors_above_1023(high_fd_pair) -> None:
    hi, other = high_fd_pair
    assert not hi.wait_readable(0.01)
    other.send(("cast", 1))
    other.flush()
    assert hi.wait_readable(1.0)
    assert hi.receive() == [("cast", 1)]
    assert readable(other.fileno(), 0) is False
    # A blocking call over the high descriptor, with an interrupt fd, as components make.
    wake_r, wake_w = socket.socketpair()
    os.dup2(wake_r.fileno(), 1600)
    mux = CallMux(hi, "peer")
    mux.interrupt_fd = 1600

    def answer() -> None:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            for msg in other.receive():
                other.send(("reply", msg[1], True, msg[2] * 2))
                other.flush_blocking(1.0)
                return
            time.sleep(0.001)

    thread = threading.Thread(target=answer)
    thread.start()
    try:
        assert mux.call(21, timeout=5) == 42
    finally:
        thread.join()
        os.close(1600)
        wake_r.close()
        wake_w.close()
    hi.send(("cast", "x" * 300_000))  # more than a socket buffer: flush_blocking waits
    got: list[Any] = []

    def read_big() -> None:
        deadline = time.monotonic() + 5
        while not got and time.monotonic() < deadline:
            if other.wait_readable(0.1):
                got.extend(other.receive())

    reader = threading.Thread(target=read_big)
    reader.start()
    hi.flush_blocking(5.0)
    reader.join()
    assert got == [("cast", "x" * 300_000)]


# -- connecting to a full backlog ------------------------------------------------------------


def test_client_waits_for_a_full_backlog_then_reports_it(tmp_path: Path) -> None:
    path = tmp_path / "full.sock"
    listener, queued = full_listener(path)
    try:
        started = time.monotonic()
        with pytest.raises(ConnectFailed, match=r"backlog stayed full for 0\.2s"):
            Client(path, timeout=0.2)
        assert time.monotonic() - started >= 0.15
    finally:
        for s in queued:
            s.close()
        listener.close()


def test_client_connects_once_the_backlog_drains(tmp_path: Path) -> None:
    path = tmp_path / "full.sock"
    listener, queued = full_listener(path)
    accepted: list[socket.socket] = []

    def drain() -> None:
        time.sleep(0.1)  # the client retries meanwhile (its pauses double from 1 ms)
        for _ in range(len(queued) + 1):
            accepted.append(listener.accept()[0])

    thread = threading.Thread(target=drain)
    thread.start()
    try:
        Client(path, timeout=5).close()
    finally:
        thread.join()
        for s in queued + accepted:
            s.close()
        listener.close()


def test_out_of_descriptors_pauses_accepting_instead_of_failing(server_factory, logs) -> None:
    server, loop = server_factory()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    clients = [_connect(server.path) for _ in range(3)]
    spare = os.open("/dev/null", os.O_RDONLY)  # the lowest free descriptor, just now
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (spare, hard))  # no room for one more
        loop.run_once(server)  # before: EMFILE escaped from the loop's callback
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        os.close(spare)
    assert any("cannot accept a connection" in line for line in logs)
    assert server.next_deadline() is not None  # the loop is asked to wake up to resume
    server._accepts_paused_until = time.monotonic()
    loop.run_until(server, lambda: len(server._conns) == 3, 5)
    for c in clients:
        c.close()


def test_shutdown_leaves_a_successors_socket(tmp_path: Path) -> None:
    """A server stopping late (its supervisor died and a new tree is up) must not remove the
    socket its successor bound to the same path."""
    path = tmp_path / "data.sock"
    old = ControlServer(path, {}, max_frame=1 << 16)
    new = ControlServer(path, {}, max_frame=1 << 16)  # rebinds the path, as a new tree does
    try:
        old.shutdown()
        assert path.exists()
        _connect(path).close()  # still the new server's
    finally:
        new.shutdown()
    assert not path.exists()
