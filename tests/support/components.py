"""Components used by the integration tests (imported by tree_main.py in the tree process)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

from osup_mp.runtime.component import NOREPLY, Caller, Component


class Echo(Component):
    """Answers calls; on request crashes, exits normally, or calls a peer."""

    def __init__(
        self,
        fail_init_flag: Path | None = None,
        *,
        init_delay: float = 0.0,
        ignore_term: bool = False,
    ) -> None:
        self.fail_init_flag = fail_init_flag
        self.init_delay = init_delay  # a slow or (large values) hanging start-up
        self.ignore_term = ignore_term  # a component that will not stop politely
        self.pending: list[Caller] = []

    def init(self) -> None:
        if self.ignore_term:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if self.fail_init_flag is not None and self.fail_init_flag.exists():
            raise RuntimeError(f"init refused: {self.fail_init_flag} exists")
        if self.init_delay:
            time.sleep(self.init_delay)  # blocking on purpose: the supervisor must not

    def handle_call(self, request: Any, caller: Caller) -> Any:
        kind = request[0] if isinstance(request, tuple) else request
        if kind == "echo":
            return request[1]
        if kind == "pid":
            return os.getpid()
        if kind == "peer_call":  # ("peer_call", name, request)
            return self.peer(request[1]).call(tuple(request[2]))
        if kind == "later":  # answered from a timer: exercises NOREPLY
            self.pending.append(caller)
            self.send_after(0.01, "answer")
            return NOREPLY
        if kind == "never":  # held, never answered: a peer that hangs its callers
            self.pending.append(caller)
            return NOREPLY
        if kind == "held":
            return len(self.pending)
        if kind == "crash":
            raise RuntimeError("asked to crash")
        if kind == "exit":
            self.stop("normal")
            return "bye"
        if kind == "fail":
            self.stop("failed on request")
            return "failing"
        return super().handle_call(request, caller)

    def handle_info(self, msg: Any) -> None:
        if msg == "answer":
            while self.pending:
                self.reply(self.pending.pop(), "later")
        else:
            super().handle_info(msg)
