"""The calls a child makes to the tree, served in the supervisor: ``connect`` (a fresh pipe
to a peer, one end handed to each), ``which_children``, and any other request by the
handler the application registered for its type (``Supervisor.call_handlers``).

Decision: the parent is a name broker, never on the data path. A ``connect`` hands over the
two ends of a new socketpair and keeps neither; a target that is starting, or dead with its
exit not served yet, is waited for (its restart), not refused, so a caller does not see the
gap a restart makes.
"""

from __future__ import annotations

import socket
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

    def answer(self, child: Child, call_id: int, request: Any) -> None:
        """Serve ``child``'s call ``call_id``: at once, or once what it waits for is done."""
        assert child.channel is not None
        if isinstance(request, Connect):
            self._broker(child, call_id, request.name)
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

    def _broker(self, caller: Child, call_id: int, name: str) -> None:
        """Hand ``caller`` and component ``name`` the two ends of a fresh pipe; a target
        that is starting (being restarted, say) is waited for, not refused."""
        if caller.channel is None:
            return  # the caller died while the target was starting
        target = next((c for c in self.children if c.name == name), None)
        if target is not None and target.state is ChildState.STARTING:
            target.on_started.append(self._broker_once_started(caller, call_id, name))
            return
        if target is None or target.channel is None or target.state is not ChildState.RUNNING:
            caller.channel.send(("reply", call_id, False, f"{name}: not running"))
            return
        a, b = socket.socketpair()
        try:
            if not target.channel.send_with_fds(("peer", caller.name), [b.fileno()]):
                # It died and its exit is not served yet (the caller saw its end of their
                # old pipe close first): wait for its restart, as for a start in progress.
                target.on_started.append(self._broker_once_started(caller, call_id, name))
                return
            caller.channel.send_with_fds(("reply", call_id, True, name), [a.fileno()])
        finally:
            a.close()
            b.close()

    def _broker_once_started(self, caller: Child, call_id: int, name: str) -> Started:
        process = caller.process

        def started(ok: bool, _why: str) -> None:
            if caller.process is not process:
                return  # the caller died (or was replaced) meanwhile
            if ok:
                self._broker(caller, call_id, name)
            elif caller.channel is not None:
                caller.channel.send(("reply", call_id, False, f"{name}: failed to start"))

        return started
