"""The main agent's durability: WAL forwarding, response release, checkpoints, restore.

* Every ``wal_entry`` the agent writes is forwarded to the WAL component in one batch per
  loop wake-up; the WAL's reply (the LSNs) becomes ``wal_ack`` frames.
* A response, or a checkpoint, that the agent wrote *after* some entries waits behind a
  barrier until all of them are durable — so a client is only ever told "done" for changes
  that survive a crash, and a checkpoint records exactly the LSN it covers.
* On every start the agent gets the newest valid checkpoint (or the one an operator pinned)
  plus every WAL entry after its LSN, in ``restore`` frames that fit the frame limit (the
  plan is :class:`.planning.RestorePlanning`'s).

Shadows are experiments: their entries and checkpoints are answered, not stored. A shadow
(``follower``) starts from the main's state like a main restart, then follows the WAL
(:mod:`.follow`).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgpack
from loguru import logger

from osup_mp.components.agent.planning import RestorePlanning
from osup_mp.components.agent.restore import RESTORE_OVERHEAD
from osup_mp.components.agent.states import AgentState
from osup_mp.components.messages import (
    Append,
    SaveCheckpoint,
)
from osup_mp.runtime.component import Caller
from osup_mp.wire.frames import ToAgent

if TYPE_CHECKING:
    from osup_mp.components.agent.lifecycle import AgentLifecycle


class _Batch:
    """One append in flight: the agent's refs, the standby generation that was passed the
    entries too (0: none), then the WAL's answer."""

    __slots__ = ("refs", "result", "standby")

    def __init__(self, refs: list[Any], standby: int) -> None:
        self.refs = refs
        self.standby = standby
        self.result: tuple[bool, Any] | None = None


Action = Callable[[int | None], None]  # called with the covering LSN, or None if the agent died


class Durability(RestorePlanning):
    def __init__(
        self, host: AgentLifecycle, *, durable: bool, follower: bool = False, label: str = ""
    ) -> None:
        self.host = host
        self.label = label or host.instance_id  # who restores, in the log
        self.durable = durable
        self.follower = follower  # restores the main's state, writes none
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
        self._epoch = 0  # bumped by new_generation (a promotion keeps the count going)
        self._quiet = 0  # entries written by a main that died: no wal_ack to its successor
        self._waiters: deque[Caller] = deque()
        self._asked = 0.0
        self._since_checkpoint = 0
        self.checkpoint_soon = False  # a restore accepted a gap: checkpoint once running
        # A plan found no checkpoint and no entry, and none was sent to be stored since: the
        # next start restores nothing without asking (a stateless agent restarts sooner).
        self.nothing_stored = False

    @property
    def settled(self) -> bool:
        """Nothing the agent wrote is still on its way to the WAL."""
        return self._acked >= self._sent

    @property
    def pending(self) -> int:
        """Entries of this agent generation sent to the WAL and not yet durable."""
        return max(0, self._sent - self._acked)

    # -- entries and barriers ----------------------------------------------------------------

    def log_entry(self, entry: Any, ref: Any) -> None:
        if not isinstance(entry, dict):
            # Only maps can be replayed (the WAL decodes strictly): refuse, do not store.
            self.host.send_agent(
                {
                    "type": ToAgent.WAL_ACK,
                    "seq": None,
                    "ref": ref,
                    "error": "not logged: a WAL entry must be a map",
                }
            )
            return
        if not self.durable:
            self.host.send_agent(
                {
                    "type": ToAgent.WAL_ACK,
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
        entries = self._batch
        standby = self.host.standby
        # The standby gets them now, in the order the WAL will number them: it is then as
        # far as the main, and a promotion has nothing to catch up but what is in its pipe.
        batch = _Batch(self._refs, standby.follow(entries) if standby is not None else 0)
        self._batch, self._refs = [], []
        self._in_flight.append(batch)
        self.nothing_stored = False
        epoch = self._epoch
        self.host.peer("wal").call_async(
            Append(entries),
            lambda ok, value: self._on_result(epoch, batch, ok, value),
            timeout=60.0,
        )

    def hand_over(self) -> None:
        """The main died and its standby takes over: what the main wrote in its last
        wake-up goes to the WAL (and the standby) like any entry, its responses are released
        when durable, and no ``wal_ack`` for its entries reaches the successor."""
        self.flush()
        self._quiet = self._sent

    def _on_result(self, epoch: int, batch: _Batch, ok: bool, value: Any) -> None:
        """Results are applied in the order the batches were sent, whatever order they come
        back in (a WAL restart puts later batches on a new connection): an entry counts as
        durable only when every entry before it is."""
        if epoch != self._epoch or self._failed:
            return  # that agent is gone (or going); its durable entries are replayed
        batch.result = (ok, value)
        while self._in_flight and self._in_flight[0].result is not None:
            head = self._in_flight.popleft()
            assert head.result is not None
            done, lsns = head.result
            if not done:
                self._fail(lsns)
                return
            if head.standby and self.host.standby is not None:
                self.host.standby.numbered(head.standby, lsns[0], len(lsns))
            self._acknowledge(head.refs, lsns)

    def _fail(self, error: Any) -> None:
        # Nothing after a lost batch may be called durable: fail what waits, replace the agent.
        self._failed = True
        host = self.host
        logger.critical("agent {}: WAL append failed: {}", host.instance_id, error)
        if host.standby is not None:  # it applied entries that are not durable
            host.standby.kill_for("the main's WAL entries could not be made durable")
        self.agent_gone()
        host.kill_for(f"its WAL entries could not be made durable: {error}")

    def _acknowledge(self, refs: list[Any], lsns: list[int]) -> None:
        host = self.host
        for lsn, ref in zip(lsns, refs, strict=True):
            self.applied_lsn = lsn
            self._acked += 1
            if self._acked > self._quiet:
                host.send_agent({"type": ToAgent.WAL_ACK, "seq": lsn, "ref": ref})
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
        self._sent = self._acked = self._quiet = 0
        self._in_flight.clear()
        self._failed = False
        self._epoch += 1

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
        self.host.send_agent({"type": ToAgent.CHECKPOINT_REQUEST})

    def create(self, caller: Caller) -> None:
        """An operator's ``checkpoint create``: answered once the checkpoint is durable."""
        self._waiters.append(caller)
        self.request_checkpoint(force=True)

    def on_checkpoint(self, data: Any, error: Any = None) -> None:
        """A ``checkpoint`` frame: saved once every entry before it is durable; or refused
        (shadows; no map; an ``error`` the agent sent instead of a snapshot it could not
        frame; a snapshot no restore frame could carry)."""
        if not self.durable:
            self._refuse_checkpoint("not saved: shadows are not durable")
            return
        if error is not None or not isinstance(data, dict):
            why = "checkpoint data must be a map" if error is None else f"the agent: {error}"
            self._fail_checkpoint(f"not saved: {why}")
            return
        # Packed once, here: the vault stores these bytes and a restore splices them back.
        payload = self._packer.pack(data)
        limit = self.host.cfg.agent.max_frame
        if len(payload) + RESTORE_OVERHEAD > limit:
            # Accepting it would leave a checkpoint no restore frame can carry.
            self._fail_checkpoint(
                f"not saved: the snapshot is {len(payload)} bytes and its restore frame "
                f"would exceed [agent] max_frame ({limit}); raise max_frame"
            )
            return
        self.after_wal(lambda lsn: self._save(payload, lsn))

    def _fail_checkpoint(self, error: str) -> None:
        logger.error("agent {}: checkpoint {}", self.host.instance_id, error)
        self._asked = 0.0
        waiters, self._waiters = self._waiters, deque()
        for caller in waiters:
            self.host.reply_error(caller, f"checkpoint {error}")
        self._refuse_checkpoint(error)

    def _refuse_checkpoint(self, error: str) -> None:
        self.host.send_agent(
            {
                "type": ToAgent.CHECKPOINT_ACK,
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
        self.nothing_stored = False

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
                        "type": ToAgent.CHECKPOINT_ACK,
                        "timestamp": int(time.time()),
                        "checkpoint_id": value["id"] if ok else None,
                        "lsn": value["lsn"] if ok else None,
                        **({} if ok else {"error": str(value)}),
                    }
                )

        host.peer("vault").call_async(SaveCheckpoint(snapshot, lsn), saved, timeout=60.0)
