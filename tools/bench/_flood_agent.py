"""An agent for the heartbeat-flood figure of ``agent.py``: echoes requests; the request
``{"flood": N}`` makes a thread send N heartbeat frames per second (0 stops it). Both
threads write whole frames under one lock, so frames never interleave."""

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
    rate = 0

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
