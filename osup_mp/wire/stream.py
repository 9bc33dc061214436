"""Streams of frames: the incremental :class:`FrameDecoder` and blocking helpers.

:class:`FrameDecoder` is what every process's read path uses (agent pipes, channels'
control sockets, the client library); :func:`read_frame` / :func:`write_frame` serve simple
blocking clients such as the SDK's tests and ``agent-check``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import msgpack  # type: ignore[import-untyped, unused-ignore]

from osup_mp.wire.message import (
    _HEADER_SIZE,
    _SMALL,
    DEFAULT_MAX_FRAME,
    HEADER,
    BadMessage,
    FrameError,
    TruncatedFrame,
    _check_max_frame,
    _check_message,
    _decode,
    _reason,
    _small_unpacker,
    _too_large,
    _unpack_header_from,
    pack,
)

# --------------------------------------------------------------------------
# Incremental decoder
# --------------------------------------------------------------------------


class FrameDecoder:
    """Incremental decoder for a stream of ``{packet, 4}`` msgpack frames.

    Feed it bytes as they arrive, split anywhere; :meth:`feed` returns every
    message completed so far.  Not thread-safe.
    """

    __slots__ = ("_buf", "_error", "_limit", "_require_type", "_small", "_small_fed")

    def __init__(self, *, max_frame: int = DEFAULT_MAX_FRAME, require_type: bool = False) -> None:
        self._limit = _check_max_frame(max_frame)
        self._require_type = require_type
        self._buf = bytearray()
        self._error: FrameError | None = None
        self._small: Any = None  # made on first use
        self._small_fed = 0  # bytes fed to it: what its tell() must say after each message

    @property
    def max_frame(self) -> int:
        """The payload size limit in force."""
        return self._limit

    @property
    def broken(self) -> bool:
        """True once a bad frame was seen; the stream cannot be resynchronised."""
        return self._error is not None

    @property
    def buffered(self) -> int:
        """Bytes held of an incomplete frame (0 at a boundary or when broken)."""
        return len(self._buf)

    @property
    def at_boundary(self) -> bool:
        """True when no partial frame is held and the decoder is not broken.

        At EOF, ``not at_boundary`` means the peer stopped mid-frame.
        """
        return self._error is None and not self._buf

    def feed(self, data: bytes | bytearray | memoryview) -> list[dict[str, Any]]:
        """Add *data* and return all messages now complete, in order.

        Raises :class:`FrameError` (:class:`FrameTooLarge` or
        :class:`BadMessage`) on the first bad frame; the exception's
        ``messages`` holds the good messages decoded before it in this call.
        After that the decoder is :attr:`broken` and every call raises.
        """
        if self._error is not None:
            raise FrameError(
                f"decoder is broken by an earlier error ({self._error}); "
                "the stream cannot be resynchronised"
            )
        buf = self._buf
        if data:
            buf += data
        end = len(buf)
        out: list[dict[str, Any]] = []
        if end < _HEADER_SIZE:
            return out
        limit = self._limit
        require_type = self._require_type
        small = self._small
        if small is None:
            small = self._small = _small_unpacker()
        pos = 0
        try:
            with memoryview(buf) as view:
                while end - pos >= _HEADER_SIZE:
                    (length,) = _unpack_header_from(buf, pos)
                    if length > limit:
                        raise _too_large("frame length", length, limit)
                    if length == 0:
                        raise BadMessage("zero-length frame (an empty payload is not a map)")
                    start = pos + _HEADER_SIZE
                    stop = start + length
                    if stop > end:
                        break
                    if length <= _SMALL:
                        # Inline (once per frame on every hop): the reused Unpacker copies
                        # the payload, so the temporary slice dies at once.
                        small.feed(view[start:stop])
                        try:
                            obj = small.unpack()
                        except FrameError:
                            raise
                        except msgpack.OutOfData:
                            raise BadMessage(
                                "payload ends in the middle of a msgpack object"
                            ) from None
                        except Exception as exc:
                            raise BadMessage(_reason(exc)) from exc
                        self._small_fed += length
                        if small.tell() != self._small_fed:  # the stream is broken anyway
                            raise BadMessage("trailing bytes after the message inside the frame")
                        out.append(_check_message(obj, require_type))
                    else:
                        with view[start:stop] as payload:
                            out.append(_decode(payload, length, require_type))
                    pos = stop
        except FrameError as exc:
            self._error = exc
            self._buf = bytearray()  # rebind (not resize): drop the data
            exc.messages = out
            raise
        if pos:
            del buf[:pos]  # compact once per feed, not once per frame
        return out


# --------------------------------------------------------------------------
# Blocking helpers for simple clients
# --------------------------------------------------------------------------


class _ByteReader(Protocol):
    def read(self, n: int, /) -> bytes | None: ...


class _ByteWriter(Protocol):
    def write(self, data: bytes, /) -> int | None: ...

    def flush(self) -> object: ...


def _read_exact(stream: _ByteReader, n: int) -> bytes:
    """Read up to *n* bytes, looping over short reads; shorter only at EOF."""
    chunk = stream.read(n)
    if not chunk or len(chunk) == n:
        return chunk or b""
    parts = bytearray(chunk)
    while len(parts) < n:
        chunk = stream.read(n - len(parts))
        if not chunk:
            break
        parts += chunk
    return bytes(parts)


def read_frame(
    stream: _ByteReader,
    *,
    max_frame: int = DEFAULT_MAX_FRAME,
    require_type: bool = False,
) -> dict[str, Any] | None:
    """Read exactly one frame from a blocking binary file-like (``.read(n)``).

    Returns ``None`` at a clean EOF (before any header byte).  Raises
    :class:`TruncatedFrame` if EOF comes mid-frame, :class:`FrameTooLarge`
    (before reading the body) or :class:`BadMessage` for a bad frame.
    """
    limit = _check_max_frame(max_frame)
    header = _read_exact(stream, _HEADER_SIZE)
    if not header:
        return None
    if len(header) < _HEADER_SIZE:
        raise TruncatedFrame(
            f"truncated frame: EOF after {len(header)} of {_HEADER_SIZE} header bytes"
        )
    (length,) = HEADER.unpack(header)
    if length > limit:
        raise _too_large("frame length", length, limit)
    if length == 0:
        raise BadMessage("zero-length frame (an empty payload is not a map)")
    body = _read_exact(stream, length)
    if len(body) < length:
        raise TruncatedFrame(f"truncated frame: EOF after {len(body)} of {length} payload bytes")
    return _decode(body, length, require_type)


def write_frame(
    stream: _ByteWriter,
    msg: Mapping[str, Any],
    *,
    max_frame: int = DEFAULT_MAX_FRAME,
) -> None:
    """Encode *msg* with :func:`pack`, write the whole frame and flush."""
    data = pack(msg, max_frame=max_frame)
    while data:
        written = stream.write(data)
        # Buffered streams write everything; raw streams may write less.
        # ``None`` (file-likes that report no count) is taken as "all
        # written": this helper is for blocking streams only.
        if written is None or written >= len(data):
            break
        if written <= 0:
            raise OSError(f"short write: stream accepted {written} of {len(data)} bytes")
        data = data[written:]
    stream.flush()
