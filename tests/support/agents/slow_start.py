"""The reference agent with a start-up of 1 s (``SLOW_START_S``): an agent that loads
something large before it can serve, for the standby tests and benchmark."""

from __future__ import annotations

import os
import sys
import time

from osup_mp.agent.reference.agent import MemoryAgent
from osup_mp.agent.sdk import run_agent


class SlowStartAgent(MemoryAgent):
    def on_start(self) -> None:
        time.sleep(float(os.environ.get("SLOW_START_S", "1.0")))
        super().on_start()


if __name__ == "__main__":
    sys.exit(run_agent(SlowStartAgent, sys.argv[1:]))
