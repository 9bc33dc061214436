"""Wire codec for supervisor <-> worker messages (Erlang ``{packet, 4}`` framing).

Every frame on the wire is a 4-byte big-endian unsigned payload length
followed by exactly that many bytes holding ONE MessagePack-encoded map with
``str`` keys.  This is the framing Erlang ports use with ``{packet, 4}``, so
either end may be an Erlang/Elixir node or anything else that speaks
length-prefixed MessagePack.

This package deliberately imports nothing from the rest of ``osup_mp`` (only
the standard library and ``msgpack``), so it can be reused by simple clients
and tested in isolation.

Design decisions
----------------
* **Strict unpacking.**  Input comes from other processes and is untrusted.
  Payloads are decoded with ``raw=False`` (str must be valid UTF-8),
  ``strict_map_key=True`` (map keys must be str or bytes) and no extension
  types at all: ``max_ext_len=0`` plus an ``ext_hook`` that rejects, which
  also stops msgpack's built-in Timestamp (ext -1) from slipping through.
  The top-level object must be a ``dict`` whose keys are all ``str``; with
  ``require_type=True`` it must also carry a ``str`` ``"type"`` entry.
  Every msgpack failure is re-raised as :class:`BadMessage` (a
  :class:`FrameError`, itself a ``ValueError``) with a short reason, so
  callers only ever need to catch :class:`FrameError`.
* **Bounded sizes.**  ``max_str_len``, ``max_bin_len``, ``max_array_len`` and
  ``max_map_len`` are bounded by the payload size (which is at most
  ``max_frame``), so a small hostile payload cannot make the decoder
  pre-allocate a huge container.
* **Frame size checked before buffering.**  The length prefix is validated
  against ``max_frame`` as soon as its 4 bytes are available: an oversized
  frame raises :class:`FrameTooLarge` without waiting for (or buffering) its
  body.  A zero-length frame is a :class:`BadMessage` (an empty payload is not
  a map).  :func:`pack` refuses to produce a payload over ``max_frame``.
* **Symmetric encoder.**  :func:`pack` refuses to emit anything the strict
  decoder would reject (non-``str`` top-level keys, nested keys that are not
  ``str``/``bytes``, ``ExtType``/``Timestamp`` values), so a bug in the
  sender surfaces as :class:`BadMessage` at the sender instead of breaking
  the receiver's stream.
* **Incremental decoder.**  :class:`FrameDecoder` accepts bytes split at any
  point (one byte at a time, or many frames at once).  It keeps one
  ``bytearray`` and, within each ``feed()``, a read offset; it decodes every
  complete frame in a loop through zero-copy ``memoryview`` slices and
  compacts the buffer once per :meth:`FrameDecoder.feed` call (never per
  frame), so the total work is O(n) in the number of bytes fed.  After the
  first bad frame the stream cannot be resynchronised, so the decoder
  becomes ``broken`` and every later ``feed()`` raises :class:`FrameError`.
* **Threading.**  The msgpack ``Packer`` is reused between calls for speed.
  ``Packer`` instances are not thread-safe.  This project is single-threaded
  per process, but the cached packer is still kept per thread
  (``threading.local``) so that an unexpected extra thread cannot corrupt a
  frame.  A :class:`FrameDecoder` instance must not be shared between threads.
"""

from osup_mp.wire.message import (
    DEFAULT_MAX_FRAME,
    HEADER,
    BadMessage,
    FrameError,
    FrameTooLarge,
    TruncatedFrame,
    digest,
    pack,
    unpack_payload,
)
from osup_mp.wire.stream import FrameDecoder, read_frame, write_frame

__all__ = [
    "DEFAULT_MAX_FRAME",
    "HEADER",
    "BadMessage",
    "FrameDecoder",
    "FrameError",
    "FrameTooLarge",
    "TruncatedFrame",
    "digest",
    "pack",
    "read_frame",
    "unpack_payload",
    "write_frame",
]
