"""Handles on other components, by name.

Components find each other by name through the parent (a broker, like Erlang's registered
names): the first use of a :class:`PeerRef` makes a socket pair, keeps one end and sends
the other through the parent to the callee; from then on the two talk directly, and the
parent is never on the path of a call between components. The caller's end is usable at
once: what it sends waits in the socket while the parent holds the other end for a callee
that is (re)starting, so a cast or an asynchronous call never waits for a peer's restart.
Only a blocking :meth:`PeerRef.call` waits, for the hand-over as for the answer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from osup_mp.runtime.calls import CallMux, ReplyCallback

if TYPE_CHECKING:
    from osup_mp.runtime.loop import ComponentLoop


class PeerRef:
    """A handle on another component, by name; connects lazily through the parent."""

    def __init__(self, loop: ComponentLoop, name: str) -> None:
        self._loop = loop
        self.name = name
        self._mux: CallMux | None = None

    def _connected(self, *, wait: bool) -> CallMux:
        if self._mux is None or self._mux.channel.closed:
            self._mux = self._loop.connect(self.name, wait=wait)
        return self._mux

    def mux(self) -> CallMux:
        """The connection's call multiplexer (connected first), for callers that keep many
        calls in flight and flush themselves."""
        return self._connected(wait=True)

    def call(self, request: Any, timeout: float | None = 5.0) -> Any:
        return self._connected(wait=True).call(request, timeout)

    def call_async(
        self, request: Any, callback: ReplyCallback, timeout: float | None = 5.0
    ) -> None:
        """Never waits: while the peer (re)starts, the call waits in the channel; if the
        peer cannot be reached, ``callback`` gets the error."""
        self._connected(wait=False).call_async(request, callback, timeout)

    def cast(self, request: Any) -> None:
        """Fire and forget; dropped when the peer is not running (as in OTP)."""
        self._connected(wait=False).cast(request)
