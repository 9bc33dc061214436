"""The reference agent, except that it dies at once when started as a standby: a standby
crash loop, for the standby tests."""

from __future__ import annotations

import sys

from osup_mp.agent.reference.agent import MemoryAgent
from osup_mp.agent.sdk import run_agent


class StandbyCrashAgent(MemoryAgent):
    def on_start(self) -> None:
        if self.options.role == "standby":
            self.log("standby_crash: refusing to be a standby")
            raise SystemExit(3)
        super().on_start()


if __name__ == "__main__":
    sys.exit(run_agent(StandbyCrashAgent, sys.argv[1:]))
