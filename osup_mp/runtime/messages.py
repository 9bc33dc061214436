"""Typed messages: the records components exchange, and their checked raw form.

A request between components is a frozen record, and a component dispatches on its type
(:func:`~osup_mp.runtime.component.on_call`). Each record names its ``kind`` so that the
control socket's ``call`` door, which carries ``[kind, *args]`` lists, can be turned into
the record the component serves, with its arguments checked against the record's fields:
a malformed raw call is an error reply, never a crash of the component.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from osup_mp.runtime.calls import CallError

_SIMPLE = (int, float, str, bytes, bool, type(None))


def from_raw(kinds: dict[str, type], raw: list[Any] | tuple[Any, ...]) -> Any:
    """The record ``[kind, *args]`` stands for, among ``kinds``; :class:`CallError` when the
    kind is unknown, an argument is missing or extra, or a simple-typed one has another type."""
    kind = raw[0]
    cls = kinds.get(kind) if isinstance(kind, str) else None
    if cls is None:
        known = ", ".join(sorted(kinds))
        raise CallError(f"unknown call {kind!r} (known: {known})")
    fields = dataclasses.fields(cls)
    args = list(raw[1:])
    required = sum(
        f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        for f in fields
    )
    if not required <= len(args) <= len(fields):
        names = " ".join(f.name for f in fields) or "no arguments"
        raise CallError(f"{kind}: takes {names}; got {len(args)} argument(s)")
    hints = _hints(cls)
    for field, value in zip(fields, args, strict=False):
        allowed = hints.get(field.name)
        if allowed is not None and not isinstance(value, allowed):
            wanted = " or ".join(t.__name__ for t in allowed)
            raise CallError(f"{kind}: {field.name} must be {wanted}, not {type(value).__name__}")
    return cls(*args)


def _hints(cls: type) -> dict[str, tuple[type, ...]]:
    """Field name -> the simple types it accepts; fields of richer types are not checked."""
    found: dict[str, tuple[type, ...]] = {}
    for name, hint in typing.get_type_hints(cls).items():
        options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
        if all(t in _SIMPLE for t in options):
            # An int is a fine float; msgpack has no tuple, so neither is checked further.
            found[name] = options + ((int,) if float in options else ())
    return found


def pickled_by_fields(*classes: type) -> None:
    """Pickle each of ``classes`` (frozen dataclasses) as its class and its field values.
    The dataclass default for slotted classes (``__getstate__`` / ``__setstate__``) walks
    ``fields()`` for every record, both ends together about 1 µs more per record that
    crosses a channel (7% of the WAL manager's time under single-entry appends)."""
    for cls in classes:
        if not dataclasses.is_dataclass(cls) or hasattr(cls, "__post_init__"):
            raise TypeError(f"{cls.__name__}: not a plain dataclass, cannot be rebuilt by fields")
        fields = dataclasses.fields(cls)
        if any(not f.init for f in fields):
            raise TypeError(f"{cls.__name__}: a field outside __init__ cannot be rebuilt")
        names = tuple(f.name for f in fields)
        # setattr: a method assigned to a class is what mypy refuses, and this is one.
        setattr(cls, "__reduce__", _reducer(cls, names))  # noqa: B010


def _reducer(cls: type, names: tuple[str, ...]) -> Callable[[Any], tuple[type, tuple[Any, ...]]]:
    def __reduce__(self: Any) -> tuple[type, tuple[Any, ...]]:
        return cls, tuple([getattr(self, name) for name in names])

    return __reduce__


# -- what the runtime itself serves and sends ------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ping:
    """Answered ``"pong"`` by every component."""

    kind: ClassVar[str] = "ping"


@dataclass(frozen=True, slots=True)
class Connect:
    """To the supervisor: hand me a pipe to component ``name``."""

    name: str
    kind: ClassVar[str] = "connect"


@dataclass(frozen=True, slots=True)
class WhichChildren:
    """To the supervisor: ``[(name, pid), ...]`` of the children running."""

    kind: ClassVar[str] = "which_children"


@dataclass(frozen=True, slots=True)
class PeerDown:
    """Info: component ``name``, which this one called, has exited."""

    name: str
    kind: ClassVar[str] = "peer_down"


pickled_by_fields(Ping, Connect, WhichChildren, PeerDown)
