"""A test agent that misbehaves on request: ``{"do": ...}`` picks the misbehaviour.

Normal requests are echoed. Start-up behaviour comes from the environment:
``SCRIPTED_EXIT_AFTER`` (seconds after ready, then exit 3), ``SCRIPTED_HOG_MB`` (allocate
and touch that much memory once ready; ``SCRIPTED_MAIN_HOG_MB``: only as the main) and
``SCRIPTED_FAIL_START`` (a path: while that file exists, exit before ready).
"""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import time
from typing import Any

import msgpack

from osup_mp.agent.sdk import Agent, AgentOptions


class Scripted(Agent):
    def on_start(self) -> None:
        flag = os.environ.get("SCRIPTED_FAIL_START")
        if flag and os.path.exists(flag):  # exits before ready while the flag file exists
            os._exit(5)
        self.hog = b""
        mb = int(os.environ.get("SCRIPTED_HOG_MB", "0"))
        if self.options.role == "main":
            mb += int(os.environ.get("SCRIPTED_MAIN_HOG_MB", "0"))
        if mb:
            self.hog = bytearray(os.urandom(1024)) * (mb * 1024)

    def after_batch(self) -> None:
        limit = os.environ.get("SCRIPTED_EXIT_AFTER")
        if limit is not None:
            self._flush()
            os._exit(3)

    def handle_request(self, data: Any) -> Any:
        action = data.get("do") if isinstance(data, dict) else None
        raw = {
            "garbage": struct.pack(">I", 5) + b"\xc1\xc1\xc1\xc1\xc1",
            "oversized": struct.pack(">I", 0xFFFFFFF0),
            "nonmap": struct.pack(">I", 4) + msgpack.packb([1, 2, 3]),
            "truncated": struct.pack(">I", 100) + b"\x81\xa4type",
        }.get(action or "")
        if raw is not None:
            self._flush()
            os.write(self._out_fd, raw)
            if action == "truncated":
                os._exit(0)
            return "sent"
        if action == "crash":
            os._exit(7)
        if action == "sleep":  # answer late: the manager's request deadline fires first
            time.sleep(float(data.get("s", 0.5)))
            return "slept"

        if action == "close_stderr":  # as an agent that silences itself does: EOF, alive
            os.close(1)  # the SDK points fd 1 at stderr too (frames go out on a copy)
            os.close(2)
            return "closed"
        if action == "ignore_term":  # an agent that will not stop politely
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            return "ignoring"
        if action == "spawn":  # a child that outlives us unless someone kills it
            child = subprocess.Popen(
                [sys.executable, "-c", "import time; time.sleep(300)"],
                start_new_session=bool(data.get("setsid")),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            return child.pid
        if action == "log_text":
            self.send({"type": "wal_entry", "data": "not a map"})
            return "logged"
        if action == "last_ack":
            return self.last_ack
        if action == "propose":
            return self.propose("X = 1\n", "memory_system", "a test proposal")
        if action == "last_result":
            return self.last_result
        return data

    last_ack: Any = None
    last_result: Any = None
    read_only_ops = frozenset({"peek", "count"})

    def on_evolution_result(self, msg: Any) -> None:
        self.last_result = dict(msg)

    def on_message(self, msg: Any) -> None:
        if msg.get("type") == "wal_ack":
            self.last_ack = msg.get("error") or msg.get("seq")


if __name__ == "__main__":
    sys.exit(Scripted(AgentOptions.parse(sys.argv[1:])).run())
