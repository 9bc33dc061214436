"""The smallest relay between a data-plane client and an agent: a reference for the agent bench.

A request through the agent manager crosses three processes (client, manager, agent) where the
direct baseline crosses two. This relay has the manager's shape and nothing else: one client
connection on a Unix socket, the agent on pipes, the project's codec and busy polling, ids
mapped both ways. No deadlines, no state machine, no WAL ordering, no metrics, no logging.
What it costs is what three Python processes cost on this machine before any supervision, so
the manager's figures can be read against it as well as against the direct baseline.

``start`` forks it; the returned :class:`Relay` knows the relay's and its agent's pids so the
bench can kill both whatever happens.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import select
import signal
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from _common import spawn_agent

from osup_mp.lowlevel.proc import set_parent_death_signal
from osup_mp.lowlevel.spin import Spinner
from osup_mp.wire import FrameDecoder, pack

_READ = 256 * 1024


@dataclass
class Relay:
    path: Path
    pid: int
    agent_pid: int

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if self.agent_pid > 0:
                os.killpg(self.agent_pid, signal.SIGKILL)  # its own session: its group
            os.kill(self.pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)
        self.path.unlink(missing_ok=True)


@contextlib.contextmanager
def running(
    path: Path, argv: list[str], env: dict[str, str], max_frame: int, busy_poll_us: int
) -> Iterator[Relay]:
    """Fork the relay (listening on ``path``, its agent spawned and ready); kill it after."""
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the relay
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
        line = ready.readline()  # the agent's pid, once the socket listens and the agent is up
    relay = Relay(path, pid, int(line) if line.strip() else -1)
    try:
        if relay.agent_pid < 0:
            raise RuntimeError("the bare relay did not start")
        yield relay
    finally:
        relay.kill()


def _serve(
    path: Path,
    argv: list[str],
    env: dict[str, str],
    max_frame: int,
    busy_poll_us: int,
    ready_w: int,
) -> None:
    agent = spawn_agent(argv, env)
    assert agent.stdin is not None and agent.stdout is not None
    # Every fd stays blocking: it is read only when epoll says so, and a write waits for room
    # rather than queueing (the bench keeps at most 64 small requests in flight).
    to_agent, from_agent = agent.stdin.fileno(), agent.stdout.fileno()
    agent_frames = FrameDecoder(max_frame=max_frame, require_type=True)
    while True:
        data = os.read(from_agent, _READ)
        if not data:
            raise RuntimeError(f"the relay's agent exited before ready ({agent.wait()})")
        if any(m["type"] == "ready" for m in agent_frames.feed(data)):
            break
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
    waiting: dict[int, object] = {}  # relay id -> client's request id
    to_agent_buf, to_client_buf = bytearray(), bytearray()
    rbuf = bytearray(_READ)
    rview = memoryview(rbuf)
    spinner = Spinner(busy_poll_us)
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
