"""Broken agent: when stdin closes it writes half a frame, then exits (-> FAIL frames)."""

from __future__ import annotations

import sys

from minimal_agent import MiniAgent

from osup_mp.wire import pack


class Truncated(MiniAgent):
    def on_eof(self) -> int:
        frame = pack({"type": "heartbeat", "timestamp": 0})
        self.write(frame[: len(frame) // 2])
        return 0


if __name__ == "__main__":
    sys.exit(Truncated().run())
