"""Running a restore plan's calls to the vault and the WAL, now or from the loop.

A plan (:meth:`.durability.Durability.planning`) is written once, as a generator that
yields each call it needs (peer, request, timeout) and gets the reply back (or the error
thrown in). Two drivers run it: :func:`run_now` makes blocking calls, for a component's
``init`` (it serves nothing yet); :class:`PlanInFlight` makes asynchronous calls, so that the
manager's loop keeps serving while a restarting agent's (or a standby's) state is looked
up.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

from osup_mp.runtime.calls import CallError

if TYPE_CHECKING:
    from osup_mp.runtime.component import Component

Call = tuple[str, Any, float]  # peer, request, timeout (s)
Restore = dict[str, Any] | None
Steps = Generator[Call, Any, Restore]
Planned = Callable[[Restore, Exception | None], None]


def run_now(steps: Steps, host: Component) -> Restore:
    """Run ``steps`` with blocking calls; raises what the plan raises (CallError)."""
    try:
        call = next(steps)
        while True:
            peer, request, timeout = call
            try:
                reply = host.peer(peer).call(request, timeout=timeout)
            except CallError as exc:
                call = steps.throw(exc)
            else:
                call = steps.send(reply)
    except StopIteration as done:
        restore: Restore = done.value
        return restore


class PlanInFlight:
    """``steps`` run with asynchronous calls; ``done(restore, None)`` or ``done(None,
    error)`` once they end, unless :meth:`cancel` came first."""

    def __init__(self, steps: Steps, host: Component, done: Planned) -> None:
        self._steps = steps
        self._host = host
        self._done = done
        self.cancelled = False
        self.calls = 0  # calls sent so far (a message sent after the n-th is ordered after it)

    def start(self) -> None:
        """Make the first call (``done`` may run before this returns)."""
        self._advance(self._steps.send, None)  # send(None) starts a generator

    def cancel(self) -> None:
        """Drop the plan: its descriptors are closed, a late reply is discarded."""
        self.cancelled = True
        self._steps.close()

    def _advance(self, step: Callable[[Any], Call], arg: Any) -> None:
        """One step of the plan: ``step(arg)`` is ``send(reply)`` or ``throw(error)``."""
        try:
            peer, request, timeout = step(arg)
        except StopIteration as finished:
            self._done(finished.value, None)
            return
        except (CallError, KeyError) as exc:
            self._done(None, exc)
            return
        try:
            reply = functools.partial(self._reply, peer)
            self._host.peer(peer).call_async(request, reply, timeout)
            self.calls += 1
        except CallError as exc:
            self._advance(self._steps.throw, exc)

    def _reply(self, peer: str, ok: bool, value: Any) -> None:
        if self.cancelled:
            if isinstance(value, tuple):  # (value, descriptors) nobody will read
                for fd in value[1]:
                    os.close(fd)
            return
        if ok:
            self._advance(self._steps.send, value)
        else:
            error = value if isinstance(value, CallError) else CallError(f"{peer}: {value}")
            self._advance(self._steps.throw, error)
