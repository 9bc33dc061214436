"""Index files of sealed WAL segments, so that opening a large log does not verify every
record again.

When a segment is sealed (rolled over, or found intact at open), ``wal-N.idx`` records its
size, the CRC-32 of its whole image and where each record starts. At the next open, a
segment whose image still has that size and CRC gets its offsets from the file: one
``crc32`` over the image at C speed instead of two per record in a Python loop. The one
decision: the index is a cache, never a source of truth. It is written without fsync, it
carries its own checksum, and anything that does not match exactly (a torn or stale index,
a segment cut, grown or damaged since) sends the segment back to the full per-record scan,
which finds and names any damage as before.
"""

from __future__ import annotations

import array
import os
import struct
import sys
import zlib
from pathlib import Path

MAGIC = b"OSUPWIX1"
VERSION = 1
_HEAD = struct.Struct("<8sIQQQI")  # magic, version, first LSN, image size, count, image CRC
_TRAILER = struct.Struct("<I")  # CRC-32 of everything before it


def index_path(segment: Path) -> Path:
    return segment.with_suffix(".idx")


def write(
    segment: Path, first_lsn: int, image_crc: int, size: int, offsets: array.array[int]
) -> None:
    """Record ``segment``'s index (best effort: an index that cannot be written is simply
    not there next time)."""
    raw = array.array("Q", offsets)
    if sys.byteorder != "little":
        raw.byteswap()
    body = _HEAD.pack(MAGIC, VERSION, first_lsn, size, len(offsets), image_crc) + raw.tobytes()
    target = index_path(segment)
    tmp = target.with_name(f".{target.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(body + _TRAILER.pack(zlib.crc32(body)))
        os.chmod(tmp, 0o600)
        os.rename(tmp, target)
    except OSError:
        try:
            tmp.unlink()
        except OSError:
            pass


def read(segment: Path, first_lsn: int, image: bytes) -> array.array[int] | None:
    """The record offsets of ``image`` (``segment``'s bytes) if its index matches it exactly;
    None otherwise (no index, a damaged or stale one, or an image that changed)."""
    try:
        raw = index_path(segment).read_bytes()
    except OSError:
        return None
    if len(raw) < _HEAD.size + _TRAILER.size:
        return None
    body, (crc,) = raw[: -_TRAILER.size], _TRAILER.unpack_from(raw, len(raw) - _TRAILER.size)
    if zlib.crc32(body) != crc:
        return None
    magic, version, first, size, count, image_crc = _HEAD.unpack_from(body, 0)
    if (magic, version, first, size) != (MAGIC, VERSION, first_lsn, len(image)):
        return None
    if len(body) != _HEAD.size + 8 * count or zlib.crc32(image) != image_crc:
        return None
    offsets: array.array[int] = array.array("Q")
    offsets.frombytes(body[_HEAD.size :])
    if sys.byteorder != "little":
        offsets.byteswap()
    return offsets


def remove(segment: Path) -> None:
    try:
        index_path(segment).unlink()
    except FileNotFoundError:
        pass
