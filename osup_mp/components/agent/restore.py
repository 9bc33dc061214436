"""A restore plan (:meth:`.durability.Durability.plan`) turned into ``restore`` frames.

A plan is a dict: ``checkpoint_id``, ``lsn``, ``payload`` (the snapshot's bytes as the vault
stored them, or None) and either ``spans`` (where the WAL entries are, each with an open
descriptor of its segment) or ``entries`` (runs of payloads already read).

The one decision: nothing is decoded or re-encoded on the way. The snapshot is spliced into
the first frame unopened and the entries travel as the MessagePack bytes the WAL stored,
sliced out of the segments into frames well below the pipe's size.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Iterator
from typing import Any

import msgpack

from osup_mp.runtime.calls import CallError
from osup_mp.storage.wal.records import PayloadRun, SegmentSpan, WALError
from osup_mp.wire import HEADER
from osup_mp.wire.frames import ToAgent

# What a restore frame adds around the snapshot: its keys, a checkpoint id, an LSN, flags.
RESTORE_OVERHEAD = 160
# Entry bytes per restore frame (at most half a frame): a frame well below the pipe's size,
# so the agent decodes and applies one while the manager writes the next, instead of
# waiting for megabytes and then working while the pipe stands full.
FRAME_ENTRIES = 256 * 1024


def discard(restore: dict[str, Any]) -> None:
    """A plan that will not be sent: close the descriptors it holds."""
    close_spans(restore.pop("spans", []))


def read_entries(restore: dict[str, Any]) -> list[PayloadRun]:
    """The entries of a plan, read through its descriptors (which are closed): the
    MessagePack bytes the WAL stored, back to back per segment — never pickled across a
    channel, decoded, re-encoded or split into one object per entry here."""
    spans: list[tuple[SegmentSpan, int]] = restore.pop("spans", [])
    try:
        return [span.payloads(span.read(fd)) for span, fd in spans]
    except (OSError, WALError) as exc:
        raise CallError(f"cannot read the WAL: {exc}") from exc
    finally:
        close_spans(spans)


def close_spans(spans: list[tuple[SegmentSpan, int]]) -> None:
    for _span, fd in spans:
        os.close(fd)
    spans.clear()


def frames(restore: dict[str, Any], limit: int) -> Iterator[bytes]:
    """One ``restore`` frame, continued by more when the WAL tail exceeds a frame of
    ``limit`` bytes ([agent] max_frame).

    A snapshot that takes more than half a frame travels alone in the first one. The
    entries are ``restore["entries"]`` or, for a plan with ``spans``, read now. Raises
    CallError (before the first frame) when the snapshot cannot fit a frame."""
    packer = msgpack.Packer(use_bin_type=True)
    half = limit // 2
    payload: bytes | None = restore["payload"]
    head = b"".join(
        (
            packer.pack_map_header(6),
            packer.pack("type"),
            packer.pack(str(ToAgent.RESTORE)),
            packer.pack("checkpoint_id"),
            packer.pack(restore["checkpoint_id"]),
            packer.pack("lsn"),
            packer.pack(restore["lsn"]),
            packer.pack("snapshot"),
            packer.pack(None) if payload is None else payload,
        )
    )
    if len(head) + RESTORE_OVERHEAD > limit:  # max_frame was lowered since it was saved
        discard(restore)
        raise CallError(
            f"checkpoint {restore['checkpoint_id']} takes a {len(head)}-byte restore frame: "
            f"more than [agent] max_frame ({limit}); raise it"
        )
    later = packer.pack_map_header(4) + packer.pack("type") + packer.pack(str(ToAgent.RESTORE))
    later += packer.pack("continue") + packer.pack(True)
    entries = restore["entries"] if "entries" in restore else read_entries(restore)
    runs: list[PayloadRun] = [run for run in entries if len(run)]
    r, i = 0, 0  # the next entry to send: entry i of runs[r]
    first = True
    while True:
        prefix = head if first else later
        size = len(prefix)
        # A head over half a frame travels alone; every later frame takes at least one
        # entry (an entry fits a frame: it came in one). Frames stay small (about
        # FRAME_ENTRIES of entries) so the agent applies one while the next arrives.
        alone = first and len(head) > half
        room = len(head) if alone else min(half, size + FRAME_ENTRIES)
        pieces: list[memoryview] = []
        count = 0
        while r < len(runs):
            run = runs[r]
            base = run.ends[i - 1] if i else 0
            # The entries i..stop-1 of this run that still fit the frame.
            stop = bisect.bisect_right(run.ends, base + room - size, lo=i)
            if stop == i and not count and not first:
                stop = i + 1
            if stop > i:
                end = run.ends[stop - 1]
                pieces.append(memoryview(run.data)[base:end])
                size += end - base
                count += stop - i
                i = stop
            if i < len(run):
                break  # the frame is full
            r, i = r + 1, 0
        more = r < len(runs)
        tail = b"".join(
            (
                packer.pack("more"),
                packer.pack(more),
                packer.pack("wal_entries"),
                packer.pack_array_header(count),
            )
        )
        length = len(prefix) + len(tail) + sum(len(p) for p in pieces)
        yield b"".join((HEADER.pack(length), prefix, tail, *pieces))
        if not more:
            return
        first = False
