"""A seed-style agent: never sends ``ready``; its first heartbeat means it started."""

from __future__ import annotations

import sys

from minimal_agent import MiniAgent


class SeedStyle(MiniAgent):
    send_ready = False


if __name__ == "__main__":
    sys.exit(SeedStyle().run())
