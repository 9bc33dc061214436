"""Components used by the integration tests (imported by tree_main.py in the tree process)."""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

from loguru import logger

from osup_mp.runtime.component import NOREPLY, Caller, Component, on_call, on_info


def _record(kind: str, *fields: tuple[str, Any]) -> type:
    """A request record the way the package declares its own (frozen, with a ``kind``)."""
    cls = dataclasses.make_dataclass(kind.title().replace("_", ""), fields, frozen=True, slots=True)
    cls.kind = kind  # type: ignore[attr-defined]
    return cls


EchoValue = _record("echo", ("value", Any))
Pid = _record("pid")
PeerCall = _record("peer_call", ("name", str), ("request", list[Any]))
PeerCallAsync = _record("peer_call_async", ("name", str), ("request", list[Any]))
PeerCast = _record("peer_cast", ("name", str), ("request", list[Any]))
Later = _record("later")
Never = _record("never")
Held = _record("held")
Crash = _record("crash")
Exit = _record("exit")
Fail = _record("fail")
Deaf = _record("deaf", ("seconds", float))


@dataclasses.dataclass(frozen=True, slots=True)
class AnswerLater:
    """The timer that answers the callers of ``later``."""


class Echo(Component):
    """Answers calls; on request crashes, exits normally, or calls a peer."""

    def __init__(
        self,
        fail_init_flag: Path | None = None,
        *,
        init_delay: float = 0.0,
        ignore_term: bool = False,
        hold: Path | None = None,
    ) -> None:
        self.fail_init_flag = fail_init_flag
        self.init_delay = init_delay  # a slow or (large values) hanging start-up
        self.hold = hold  # init waits while this file exists: a start-up the test ends
        self.ignore_term = ignore_term  # a component that will not stop politely
        self.pending: list[Caller] = []

    def init(self) -> None:
        if self.ignore_term:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if self.fail_init_flag is not None and self.fail_init_flag.exists():
            raise RuntimeError(f"init refused: {self.fail_init_flag} exists")
        if self.init_delay:
            time.sleep(self.init_delay)  # blocking on purpose: the supervisor must not
        while self.hold is not None and self.hold.exists():
            time.sleep(0.01)  # blocking on purpose, as above

    @on_call(EchoValue)
    def _echo(self, request: EchoValue, caller: Caller) -> Any:
        return request.value

    @on_call(Pid)
    def _pid(self, request: Pid, caller: Caller) -> int:
        return os.getpid()

    @on_call(PeerCall)
    def _peer_call(self, request: PeerCall, caller: Caller) -> Any:
        return self.peer(request.name).call(list(request.request))

    @on_call(PeerCallAsync)
    def _peer_call_async(self, request: PeerCallAsync, caller: Caller) -> Any:
        """Call a peer without waiting: this component keeps serving meanwhile."""

        def answered(ok: bool, value: Any) -> None:
            if ok:
                self.reply(caller, value)
            else:
                self.reply_error(caller, str(value))

        self.peer(request.name).call_async(list(request.request), answered, timeout=30.0)
        return NOREPLY

    @on_call(PeerCast)
    def _peer_cast(self, request: PeerCast, caller: Caller) -> str:
        self.peer(request.name).cast(list(request.request))
        return "cast"

    @on_call(Later)
    def _later(self, request: Later, caller: Caller) -> Any:
        self.pending.append(caller)  # answered from a timer: exercises NOREPLY
        self.send_after(0.01, AnswerLater())
        return NOREPLY

    @on_call(Never)
    def _never(self, request: Never, caller: Caller) -> Any:
        self.pending.append(caller)  # held, never answered: a peer that hangs its callers
        return NOREPLY

    @on_call(Held)
    def _held(self, request: Held, caller: Caller) -> int:
        return len(self.pending)

    @on_call(Crash)
    def _crash(self, request: Crash, caller: Caller) -> Any:
        raise RuntimeError("asked to crash")

    @on_call(Exit)
    def _exit(self, request: Exit, caller: Caller) -> str:
        self.stop("normal")
        return "bye"

    @on_call(Fail)
    def _fail(self, request: Fail, caller: Caller) -> str:
        self.stop("failed on request")
        return "failing"

    @on_call(Deaf)
    def _deaf(self, request: Deaf, caller: Caller) -> Any:
        """Shut this end of the supervisor's channel and stay alive a while: what the
        supervisor sees of a child that died and is not reaped yet (a send fails with EPIPE,
        no exit to serve). Then the loop reads EOF from the parent and stops."""
        self.parent.channel.sock.shutdown(socket.SHUT_RD)
        logger.info("deaf for {:g}s", request.seconds)
        time.sleep(request.seconds)  # blocking on purpose: the loop must not read meanwhile
        return NOREPLY

    @on_info(AnswerLater)
    def _answer_later(self, msg: AnswerLater) -> None:
        while self.pending:
            self.reply(self.pending.pop(), "later")
