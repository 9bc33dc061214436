"""The agent benchmarks' baselines: the agent spawned bare on its own pipes, a bare relay (the
manager's hops without the manager), an Erlang/OTP supervisor of the same agent, raw pipe
transfers. Agents start by the manager's launch contract (argv, ``OSUP_*`` env, Popen)."""

import collections
import contextlib
import itertools
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import _harness as h

from osup_mp.client import Client
from osup_mp.lowlevel.files import write_all
from osup_mp.lowlevel.proc import readable, set_parent_death_signal, spawn_piped
from osup_mp.lowlevel.spin import Spinner
from osup_mp.wire import FrameDecoder, pack
from osup_mp.wire.launch import agent_args

HERE = Path(__file__).resolve().parent
STAMP = struct.Struct("<Q")


class Launch(NamedTuple):
    """An agent's argv and environment, as the manager starts it."""

    argv: list[str]
    env: dict[str, str]


def test_agent(name: str) -> h.Layers:  # the main agent: one of the tests' agents
    script = str(HERE.parents[1] / "tests" / "support" / "agents" / name)
    return {"o_supervisor": {"gerbil_executable": sys.executable, "gerbil_main_script": script}}


def minimal_agent() -> Launch:
    """The tests' minimal agent as the main, beating every 200 ms."""
    script = test_agent("minimal_agent.py")["o_supervisor"]["gerbil_main_script"]
    env = dict(os.environ, OSUP_HEARTBEAT_INTERVAL_MS="200")
    return Launch([sys.executable, script, *agent_args("main")], env)


class DirectAgent(contextlib.AbstractContextManager["DirectAgent"]):
    """The agent on the bench's pipes, spoken to as a data-plane client speaks to the manager."""

    def __init__(self, agent: Launch) -> None:
        self.proc = spawn_piped(agent.argv, agent.env, stderr=subprocess.DEVNULL)
        self.popen_ns = time.perf_counter_ns()
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.in_fd, self.out_fd = self.proc.stdin.fileno(), self.proc.stdout.fileno()
        self.ids, self.decoder = itertools.count(1), FrameDecoder(require_type=True)
        self.pending: collections.deque[dict[str, Any]] = collections.deque()
        # One reused buffer, as the manager reads: a fresh 256 KiB per read costs ~12 µs.
        self.buf = memoryview(bytearray(256 * 1024))

    def __exit__(self, *_exc: object) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.communicate()

    def wait_ready(self) -> None:
        while self.next_message()["type"] != "ready":
            pass

    def next_message(self) -> dict[str, Any]:
        while not self.pending:
            if not readable(self.out_fd, 30.0):
                raise h.BenchError("a direct agent sent nothing for 30 s")
            if not (size := os.readv(self.out_fd, [self.buf])):
                raise h.BenchError(f"a direct agent closed its stdout ({self.proc.poll()})")
            self.pending.extend(self.decoder.feed(self.buf[:size]))
        return self.pending.popleft()

    def send(self, _command: str, /, data: Any) -> int:
        req_id = next(self.ids)
        write_all(self.in_fd, pack({"type": "process_request", "id": req_id, "data": data}))
        return req_id

    def receive(self) -> dict[str, Any]:
        """The next response (heartbeats and metrics skipped), shaped as a client's answer."""
        while (msg := self.next_message())["type"] != "response":
            pass
        return {"id": msg["id"], "ok": "error" not in msg, "data": msg.get("data")}

    def request(self, command: str, /, data: Any) -> Any:
        req_id = self.send(command, data)
        if (reply := self.receive())["id"] != req_id or not reply["ok"]:
            raise h.BenchError(f"a direct agent answered {reply} to request {req_id}")
        return reply["data"]


def pipelined(end: Client | DirectAgent, data: Callable[[int], Any], n: int, window: int) -> float:
    """Requests/s of ``data(i)`` through ``end``, each answer releasing the next of ``window``."""
    t0 = time.perf_counter()
    for i in range(n + window):
        if i >= window and not end.receive()["ok"]:
            raise h.BenchError("a pipelined request failed")
        if i < n:
            end.send("request", data=data(i))
    return n / (time.perf_counter() - t0)


@contextlib.contextmanager
def bare_relay(path: Path, agent: Launch, busy_poll_us: int) -> Iterator[None]:
    """The baseline of requests through the manager: a forked relay between one client on
    ``path`` and an agent, in the manager's three-process shape with the project's codec and
    busy polling and no supervision at all (no deadlines, states, WAL, metrics or logging),
    so that what the manager adds is told apart from what a third process costs here."""
    ready = h.FORK.Event()
    relay = h.FORK.Process(target=_relay, args=(path, agent, busy_poll_us, ready))
    relay.start()
    try:
        if not ready.wait(30.0):
            raise h.BenchError("the bare relay did not start")
        yield
    finally:
        relay.join(5.0)  # it ends once its client has gone, and kills its agent
        relay.kill()


def _relay(path: Path, launch: Launch, busy_poll_us: int, ready: Any) -> None:
    set_parent_death_signal(signal.SIGKILL)
    with DirectAgent(launch) as agent, socket.socket(socket.AF_UNIX) as listener:
        agent.wait_ready()
        listener.bind(str(path))
        listener.listen(1)
        ready.set()
        conn, _ = listener.accept()
        poller, spinner = select.epoll(), Spinner(busy_poll_us)
        poller.register(conn.fileno(), select.EPOLLIN)
        poller.register(agent.out_fd, select.EPOLLIN)
        client_frames, ids = FrameDecoder(), itertools.count(1)
        waiting: dict[int, object] = {}  # relay id -> the client's request id
        to_agent, to_client = bytearray(), bytearray()
        # Every fd stays blocking: it is read only when epoll says so, and a write waits for
        # room rather than queueing (the bench keeps at most 64 small requests in flight).
        while True:
            for fd, _events in spinner.wait(poller.poll, None):
                if fd == conn.fileno():
                    if not (data := conn.recv(65536)):
                        return  # the bench is done
                    for msg in client_frames.feed(data):
                        waiting[relay_id := next(ids)] = msg["id"]
                        request = {"type": "process_request", "id": relay_id}
                        to_agent += pack({**request, "data": msg["args"].get("data")}, strict=False)
                    continue
                if not (size := os.readv(agent.out_fd, [agent.buf])):
                    return
                for msg in agent.decoder.feed(agent.buf[:size]):
                    if msg["type"] == "response":  # not heartbeats, metrics
                        key = "error" if "error" in msg else "data"
                        answer = {"id": waiting.pop(msg["id"]), "ok": key == "data"}
                        to_client += pack({**answer, key: msg.get(key)}, strict=False)
            if to_agent:
                write_all(agent.in_fd, to_agent)
            if to_client:
                conn.sendall(to_client)
            del to_agent[:], to_client[:]


def spawn_to_first_frame(agent: Launch) -> tuple[float, float]:
    """ms from Popen to its return, and to the agent's ``ready`` frame decoded."""
    t0 = time.perf_counter_ns()
    with DirectAgent(agent) as direct:
        direct.wait_ready()
        return h.since_ms(t0, direct.popen_ns), h.since_ms(t0)


@contextlib.contextmanager
def otp_supervisor() -> Iterator[Callable[[], float] | None]:
    """An Erlang/OTP ``one_for_one`` supervisor (``_otp_supervisor.escript``) owning the
    minimal agent through a ``{packet, 4}`` port, its first agent ready (None without
    ``escript``). It yields a kill: ms from a SIGKILL of the agent to the next one ready."""
    if not (escript := shutil.which("escript")):
        yield None
        return
    agent, pipe, null = minimal_agent(), subprocess.PIPE, subprocess.DEVNULL
    spawn_to_first_frame(agent)  # warm-up (page cache)
    # Unbuffered (bufsize 0): a line is read only once poll says it is there. It prints
    # "ready OSPID" at each agent's first frame.
    argv = [escript, str(HERE / "_otp_supervisor.escript"), *agent.argv]
    proc = subprocess.Popen(
        argv, 0, stdin=pipe, stdout=pipe, stderr=null, env=agent.env, start_new_session=True
    )
    assert proc.stdout is not None
    out, pid = proc.stdout, [0]

    def ready() -> int:  # the perf_counter_ns at which the next agent's ready line was read
        while readable(out.fileno(), 30.0) and (line := out.readline()):
            if line.startswith(b"ready "):
                pid[0] = int(line.split()[1])
                return time.perf_counter_ns()
        raise h.BenchError(f"the OTP supervisor reported no agent ready ({proc.poll()})")

    def kill() -> float:
        t0 = time.perf_counter_ns()
        os.kill(pid[0], signal.SIGKILL)
        return h.since_ms(t0, ready())

    try:
        ready()
        yield kill
    finally:
        try:
            proc.communicate(timeout=10.0)  # at EOF it halts; its agent's port closes
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()


def _pipe_writer(go_r: int, data_w: int, payload: bytes, cpu: int | None) -> None:
    """Per byte on ``go_r``: stamp the clock, then write the payload."""
    set_parent_death_signal(signal.SIGKILL)
    os.sched_setaffinity(0, os.sched_getaffinity(0) if cpu is None else {cpu})
    while os.read(go_r, 1):
        write_all(data_w, STAMP.pack(time.monotonic_ns()))
        write_all(data_w, payload)


def pipe_transfers(payload: bytes, n: int, cpu: int | None = None) -> list[float]:
    """µs from a forked writer's first byte of ``payload`` to the last read, through an os.pipe
    of default size (as the agent's stdio); with ``cpu``, both ends on it."""
    (go_r, go_w), (data_r, data_w) = os.pipe(), os.pipe()
    writer = h.FORK.Process(target=_pipe_writer, args=(go_r, data_w, payload, cpu))
    writer.start()
    os.close(go_r)
    os.close(data_w)
    try:
        buf, out = memoryview(bytearray(STAMP.size + len(payload))), []
        with h.pinned(os.sched_getaffinity(0) if cpu is None else {cpu}):
            for _ in range(n + 5):  # the first 5: warm-up
                os.write(go_w, b"g")
                got = 0
                while got < len(buf):
                    if not (k := os.readv(data_r, [buf[got:]])):
                        raise h.BenchError("the pipe writer exited early")
                    got += k
                out.append((time.monotonic_ns() - STAMP.unpack_from(buf)[0]) / 1000)
        if buf[STAMP.size :] != payload:
            raise h.BenchError("a pipe transfer corrupted the payload")
        return out[5:]
    finally:
        os.close(go_w)  # EOF: the writer leaves its loop
        os.close(data_r)
        writer.join(5.0)
        writer.kill()
