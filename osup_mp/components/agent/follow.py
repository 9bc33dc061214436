"""A shadow kept in step with the main agent's writes: the WAL pushes every acknowledged
entry, and the manager passes them on to its agent in ``wal_apply`` frames.

A shadow starts from the main's state (the newest checkpoint plus the WAL, like a main
restart: :meth:`Durability.plan` in follower mode) and from then on follows: once its agent
is ready, the manager asks the WAL to push everything after the LSN it restored
(:class:`~osup_mp.components.messages.Follow`). The one decision: the manager, not the
agent, keeps the position. Entries reach the agent's stdin in LSN order, after any restore
frames, so the LSN the manager last passed on is what the agent has applied when it reads
the next request; entries that arrive while no agent runs are dropped (the next start
restores them), and a hole in the sequence restarts the agent, which restores again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgpack
from loguru import logger

from osup_mp.components.agent.states import AgentState
from osup_mp.components.messages import Follow, FollowLost, WalEntries
from osup_mp.wire import HEADER
from osup_mp.wire.frames import ToAgent

if TYPE_CHECKING:
    from osup_mp.components.agent.lifecycle import AgentLifecycle

_FRAME_BYTES = 256 * 1024  # entry bytes per wal_apply frame (well under any max_frame)
_HEAD_BYTES = 64  # what a wal_apply frame adds around its entries


class Follower:
    def __init__(self, host: AgentLifecycle) -> None:
        self.host = host
        self.applied_lsn = 0  # the newest entry passed on to the current agent
        self.forwarded = 0  # entries passed on since the tree started (status)

    def restored(self, lsn: int) -> None:
        """A new agent generation restores everything through ``lsn``."""
        self.applied_lsn = lsn

    def start(self) -> None:
        """The agent is ready: (re)subscribe from what it has."""
        self.host.peer("wal").call_async(Follow(self.applied_lsn), self._followed, timeout=30.0)

    def _followed(self, ok: bool, value: Any) -> None:
        if not ok:
            self.host.kill_for(f"cannot follow the WAL: {value}")

    def on_entries(self, msg: WalEntries) -> None:
        host = self.host
        if host.agent is None or host.state not in (AgentState.STARTING, AgentState.RUNNING):
            return  # no agent to pass them to: the next start restores them
        first, payloads = msg.first_lsn, msg.payloads
        skip = self.applied_lsn + 1 - first
        if skip < 0:
            host.kill_for(f"missed WAL entries {self.applied_lsn + 1}..{first - 1}")
            return
        payloads = payloads[skip:]
        if not payloads:
            return
        first += skip
        self._send(first, payloads)
        self.applied_lsn = first + len(payloads) - 1
        self.forwarded += len(payloads)

    def on_lost(self, msg: FollowLost) -> None:
        self.host.kill_for(f"stopped following the WAL: {msg.reason}")

    def _send(self, first: int, payloads: list[bytes]) -> None:
        for frame in wal_apply_frames(first, payloads, self.host.cfg.agent.max_frame):
            self.host.send_agent_raw(frame)
        if len(payloads) > 10_000:
            logger.info("agent {}: caught up {} WAL entries", self.host.instance_id, len(payloads))


def wal_apply_frames(first: int, payloads: list[bytes], max_frame: int) -> list[bytes]:
    """``wal_apply`` frames of at most about ``_FRAME_BYTES`` of entries each (LSNs from
    ``first``), built from the stored bytes: never decoded here."""
    packer = msgpack.Packer(use_bin_type=True)
    pack = packer.pack
    limit = min(_FRAME_BYTES, max_frame // 2 - _HEAD_BYTES)
    frames: list[bytes] = []
    start = 0
    while start < len(payloads):
        stop, size = start, 0
        while stop < len(payloads) and (stop == start or size + len(payloads[stop]) <= limit):
            size += len(payloads[stop])
            stop += 1
        head = b"".join(
            (
                packer.pack_map_header(3),
                pack("type"),
                pack(ToAgent.WAL_APPLY.value),
                pack("lsn"),
                pack(first + start),
                pack("wal_entries"),
                packer.pack_array_header(stop - start),
            )
        )
        body = [head, *payloads[start:stop]]
        length = sum(map(len, body))
        frames.append(b"".join((HEADER.pack(length), *body)))
        start = stop
    return frames
