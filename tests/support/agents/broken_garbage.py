"""Broken agent: right after ``ready`` it writes bytes that are not a frame (-> FAIL frames)."""

from __future__ import annotations

import sys
from typing import Any

from minimal_agent import MiniAgent

GARBAGE = b"this is not a frame\n"


class Garbage(MiniAgent):
    def ready_message(self) -> dict[str, Any]:
        return {"type": "ready", "role": "main"}  # fixed size: the test knows the offset

    def after_ready(self) -> None:
        self.write(GARBAGE)


if __name__ == "__main__":
    sys.exit(Garbage().run())
