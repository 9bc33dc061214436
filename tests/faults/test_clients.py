"""Fault matrix: slow and flooding clients.

Four clients that send many requests and never read their answers, plus one that floods
heavy requests, on both the control socket and the main agent's data plane. Meanwhile a
polite client's pings must stay fast, the main agent must never be taken for hung, and the
supervisor must still notice and replace a SIGKILLed component at once.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from pathlib import Path

import psutil
import pytest
from support import SCRIPTED_AGENT, Tree, wait_for

from osup_mp.client import Client
from osup_mp.wire import FrameDecoder, pack

pytestmark = pytest.mark.faults

SECONDS = 4.0  # of misbehaviour, while the polite client measures
WORST_PING = 0.25


class Hog:
    """Sends requests with big answers as fast as the socket takes them; never reads."""

    def __init__(self, path: Path, frame: bytes) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.connect(str(path))
        self.sock.setblocking(False)
        self.frames = frame * 64
        self.out = bytearray()
        self.dropped = False

    def push(self) -> None:
        if self.dropped:
            return
        if not self.out:
            self.out += self.frames  # whole frames only: a cut one would be a bad frame
        try:
            del self.out[: self.sock.send(self.out)]
        except BlockingIOError:
            pass
        except OSError:
            self.dropped = True  # the server gave up on us: what it should do


class Flooder:
    """Pipelines heavy requests as fast as they are taken, and reads what comes back."""

    def __init__(self, path: Path, frame: bytes) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(path))
        self.sock.setblocking(False)
        self.frames = frame * 256
        self.out = bytearray()
        self.decoder = FrameDecoder(max_frame=1 << 24)
        self.answers = 0

    def push(self) -> None:
        if not self.out:
            self.out += self.frames
        try:
            del self.out[: self.sock.send(self.out)]
        except BlockingIOError:
            pass
        try:
            while data := self.sock.recv(1 << 16):
                self.answers += len(self.decoder.feed(data))
        except BlockingIOError:
            pass


def _ping(client: Client, command: str) -> float:
    started = time.monotonic()
    assert client.request(command) == "pong"
    return time.monotonic() - started


def test_slow_and_flooding_clients(make_tree) -> None:
    tree: Tree = make_tree(
        o_supervisor={
            "heartbeat_interval": 200,
            "heartbeat_timeout": 1000,
            "gerbil_executable": sys.executable,
            "gerbil_main_script": str(SCRIPTED_AGENT),
        },
        agent={"ready_timeout": 10000},
    ).start()
    agent = tree.running_agent()
    assert agent is not None
    control, data = tree.cfg.control_socket, tree.cfg.data_socket("main")
    # Answers pile up unread until each hog's in-flight bound stops the server reading it
    # (or its output bound drops it): either way the loops stay free for others.
    big = {"do": "echo", "pad": "x" * 16000}
    hogs = [
        Hog(control, pack({"id": 1, "command": "config", "args": {}})),
        Hog(control, pack({"id": 1, "command": "config", "args": {}})),
        Hog(data, pack({"id": 1, "command": "request", "args": {"data": big}})),
        Hog(data, pack({"id": 1, "command": "request", "args": {"data": big}})),
    ]
    heavy = {"id": 1, "command": "request", "args": {"data": {"do": "sleep", "s": 0.002}}}
    flooder = Flooder(data, pack(heavy))
    worst = {"control": 0.0, "data-plane": 0.0}
    with Client(control, timeout=10) as polite_c, Client(data, timeout=10) as polite_d:
        deadline = time.monotonic() + SECONDS
        while time.monotonic() < deadline:
            for hog in hogs:
                hog.push()
            flooder.push()
            worst["control"] = max(worst["control"], _ping(polite_c, "ping"))
            worst["data-plane"] = max(worst["data-plane"], _ping(polite_d, "ping"))
            time.sleep(0.02)
        # The supervisor still reaps at once: kill a component under the same load.
        # (Watched with psutil: ``status`` itself waits for telemetry.)
        victim = "telemetry"
        old = tree.pids()[victim]
        assert old is not None and tree.proc is not None
        supervisor = psutil.Process(tree.proc.pid)
        before = {p.pid for p in supervisor.children()}
        killed_at = time.monotonic()
        os.kill(old, signal.SIGKILL)
        while True:
            for hog in hogs:
                hog.push()
            flooder.push()
            if {p.pid for p in supervisor.children()} - before:
                noticed = time.monotonic() - killed_at
                break
            assert time.monotonic() - killed_at < 10, f"{victim} not restarted in 10 s"
            time.sleep(0.001)
        wait_for(lambda: (tree.pids().get(victim) or old) != old, 10, what="the new pid")
    print(
        f"worst ping: control {worst['control'] * 1000:.1f} ms, "
        f"data plane {worst['data-plane'] * 1000:.1f} ms; flooder got {flooder.answers} "
        f"answers; {sum(h.dropped for h in hogs)}/4 hogs dropped; "
        f"{victim} SIGKILL -> replaced in {noticed * 1000:.1f} ms"
    )
    for sock in [h.sock for h in hogs] + [flooder.sock]:
        sock.close()
    assert worst["control"] < WORST_PING, worst
    assert worst["data-plane"] < WORST_PING, worst
    assert noticed < 1.0, f"{victim} replaced {noticed:.3f}s after SIGKILL"
    after = tree.running_agent()
    assert after is not None and after["pid"] == agent["pid"] and after["restarts"] == 0
    assert "heartbeat timeout" not in tree.log_text
    assert "bad frame" not in tree.log_text
