"""Broken agent: sends ``ready`` and never a heartbeat (-> FAIL heartbeats)."""

from __future__ import annotations

import sys

from minimal_agent import MiniAgent


class NoHeartbeat(MiniAgent):
    heartbeats = False


if __name__ == "__main__":
    sys.exit(NoHeartbeat().run())
