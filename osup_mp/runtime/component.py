"""The component base class: a small actor in the spirit of Erlang's ``gen_server``.

Subclasses fill in :meth:`Component.init`, :meth:`~Component.handle_call`,
:meth:`~Component.handle_cast`, :meth:`~Component.handle_info` and
:meth:`~Component.terminate`, and never write a loop of their own: the process runs
:class:`~osup_mp.runtime.loop.ComponentLoop`.

The one decision: requests are typed records (:mod:`osup_mp.runtime.messages`) dispatched
through a table built from the methods marked :func:`on_call` / :func:`on_cast` /
:func:`on_info`, not if-chains on a tag.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, TypeVar

from loguru import logger

from osup_mp.runtime.calls import CallError, CallMux
from osup_mp.runtime.channel import Channel
from osup_mp.runtime.messages import PeerDown, Ping, from_raw

if TYPE_CHECKING:
    from osup_mp.runtime.loop import ComponentLoop
    from osup_mp.runtime.peers import PeerRef

NOREPLY: Any = object()
"""Returned by ``handle_call`` to answer later with :meth:`Component.reply`."""

NORMAL_REASONS = frozenset({"normal", "shutdown"})


class Caller(NamedTuple):
    """Who to answer: the channel a call came on and its correlation id. (A named tuple:
    one is made per call received, so it must be cheap.)"""

    channel: Channel
    call_id: int


_Handler = TypeVar("_Handler", bound=Callable[..., Any])


def on_call(*kinds: type) -> Callable[[_Handler], _Handler]:
    """Mark a method ``(self, request, caller)`` as the handler of calls whose request is
    an instance of one of ``kinds``."""

    def mark(fn: _Handler) -> _Handler:
        fn.__dict__.setdefault("_osup_calls", []).extend(kinds)
        return fn

    return mark


def on_cast(*kinds: type) -> Callable[[_Handler], _Handler]:
    """Mark a method ``(self, request)`` as the handler of casts of one of ``kinds``."""

    def mark(fn: _Handler) -> _Handler:
        fn.__dict__.setdefault("_osup_casts", []).extend(kinds)
        return fn

    return mark


def on_info(*kinds: type) -> Callable[[_Handler], _Handler]:
    """Mark a method ``(self, msg)`` as the handler of info messages (timers,
    :class:`~osup_mp.runtime.messages.PeerDown`) of one of ``kinds``."""

    def mark(fn: _Handler) -> _Handler:
        fn.__dict__.setdefault("_osup_infos", []).extend(kinds)
        return fn

    return mark


# What epoll reports for a hang-up or an error wakes both sides, as ``selectors`` does.
class Component:
    """Base class for components. Override the callbacks; use the helpers."""

    #: Component name as registered in the tree; set by the runtime before :meth:`init`.
    name: str = ""
    #: Default reply to calls nobody handles.
    unknown_call_error: ClassVar[str] = "unknown call"

    _loop: ComponentLoop
    #: Request type -> handler, from the methods marked :func:`on_call` / :func:`on_cast`
    #: here and in the base classes; ``_kinds`` finds a raw ``[kind, *args]``'s record.
    _calls: ClassVar[dict[type, Callable[..., Any]]] = {}
    _casts: ClassVar[dict[type, Callable[..., Any]]] = {}
    _infos: ClassVar[dict[type, Callable[..., Any]]] = {}
    _kinds: ClassVar[dict[str, type]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _build_tables(cls)

    # -- callbacks ---------------------------------------------------------------------------

    def init(self) -> None:
        """Set up state. Raising here fails the start (the supervisor reports it)."""

    def handle_call(self, request: Any, caller: Caller) -> Any:
        """Answer a call: return the reply, or :data:`NOREPLY` and :meth:`reply` later.
        Dispatches by the request's type; a raw ``[kind, *args]`` (the control socket's
        ``call`` door) is first turned into the record of that kind."""
        handler = self._calls.get(type(request))
        if handler is None and isinstance(request, str):
            request = [request]
        if handler is None and isinstance(request, list | tuple) and request:
            request = from_raw(self._kinds, request)
            handler = self._calls.get(type(request))
        if handler is None:
            raise CallError(f"{self.unknown_call_error}: {request!r}")
        return handler(self, request, caller)

    def handle_cast(self, request: Any) -> None:
        """Handle a one-way message, by its type."""
        handler = self._casts.get(type(request))
        if handler is None:
            logger.warning("{}: unexpected cast {!r}", self.name, request)
        else:
            handler(self, request)

    def handle_info(self, msg: Any) -> None:
        """Handle a timer message or any other message that is not a call or cast, by its
        type (:func:`on_info`). :class:`~osup_mp.runtime.messages.PeerDown` says a component
        this one called has exited (its next call reconnects); components that care handle
        it."""
        handler = self._infos.get(type(msg))
        if handler is not None:
            handler(self, msg)
        elif not isinstance(msg, PeerDown):
            logger.debug("{}: unexpected info {!r}", self.name, msg)

    @on_call(Ping)
    def _ping(self, request: Ping, caller: Caller) -> str:
        return "pong"

    def terminate(self, reason: str) -> None:
        """Release resources; called on every exit the process survives to see."""

    # -- helpers -----------------------------------------------------------------------------

    @property
    def parent(self) -> CallMux:
        """The supervisor, for calls such as :class:`~osup_mp.runtime.messages.WhichChildren`."""
        return self._loop.parent

    def peer(self, name: str) -> PeerRef:
        return self._loop.peer(name)

    def gather(
        self,
        calls: list[tuple[str, Any]],
        done: Callable[[list[tuple[bool, Any]]], None],
        timeout: float = 5.0,
    ) -> None:
        """Make every ``(peer, request)`` call at once; ``done(results)`` once all are
        answered, each ``(ok, value)`` (a peer that is not running gives ``(False, why)``)."""
        results: list[tuple[bool, Any]] = [(False, None)] * len(calls)
        pending = [len(calls)]

        def answer(index: int, ok: bool, value: Any) -> None:
            results[index] = (ok, value)
            pending[0] -= 1
            if pending[0] == 0:
                done(results)

        for index, (peer, request) in enumerate(calls):
            try:
                self.peer(peer).call_async(request, functools.partial(answer, index), timeout)
            except CallError as exc:
                answer(index, False, str(exc))

    def reply(self, caller: Caller, value: Any) -> None:
        caller.channel.send(("reply", caller.call_id, True, value))

    def reply_error(self, caller: Caller, error: str) -> None:
        caller.channel.send(("reply", caller.call_id, False, error))

    def send_after(self, delay: float, msg: Any) -> int:
        return self._loop.add_timer(delay, msg)

    def cancel_timer(self, ref: int) -> None:
        self._loop.cancel_timer(ref)

    def watch_fd(self, fd: int, callback: Callable[[], None]) -> None:
        """Run ``callback`` whenever ``fd`` is readable (e.g. an agent's stdout)."""
        self._loop.set_watch(fd, callback, self._loop.writer_of(fd))

    def watch_writable(self, fd: int, callback: Callable[[], None] | None) -> None:
        """Run ``callback`` whenever ``fd`` can take more output (a pipe whose buffer was
        full); ``None`` stops that. Works for fds also watched for reading, and for not."""
        self._loop.set_watch(fd, self._loop.reader_of(fd), callback)

    def unwatch_fd(self, fd: int) -> None:
        self._loop.set_watch(fd, None, None)

    def after_events(self) -> None:
        """Called once per loop wake-up after every event was handled: flush batched output."""

    def stop(self, reason: str = "normal") -> None:
        """Leave the loop after the current batch; ``reason`` decides the exit status."""
        self._loop.stop_reason = reason


def _build_tables(cls: type[Component]) -> None:
    calls, casts, infos = dict(cls._calls), dict(cls._casts), dict(cls._infos)
    for member in vars(cls).values():
        calls.update(dict.fromkeys(getattr(member, "_osup_calls", ()), member))
        casts.update(dict.fromkeys(getattr(member, "_osup_casts", ()), member))
        infos.update(dict.fromkeys(getattr(member, "_osup_infos", ()), member))
    cls._calls, cls._casts, cls._infos = calls, casts, infos
    cls._kinds = {getattr(t, "kind", t.__name__): t for t in (*calls, *casts)}


_build_tables(Component)
