"""Broken agent: never answers ``process_request`` (-> FAIL requests)."""

from __future__ import annotations

import sys
from typing import Any

from minimal_agent import MiniAgent


class Silent(MiniAgent):
    def on_process_request(self, msg: dict[str, Any]) -> None:
        pass


if __name__ == "__main__":
    sys.exit(Silent().run())
