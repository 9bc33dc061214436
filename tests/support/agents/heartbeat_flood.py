"""A test agent that floods heartbeat frames (``FLOOD_RATE`` per second, default 325,000)
from a thread while it echoes requests as usual. Frames from the two threads never
interleave: both write under one lock, whole frames at a time."""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any

from osup_mp.agent.sdk import Agent, AgentOptions
from osup_mp.wire import pack


class Flooder(Agent):
    lock = threading.Lock()

    def handle_request(self, data: Any) -> Any:
        return data

    def on_start(self) -> None:
        threading.Thread(target=self._flood, daemon=True).start()

    def _flood(self) -> None:
        rate = int(os.environ.get("FLOOD_RATE", "325000"))
        tick = 0.01
        frame = pack({"type": "heartbeat", "timestamp": time.time()})
        chunk = frame * max(1, int(rate * tick))
        while not self.ready:
            time.sleep(0.01)
        next_at = time.monotonic()
        while True:
            with self.lock:
                view = memoryview(chunk)
                while view:
                    view = view[os.write(self._out_fd, view) :]
            next_at += tick
            time.sleep(max(0.0, next_at - time.monotonic()))

    def _flush(self) -> None:
        with self.lock:
            out = self._out
            while out:
                del out[: os.write(self._out_fd, out)]


if __name__ == "__main__":
    sys.exit(Flooder(AgentOptions.parse()).run())
