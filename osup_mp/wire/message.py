"""One message <-> one frame: errors, limits, :func:`pack` and :func:`unpack_payload`.

The strict rules (what is refused, and why) are in the package docstring
(:mod:`osup_mp.wire`); :mod:`osup_mp.wire.stream` builds the incremental decoder and the
blocking helpers on the private checks here.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable, Mapping
from typing import Any

import msgpack  # type: ignore[import-untyped, unused-ignore]

DEFAULT_MAX_FRAME: int = 16 * 1024 * 1024
"""Default upper bound, in bytes, for one frame's payload (header excluded)."""

HEADER = struct.Struct(">I")
"""The 4-byte big-endian unsigned length prefix of every frame."""

_HEADER_SIZE = HEADER.size
_MAX_LENGTH = 0xFFFFFFFF  # the largest length a 4-byte prefix can express
_unpack_header_from = HEADER.unpack_from
_pack_header: Callable[[int], bytes] = HEADER.pack


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------


class FrameError(ValueError):
    """Base class of every error raised by this codec.

    When raised by :meth:`FrameDecoder.feed`, :attr:`messages` holds the
    messages that were decoded from the same ``feed()`` call before the bad
    frame (in order); it is empty otherwise.
    """

    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        self.messages: list[dict[str, Any]] = []


class FrameTooLarge(FrameError):
    """A length prefix or an encoded payload exceeds the ``max_frame`` limit.

    :attr:`size` is the offending length in bytes and :attr:`limit` the limit
    that was in force; the message names both.
    """

    def __init__(self, message: str, *, size: int = -1, limit: int = -1) -> None:
        super().__init__(message)
        self.size = size
        self.limit = limit


class BadMessage(FrameError):
    """A frame's payload is not an acceptable message.

    Raised for invalid MessagePack, trailing bytes inside a frame, a payload
    that is not a map, a non-``str`` key, an extension type, a zero-length
    frame, a missing or non-``str`` ``"type"`` (when required), and by
    :func:`pack` for a message that cannot be encoded.
    """


class TruncatedFrame(FrameError):
    """The stream ended in the middle of a frame (see :func:`read_frame`)."""


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def _check_max_frame(max_frame: int) -> int:
    """Validate *max_frame* and clamp it to what a 4-byte prefix can carry."""
    if isinstance(max_frame, bool) or not isinstance(max_frame, int):
        raise TypeError(f"max_frame must be an int, not {type(max_frame).__name__}")
    if max_frame < 1:
        raise ValueError(f"max_frame must be >= 1, got {max_frame}")
    return min(max_frame, _MAX_LENGTH)


def _too_large(what: str, size: int, limit: int) -> FrameTooLarge:
    return FrameTooLarge(
        f"{what} {size} bytes exceeds max_frame {limit} bytes",
        size=size,
        limit=limit,
    )


def _kind(obj: object) -> str:
    return type(obj).__name__


def _reject_ext(code: int, data: bytes) -> object:
    raise BadMessage(f"msgpack ext type {code} is not allowed")


def _reason(exc: BaseException) -> str:
    """A short human-readable reason for a msgpack decoding failure."""
    if isinstance(exc, msgpack.ExtraData):
        return "trailing bytes after the message inside the frame"
    if isinstance(exc, msgpack.StackError):
        return "message nested too deeply"
    if isinstance(exc, UnicodeDecodeError):
        return "str is not valid UTF-8"
    if isinstance(exc, msgpack.FormatError):
        return "invalid msgpack data"
    text = str(exc)
    if "max_ext_len" in text or "timestamp" in text.lower():
        return "msgpack ext types are not allowed"
    if "map key" in text:
        return f"map keys must be str ({text})"
    if "incomplete input" in text:
        return "payload ends in the middle of a msgpack object"
    if len(text) > 120:
        text = text[:117] + "..."
    return f"invalid msgpack ({_kind(exc)}: {text})" if text else "invalid msgpack"


def _decode(
    payload: bytes | bytearray | memoryview, size: int, require_type: bool
) -> dict[str, Any]:
    """Strictly decode one payload of *size* bytes (already size-checked)."""
    if size == 0:
        raise BadMessage("empty payload (zero-length frame) is not a map")
    try:
        obj = msgpack.unpackb(
            payload,
            raw=False,
            strict_map_key=True,
            ext_hook=_reject_ext,
            max_ext_len=0,
            max_str_len=size,
            max_bin_len=size,
            max_array_len=size,
            max_map_len=size,
        )
    except FrameError:
        raise
    except Exception as exc:
        raise BadMessage(_reason(exc)) from exc
    return _check_message(obj, require_type)


# Payloads up to this size are decoded by one reused Unpacker per stream (its limits: this
# size), which saves the per-call set-up of ``unpackb``; larger ones get limits of their own.
_SMALL = 4096
_SMALL_LIMITS = {f"max_{kind}_len": _SMALL for kind in ("str", "bin", "array", "map")}


def _small_unpacker() -> Any:
    return msgpack.Unpacker(
        raw=False,
        strict_map_key=True,
        ext_hook=_reject_ext,
        max_ext_len=0,
        max_buffer_size=2 * _SMALL,
        **_SMALL_LIMITS,
    )


def _check_message(obj: Any, require_type: bool) -> dict[str, Any]:
    if type(obj) is not dict:
        raise BadMessage(f"payload is a msgpack {_kind(obj)}, not a map")
    for key in obj:
        if type(key) is not str:
            raise BadMessage(f"top-level map key must be str, not {_kind(key)}")
    if require_type:
        msg_type = obj.get("type")
        if msg_type is None and "type" not in obj:
            raise BadMessage('message has no "type" key')
        if type(msg_type) is not str:
            raise BadMessage(f'message "type" must be str, not {_kind(msg_type)}')
    return obj


_EXT = (msgpack.ExtType, msgpack.Timestamp)
_CONTAINER_OR_EXT = (dict, list, tuple, *_EXT)
_LEAF_TYPES = frozenset({str, bytes, bytearray, int, float, bool, type(None)})


def _check_encodable(msg: dict[Any, Any]) -> None:
    """Reject what the strict decoder would reject but msgpack happily packs.

    Only called after the packer succeeded, so nesting depth is bounded by the
    packer's recursion limit and reference cycles have already been refused.
    """
    for key in msg:
        if not isinstance(key, str):
            raise BadMessage(f"top-level map key must be str, not {_kind(key)}")
    # Exact-type checks first (one set lookup for the usual scalars); isinstance only for
    # what is left, so subclasses are still walked and ext values still refused.
    leaf = _LEAF_TYPES
    stack: list[Any] = [msg]
    push = stack.append
    while stack:
        obj = stack.pop()
        if isinstance(obj, _EXT):  # checked first: ExtType is a namedtuple
            raise BadMessage(f"msgpack ext values are not allowed ({_kind(obj)})")
        if isinstance(obj, dict):
            for key, value in obj.items():
                if type(key) is not str and not isinstance(key, (str, bytes)):
                    raise BadMessage(f"map key must be str or bytes, not {_kind(key)}")
                if type(value) not in leaf and isinstance(value, _CONTAINER_OR_EXT):
                    push(value)
        else:  # list or tuple
            for item in obj:
                if type(item) not in leaf and isinstance(item, _CONTAINER_OR_EXT):
                    push(item)


_tls = threading.local()


def _packer() -> Any:
    """The calling thread's cached ``msgpack.Packer`` (not thread-safe itself)."""
    try:
        return _tls.packer
    except AttributeError:
        packer = msgpack.Packer(use_bin_type=True)
        _tls.packer = packer
        return packer


# --------------------------------------------------------------------------
# One-shot encode / decode
# --------------------------------------------------------------------------


def pack(
    msg: Mapping[str, Any], *, max_frame: int = DEFAULT_MAX_FRAME, strict: bool = True
) -> bytes:
    """Encode *msg* as one frame: 4-byte big-endian length + msgpack map.

    Raises :class:`BadMessage` if *msg* is not a mapping with ``str`` keys or
    holds something that cannot be encoded (or that the strict decoder would
    refuse), and :class:`FrameTooLarge` if the payload exceeds *max_frame*.
    ``strict=False`` skips the walk over nested values — for hot paths that
    relay data which came out of the strict decoder and so is known to pass.
    """
    if not strict and type(msg) is dict and type(max_frame) is int and max_frame > 0:
        # The relay hot path: data that came out of the strict decoder, our own dicts.
        try:
            data: bytes = _packer().pack(msg)
        except BaseException:
            _packer().reset()
            return pack(msg, max_frame=max_frame)  # the full path names the problem
        size = len(data)
        if size > max_frame or size > _MAX_LENGTH:
            raise _too_large("encoded payload", size, min(max_frame, _MAX_LENGTH))
        for key in msg:
            if type(key) is not str:
                raise BadMessage(f"top-level map key must be str, not {_kind(key)}")
        header: bytes = _pack_header(size)
        return header + data
    # Checked path: exact int, exact dict first.
    if type(max_frame) is int and 0 < max_frame <= _MAX_LENGTH:
        limit = max_frame
    else:
        limit = _check_max_frame(max_frame)
    obj: dict[Any, Any]
    if type(msg) is dict:
        obj = msg
    elif isinstance(msg, Mapping):
        obj = dict(msg)
    else:
        raise BadMessage(f"message must be a mapping, not {_kind(msg)}")
    packer = _packer()
    try:
        payload: bytes = packer.pack(obj)
    except (TypeError, ValueError, OverflowError) as exc:
        packer.reset()
        raise BadMessage(f"cannot encode message: {exc}") from exc
    except BaseException:
        packer.reset()
        raise
    size = len(payload)
    if size > limit:
        raise _too_large("encoded payload", size, limit)
    if strict:
        _check_encodable(obj)
    else:
        for key in obj:
            if not isinstance(key, str):
                raise BadMessage(f"top-level map key must be str, not {_kind(key)}")
    return HEADER.pack(size) + payload


def unpack_payload(
    payload: bytes | memoryview,
    *,
    max_frame: int = DEFAULT_MAX_FRAME,
    require_type: bool = False,
) -> dict[str, Any]:
    """Strictly decode one frame payload (without its 4-byte header).

    Returns the message as a ``dict`` with ``str`` keys.  Raises
    :class:`FrameTooLarge` if the payload is longer than *max_frame* and
    :class:`BadMessage` for anything that is not exactly one acceptable map.
    """
    limit = _check_max_frame(max_frame)
    size = payload.nbytes if isinstance(payload, memoryview) else len(payload)
    if size > limit:
        raise _too_large("payload length", size, limit)
    return _decode(payload, size, require_type)


def digest(value: Any) -> str:
    """A short digest of a value as MessagePack encodes it: two answers compared without
    keeping either (a value msgpack cannot encode is digested by its repr)."""
    try:
        packed = _packer().pack(value)
    except (TypeError, ValueError, OverflowError):
        _packer().reset()
        packed = repr(value).encode()
    import hashlib  # here, not at the top: it loads OpenSSL, 5 ms of every CLI command

    return hashlib.blake2b(packed, digest_size=8).hexdigest()
