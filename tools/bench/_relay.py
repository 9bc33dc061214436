"""A bare relay between one data-plane client and an agent, the agent benchmark's baseline:
the manager's three-process shape (client, relay, agent) with the project's codec and busy
polling and no supervision at all (no deadlines, states, WAL, metrics or logging), so what
the manager adds is told apart from what a third process costs on this machine.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import select
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

from osup_mp.lowlevel.proc import set_parent_death_signal, spawn_piped
from osup_mp.lowlevel.spin import Spinner
from osup_mp.wire import FrameDecoder, pack

_READ = 256 * 1024


@contextlib.contextmanager
def running(
    path: Path, argv: list[str], env: dict[str, str], max_frame: int, busy_poll_us: int
) -> Iterator[Path]:
    """Fork the relay; yield once it listens on ``path`` and its agent is ready; kill both."""
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            os.close(ready_r)
            set_parent_death_signal(signal.SIGKILL)
            _serve(path, argv, env, max_frame, busy_poll_us, ready_w)
            status = 0
        finally:
            os._exit(status)
    os.close(ready_w)
    with os.fdopen(ready_r, "rb") as ready:
        agent_pid = int(ready.readline() or b"-1")
    try:
        if agent_pid < 0:
            raise RuntimeError("the bare relay did not start")
        yield path
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if agent_pid > 0:
                os.killpg(agent_pid, signal.SIGKILL)  # its own session: its group
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        path.unlink(missing_ok=True)


def _serve(
    path: Path, argv: list[str], env: dict[str, str], max_frame: int, busy: int, ready_w: int
) -> None:
    agent = spawn_piped(argv, env, stderr=subprocess.DEVNULL)
    assert agent.stdin is not None and agent.stdout is not None
    # Every fd stays blocking: it is read only when epoll says so, and a write waits for room
    # rather than queueing (the bench keeps at most 64 small requests in flight).
    to_agent, from_agent = agent.stdin.fileno(), agent.stdout.fileno()
    agent_frames = FrameDecoder(max_frame=max_frame, require_type=True)
    while not any(m["type"] == "ready" for m in agent_frames.feed(os.read(from_agent, _READ))):
        if agent.poll() is not None:
            raise RuntimeError(f"the relay's agent exited before ready ({agent.returncode})")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    path.unlink(missing_ok=True)
    listener.bind(str(path))
    listener.listen(1)
    os.write(ready_w, f"{agent.pid}\n".encode())
    os.close(ready_w)
    conn, _ = listener.accept()
    client = conn.fileno()
    poller = select.epoll()
    poller.register(client, select.EPOLLIN)
    poller.register(from_agent, select.EPOLLIN)
    client_frames = FrameDecoder(max_frame=max_frame)
    ids = itertools.count(1)
    waiting: dict[int, object] = {}  # relay id -> the client's request id
    to_agent_buf, to_client_buf = bytearray(), bytearray()
    rbuf = bytearray(_READ)
    rview = memoryview(rbuf)
    spinner = Spinner(busy)
    while True:
        for fd, _events in spinner.wait(poller.poll, None):
            if fd == client:
                data = conn.recv(65536)
                if not data:
                    return  # the bench is done: the agent sees EOF and exits
                for msg in client_frames.feed(data):
                    relay_id = next(ids)
                    waiting[relay_id] = msg["id"]
                    request = {"type": "process_request", "id": relay_id}
                    request["data"] = msg["args"].get("data")
                    to_agent_buf += pack(request, max_frame=max_frame, strict=False)
            else:
                size = os.readv(from_agent, [rbuf])
                if not size:
                    return
                for msg in agent_frames.feed(rview[:size]):
                    if msg["type"] != "response":
                        continue  # heartbeats, metrics: nobody here is interested
                    answer = {"id": waiting.pop(msg["id"]), "ok": "error" not in msg}
                    if answer["ok"]:
                        answer["data"] = msg.get("data")
                    else:
                        answer["error"] = msg["error"]
                    to_client_buf += pack(answer, max_frame=max_frame, strict=False)
        while to_agent_buf:
            del to_agent_buf[: os.write(to_agent, to_agent_buf)]
        if to_client_buf:
            conn.sendall(to_client_buf)
            to_client_buf.clear()
