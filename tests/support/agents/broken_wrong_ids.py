"""Broken agent: answers every ``process_request`` with the wrong id (id + 1000)."""

from __future__ import annotations

import sys
from typing import Any

from minimal_agent import MiniAgent


class WrongIds(MiniAgent):
    def on_process_request(self, msg: dict[str, Any]) -> None:
        self.send({"type": "response", "id": msg["id"] + 1000, "data": {}})


if __name__ == "__main__":
    sys.exit(WrongIds().run())
