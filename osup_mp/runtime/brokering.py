"""The calls a child makes to the tree, served in the supervisor: ``connect`` (one end of
the caller's fresh socket pair, passed on to a peer), ``which_children``, and any other
request by the handler the application registered for its type
(``Supervisor.call_handlers``).

Decision: the parent is a name broker, never on the data path. A ``connect`` carries the
end of a socket pair the caller made (the caller uses its own end at once) and the parent
passes it on; a target that is starting, or dead with its exit not served yet, is waited
for (its restart), not refused, so a caller does not see the gap a restart makes. Whatever
happens, the parent closes its copy of the end it was given exactly once.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from osup_mp.runtime.children import Child, ChildState, Started
from osup_mp.runtime.messages import Connect, WhichChildren

__all__ = ["CallBroker", "CallHandler", "Reply"]

Reply = Callable[[bool, Any], None]
#: Serves a child's call to the tree, answering through ``reply`` at once or later (starting
#: a shadow takes seconds, and the loop must not wait for it).
CallHandler = Callable[[Child, Any, Reply], None]


class CallBroker:
    """Answers the supervisor's children's calls. It reads the supervisor's own children
    list and handler table, not copies: both change while it serves."""

    def __init__(self, children: list[Child], handlers: dict[type, CallHandler]) -> None:
        self.children = children
        self.handlers = handlers

    def answer(self, child: Child, call_id: int, request: Any, fds: list[int]) -> None:
        """Serve ``child``'s call ``call_id`` (with ``fds`` attached, this process's to
        close): at once, or once what it waits for is done."""
        assert child.channel is not None
        if isinstance(request, Connect) and len(fds) == 1:
            self._broker(child, call_id, request.name, fds[0])
            return
        for fd in fds:
            os.close(fd)
        if isinstance(request, Connect):
            child.channel.send(("reply", call_id, False, "connect: attach one socket end"))
            return
        if isinstance(request, WhichChildren):
            value: Any = [(c.name, c.pid) for c in self.children if c.pid]
            child.channel.send(("reply", call_id, True, value))
            return
        handler = self.handlers.get(type(request))
        if handler is None:
            child.channel.send(("reply", call_id, False, f"supervisor: unknown call {request!r}"))
            return
        process = child.process

        def reply(ok: bool, value: Any) -> None:
            if child.process is process and child.channel is not None:
                child.channel.send(("reply", call_id, ok, value))

        try:
            handler(child, request, reply)
        except Exception as exc:  # a bad request must never take the parent down
            reply(False, f"{type(exc).__name__}: {exc}")

    def _broker(self, caller: Child, call_id: int, name: str, fd: int) -> None:
        """Pass the caller's socket end ``fd`` to component ``name``; a target that is
        starting (being restarted, say) is waited for, not refused."""
        if caller.channel is None:
            os.close(fd)  # the caller died while the target was starting
            return
        target = next((c for c in self.children if c.name == name), None)
        if target is not None and target.state is ChildState.STARTING:
            target.on_started.append(self._broker_once_started(caller, call_id, name, fd))
            return
        if target is None or target.channel is None or target.state is not ChildState.RUNNING:
            os.close(fd)  # the caller's end reads EOF: what it sent fails
            caller.channel.send(("reply", call_id, False, f"{name}: not running"))
            return
        if not target.channel.send_with_fds(("peer", caller.name), [fd]):
            # It died and its exit is not served yet (the caller saw its end of their old
            # pipe close first): wait for its restart, as for a start in progress.
            target.on_started.append(self._broker_once_started(caller, call_id, name, fd))
            return
        os.close(fd)
        caller.channel.send(("reply", call_id, True, name))

    def _broker_once_started(self, caller: Child, call_id: int, name: str, fd: int) -> Started:
        process = caller.process

        def started(ok: bool, _why: str) -> None:
            if caller.process is not process:
                os.close(fd)  # the caller died (or was replaced) meanwhile
            elif ok:
                self._broker(caller, call_id, name, fd)
            else:
                os.close(fd)
                if caller.channel is not None:
                    caller.channel.send(("reply", call_id, False, f"{name}: failed to start"))

        return started
