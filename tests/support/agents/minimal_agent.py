"""A minimal agent on the standard library and ``osup_mp.wire`` only, for agent-check tests.

Run as a script it is a well-behaved agent that passes every ``osup-mp agent-check`` check
without the SDK. The ``broken_*.py`` agents beside it subclass :class:`MiniAgent` and break
one rule each; scripts find this module because Python puts a script's directory first on
``sys.path``.

Design decisions: one blocking loop (``poll`` on stdin with the time to the next heartbeat
as timeout), blocking writes on stdout (the checker always drains it), and one ``on_<type>``
method per message type so a broken variant overrides exactly the behaviour it breaks.
"""

from __future__ import annotations

import os
import select
import sys
import time
from typing import Any

from osup_mp.wire import FrameDecoder, pack

SEED_ARGS = ["--role", "main", "--elixir-mode"]


class MiniAgent:
    send_ready = True  # seed agents never send ready: their first heartbeat counts
    heartbeats = True

    def __init__(self) -> None:
        self.interval = int(os.environ.get("OSUP_HEARTBEAT_INTERVAL_MS", "1000")) / 1000
        self.decoder = FrameDecoder(require_type=True)
        self.stdout_fd = sys.stdout.fileno()

    # -- output --------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        while data:
            data = data[os.write(self.stdout_fd, data) :]

    def send(self, msg: dict[str, Any]) -> None:
        self.write(pack(msg))

    def ready_message(self) -> dict[str, Any]:
        return {"type": "ready", "pid": os.getpid(), "role": "main"}

    # -- hooks ---------------------------------------------------------------------------

    def after_ready(self) -> None:
        """Called once, right after ready (before the first heartbeat)."""

    def on_eof(self) -> int:
        """stdin closed: the exit status."""
        return 0

    def on_process_request(self, msg: dict[str, Any]) -> None:
        self.send({"type": "response", "id": msg.get("id"), "data": {"ok": True}})

    def on_checkpoint_request(self, msg: dict[str, Any]) -> None:
        self.send({"type": "checkpoint", "data": {"agent_state": {}, "memory_blocks": []}})

    def on_checkpoint_ack(self, msg: dict[str, Any]) -> None:
        pass

    def on_hot_reload(self, msg: dict[str, Any]) -> None:
        self.send({"type": "reload_result", "ok": False, "error": "no reloadable modules"})

    def on_restore(self, msg: dict[str, Any]) -> None:
        pass

    # -- the loop ------------------------------------------------------------------------

    def run(self) -> int:
        if sys.argv[-3:] != SEED_ARGS:
            sys.stderr.write(f"expected the seed's {' '.join(SEED_ARGS)}, got {sys.argv[1:]}\n")
            return 64
        if self.send_ready:
            self.send(self.ready_message())
        self.after_ready()
        next_beat = time.monotonic()
        poller = select.poll()
        poller.register(0, select.POLLIN)
        while True:
            now = time.monotonic()
            if self.heartbeats and now >= next_beat:
                self.send({"type": "heartbeat", "timestamp": time.time()})
                next_beat = now + self.interval
            timeout = max(0.0, next_beat - time.monotonic()) if self.heartbeats else None
            if not poller.poll(None if timeout is None else timeout * 1000):
                continue
            data = os.read(0, 65536)
            if not data:
                return self.on_eof()
            for msg in self.decoder.feed(data):
                handler = getattr(self, f"on_{msg['type']}", None)
                if handler is not None:
                    handler(msg)


if __name__ == "__main__":
    sys.exit(MiniAgent().run())
