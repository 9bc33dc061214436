"""An agent that floods heartbeat frames from a thread while it echoes requests as usual:
``FLOOD_RATE`` frames per second from the start (default 325,000), and the request
``{"flood": N}`` changes the rate (0 stops it; the agent benchmark starts at 0). Frames from
the two threads never interleave: both write whole frames under one lock."""

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
    rate = int(os.environ.get("FLOOD_RATE", "325000"))

    def handle_request(self, data: Any) -> Any:
        if isinstance(data, dict) and "flood" in data:
            self.rate = int(data["flood"])
        return data

    def on_start(self) -> None:
        threading.Thread(target=self._flood, daemon=True).start()

    def _flood(self) -> None:
        tick = 0.01
        frame = pack({"type": "heartbeat", "timestamp": time.time()})
        next_at = time.monotonic()
        while True:
            count = int(self.rate * tick)
            if count and self.ready:
                with self.lock:
                    view = memoryview(frame * count)
                    while view:
                        view = view[os.write(self._out_fd, view) :]
            next_at = max(next_at + tick, time.monotonic() - 1.0)
            time.sleep(max(0.0, next_at - time.monotonic()))

    def _flush(self) -> None:
        with self.lock:
            out = self._out
            while out:
                del out[: os.write(self._out_fd, out)]


if __name__ == "__main__":
    sys.exit(Flooder(AgentOptions.parse()).run())
