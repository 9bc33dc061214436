"""The main agent's durability: WAL forwarding, response release, checkpoints, restore.

* Every ``wal_entry`` the agent writes is forwarded to the WAL component in one batch per
  loop wake-up; the WAL's reply (the LSNs) becomes ``wal_ack`` frames.
* A response, or a checkpoint, that the agent wrote *after* some entries waits behind a
  barrier until all of them are durable — so a client is only ever told "done" for changes
  that survive a crash, and a checkpoint records exactly the LSN it covers.
* On every start the agent gets the newest valid checkpoint (or the one an operator pinned)
  plus every WAL entry after its LSN, in ``restore`` frames that fit the frame limit.

Shadows are experiments: their entries and checkpoints are answered, not stored.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgpack
from loguru import logger

from osup_mp.components.agent.states import AgentState
from osup_mp.runtime.calls import CallError
from osup_mp.runtime.component import Caller
from osup_mp.wire import HEADER

if TYPE_CHECKING:
    from osup_mp.components.agent.manager import AgentManager

_PAGE = 50_000  # WAL entries per read_after reply
# What a restore frame adds around the snapshot: its keys, a checkpoint id, an LSN, flags.
_RESTORE_OVERHEAD = 160


class _Batch:
    """One append in flight: the agent's refs, then the WAL's answer."""

    __slots__ = ("refs", "result")

    def __init__(self, refs: list[Any]) -> None:
        self.refs = refs
        self.result: tuple[bool, Any] | None = None


Action = Callable[[int | None], None]  # called with the covering LSN, or None if the agent died


class Durability:
    def __init__(self, host: AgentManager, *, durable: bool) -> None:
        self.host = host
        self.durable = durable
        self.applied_lsn = 0  # newest WAL entry reflected in the agent's state
        self.pinned: str | None = None  # checkpoint the next start restores from
        self._sent = 0  # entries of this agent generation forwarded to the WAL
        self._acked = 0
        self._batch: list[bytes] = []  # msgpack-encoded entries of this wake-up
        self._packer = msgpack.Packer(use_bin_type=True)
        self._refs: list[Any] = []
        self._barriers: deque[tuple[int, Action]] = deque()
        self._in_flight: deque[_Batch] = deque()  # appends sent, in order
        self._failed = False  # an append of this agent generation was lost
        self._waiters: deque[Caller] = deque()
        self._asked = 0.0
        self._since_checkpoint = 0
        self.checkpoint_soon = False  # a restore accepted a gap: checkpoint once running

    @property
    def settled(self) -> bool:
        """Nothing the agent wrote is still on its way to the WAL."""
        return self._acked >= self._sent

    # -- entries and barriers ----------------------------------------------------------------

    def log_entry(self, entry: Any, ref: Any) -> None:
        if not isinstance(entry, dict):
            # Only maps can be replayed (the WAL decodes strictly): refuse, do not store.
            self.host.send_agent(
                {
                    "type": "wal_ack",
                    "seq": None,
                    "ref": ref,
                    "error": "not logged: a WAL entry must be a map",
                }
            )
            return
        if not self.durable:
            self.host.send_agent(
                {
                    "type": "wal_ack",
                    "seq": None,
                    "ref": ref,
                    "error": "not logged: shadows are not durable",
                }
            )
            return
        # Encoded here, once: the WAL stores these bytes as they are, and bytes cross the
        # channel to it far cheaper than the nested maps would.
        self._batch.append(self._packer.pack(entry))
        self._refs.append(ref)
        self._sent += 1

    def flush(self) -> None:
        """Forward this wake-up's entries to the WAL as one append."""
        if not self._batch:
            return
        batch = _Batch(self._refs)
        entries = self._batch
        self._batch, self._refs = [], []
        self._in_flight.append(batch)
        generation = self.host.generation
        self.host.peer("wal").call_async(
            ("append", entries),
            lambda ok, value: self._on_result(generation, batch, ok, value),
            timeout=60.0,
        )

    def _on_result(self, generation: int, batch: _Batch, ok: bool, value: Any) -> None:
        """Results are applied in the order the batches were sent, whatever order they come
        back in (a WAL restart puts later batches on a new connection): an entry counts as
        durable only when every entry before it is."""
        if generation != self.host.generation or self._failed:
            return  # that agent is gone (or going); its durable entries are replayed
        batch.result = (ok, value)
        while self._in_flight and self._in_flight[0].result is not None:
            head = self._in_flight.popleft()
            assert head.result is not None
            done, lsns = head.result
            if not done:
                self._fail(lsns)
                return
            self._acknowledge(head.refs, lsns)

    def _fail(self, error: Any) -> None:
        # Nothing after a lost batch may be called durable: fail what waits, replace the agent.
        self._failed = True
        host = self.host
        logger.critical("agent {}: WAL append failed: {}", host.instance_id, error)
        self.agent_gone()
        host.kill_for(f"its WAL entries could not be made durable: {error}")

    def _acknowledge(self, refs: list[Any], lsns: list[int]) -> None:
        host = self.host
        for lsn, ref in zip(lsns, refs, strict=True):
            self.applied_lsn = lsn
            self._acked += 1
            host.send_agent({"type": "wal_ack", "seq": lsn, "ref": ref})
            while self._barriers and self._barriers[0][0] <= self._acked:
                self._barriers.popleft()[1](lsn)
        self._since_checkpoint += len(lsns)
        every = host.cfg.vault.checkpoint_wal_entries
        if every and self._since_checkpoint >= every:
            self.request_checkpoint()

    def after_wal(self, action: Action) -> None:
        """Run ``action(lsn)`` once every entry forwarded so far is durable."""
        if self.settled:
            action(self.applied_lsn)
        else:
            self._barriers.append((self._sent, action))

    def new_generation(self) -> None:
        """A new agent process: counting of its entries starts over."""
        self._sent = self._acked = 0
        self._in_flight.clear()
        self._failed = False

    def agent_gone(self) -> None:
        """The agent exited: what waited for its entries will never be released."""
        barriers, self._barriers = self._barriers, deque()
        for _needs, action in barriers:
            action(None)
        self._batch.clear()
        self._refs.clear()

    # -- checkpoints -------------------------------------------------------------------------

    def request_checkpoint(self, force: bool = False) -> None:
        if self.host.state is not AgentState.RUNNING:
            return
        now = time.monotonic()
        if not force and now - self._asked < self.host.cfg.agent.ready_timeout / 1000:
            return  # one is already on its way
        self._asked = now
        self.host.send_agent({"type": "checkpoint_request"})

    def create(self, caller: Caller) -> None:
        """An operator's ``checkpoint create``: answered once the checkpoint is durable."""
        self._waiters.append(caller)
        self.request_checkpoint(force=True)

    def on_checkpoint(self, data: Any) -> None:
        if not self.durable or not isinstance(data, dict):
            error = (
                "not saved: shadows are not durable"
                if not self.durable
                else "checkpoint data must be a map"
            )
            self._refuse_checkpoint(error)
            return
        # Packed once, here: the vault stores these bytes and a restore splices them back.
        payload = self._packer.pack(data)
        limit = self.host.cfg.agent.max_frame
        if len(payload) + _RESTORE_OVERHEAD > limit:
            # Accepting it would leave a checkpoint no restore frame can carry.
            error = (
                f"not saved: the snapshot is {len(payload)} bytes and its restore frame "
                f"would exceed [agent] max_frame ({limit}); raise max_frame"
            )
            logger.error("agent {}: checkpoint {}", self.host.instance_id, error)
            self._asked = 0.0
            waiters, self._waiters = self._waiters, deque()
            for caller in waiters:
                self.host.reply_error(caller, f"checkpoint {error}")
            self._refuse_checkpoint(error)
            return
        self.after_wal(lambda lsn: self._save(payload, lsn))

    def _refuse_checkpoint(self, error: str) -> None:
        self.host.send_agent(
            {
                "type": "checkpoint_ack",
                "checkpoint_id": None,
                "timestamp": int(time.time()),
                "error": error,
            }
        )

    def _save(self, snapshot: bytes, lsn: int | None) -> None:
        if lsn is None:
            return
        host = self.host
        generation = host.generation

        def saved(ok: bool, value: Any) -> None:
            self._asked = 0.0
            waiters, self._waiters = self._waiters, deque()
            if ok:
                self._since_checkpoint = max(0, self.applied_lsn - value["lsn"])
                for caller in waiters:
                    host.reply(caller, value)
            else:
                logger.error("agent {}: checkpoint not saved: {}", host.instance_id, value)
                for caller in waiters:
                    host.reply_error(caller, f"checkpoint not saved: {value}")
            if generation == host.generation:
                host.send_agent(
                    {
                        "type": "checkpoint_ack",
                        "timestamp": int(time.time()),
                        "checkpoint_id": value["id"] if ok else None,
                        "lsn": value["lsn"] if ok else None,
                        **({} if ok else {"error": str(value)}),
                    }
                )

        host.peer("vault").call_async(("save", snapshot, lsn), saved, timeout=60.0)

    # -- restore -----------------------------------------------------------------------------

    def plan(self) -> dict[str, Any] | None:
        """For a new agent generation: the newest valid checkpoint (or the pinned one) and
        every WAL entry after its LSN; None when there is nothing to restore. Raises
        CallError when the vault or the WAL cannot answer (starting empty would lose data).

        Entries stay the MessagePack bytes the WAL stored (CRC-checked there): they are
        spliced into the restore frames as they are, never decoded and re-encoded here."""
        if not self.durable:
            return None
        host = self.host
        pinned, self.pinned = self.pinned, None
        request = ("load", pinned, True) if pinned else ("latest", True)
        checkpoint = host.peer("vault").call(request, timeout=30.0)
        lsn = checkpoint["lsn"] if checkpoint else 0
        entries: list[bytes] = []
        missing: list[tuple[int, int]] = []  # LSN ranges neither the checkpoint nor the WAL has
        cursor = lsn
        while True:  # paged: one reply never has to hold the whole tail
            page = host.peer("wal").call(("read_after", cursor, _PAGE), timeout=60.0)
            for entry_lsn, payload in page:
                if entry_lsn != cursor + 1:
                    missing.append((cursor + 1, entry_lsn - 1))
                entries.append(payload)
                cursor = entry_lsn
            if len(page) < _PAGE:
                break
        # The WAL's newest LSN counts what salvage cut too: entries it handed out that it can
        # no longer give back are missing, not merely absent.
        newest = host.peer("wal").call(("last_lsn",), timeout=30.0)
        if newest > cursor:
            missing.append((cursor + 1, newest))
        if missing:
            self._accept_gap(checkpoint, lsn, missing)
            self.checkpoint_soon = True  # so the accepted loss is not met again next start
        elif newest < lsn:
            # The WAL is behind the checkpoint (salvage cut it): its next LSN must come after
            # what the checkpoint covers, or new entries would be skipped on restore.
            host.peer("wal").call(("skip_through", lsn), timeout=30.0)
        self.applied_lsn = cursor
        self._since_checkpoint = len(entries)
        if checkpoint is None and not entries:
            return None
        logger.info(
            "agent {}: restoring checkpoint {} (LSN {}) + {} WAL entries",
            host.instance_id,
            checkpoint["id"] if checkpoint else "none",
            lsn,
            len(entries),
        )
        return {
            "checkpoint_id": checkpoint["id"] if checkpoint else None,
            "payload": checkpoint["payload"] if checkpoint else None,
            "lsn": lsn,
            "entries": entries,
        }

    def _accept_gap(
        self, checkpoint: dict[str, Any] | None, lsn: int, missing: list[tuple[int, int]]
    ) -> None:
        """Entries between the checkpoint and the WAL are missing: refuse to start with a
        partial state, unless the operator has accepted the loss (``[wal] accept_gap``)."""
        lost = sum(b - a + 1 for a, b in missing)
        ranges = ", ".join(f"{a}..{b}" if a != b else str(a) for a, b in missing[:5])
        more = f" and {len(missing) - 5} more ranges" if len(missing) > 5 else ""
        what = (
            f"checkpoint {checkpoint['id']} covers through LSN {lsn}"
            if checkpoint
            else "no valid checkpoint (LSN 0)"
        )
        reason = f"{what}, but WAL entries {ranges}{more} are missing ({lost} entries)"
        if not self.host.cfg.wal.accept_gap:
            raise CallError(
                f"{reason}; refusing a partial restore ([wal] accept_gap = true accepts the loss)"
            )
        logger.critical(
            "agent {}: {}; accepted by [wal] accept_gap: {} entries lost",
            self.host.instance_id,
            reason,
            lost,
        )

    def send_restore(self, restore: dict[str, Any]) -> None:
        """One ``restore`` frame, continued by more when the WAL tail exceeds a frame.

        The snapshot travels as the bytes the vault stored, spliced in unopened; a snapshot
        that takes more than half a frame travels alone in the first one."""
        packer = msgpack.Packer(use_bin_type=True)
        limit = self.host.cfg.agent.max_frame
        budget = limit // 2
        payload: bytes | None = restore["payload"]
        head = b"".join(
            (
                packer.pack_map_header(6),
                packer.pack("type"),
                packer.pack("restore"),
                packer.pack("checkpoint_id"),
                packer.pack(restore["checkpoint_id"]),
                packer.pack("lsn"),
                packer.pack(restore["lsn"]),
                packer.pack("snapshot"),
                packer.pack(None) if payload is None else payload,
            )
        )
        if len(head) + _RESTORE_OVERHEAD > limit:  # max_frame was lowered since it was saved
            raise CallError(
                f"checkpoint {restore['checkpoint_id']} takes a {len(head)}-byte restore frame: "
                f"more than [agent] max_frame ({limit}); raise it"
            )
        later = packer.pack_map_header(4) + packer.pack("type") + packer.pack("restore")
        later += packer.pack("continue") + packer.pack(True)
        entries: list[bytes] = restore["entries"]
        start, first = 0, True
        while True:
            prefix = head if first else later
            size, stop = len(prefix), start
            # A head over half a frame travels alone; every later frame takes at least one
            # entry (an entry fits a frame: it came in one).
            room = len(head) if first and len(head) > budget else budget
            while stop < len(entries) and (
                (stop == start and not first) or size + len(entries[stop]) <= room
            ):
                size += len(entries[stop])
                stop += 1
            more = stop < len(entries)
            body = b"".join(
                (
                    prefix,
                    packer.pack("more"),
                    packer.pack(more),
                    packer.pack("wal_entries"),
                    packer.pack_array_header(stop - start),
                    *entries[start:stop],
                )
            )
            self.host.send_agent_raw(HEADER.pack(len(body)) + body)
            if not more:
                return
            start, first = stop, False
