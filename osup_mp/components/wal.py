"""The WAL manager component: appends, fsync policy, group commit.

Agent managers send batches of entries, each already MessagePack-encoded (a map), as
:class:`~osup_mp.components.messages.Append`. Every append that arrives in one loop wake-up
is written with one ``os.write`` at the end of the wake-up, where each entry gets the next
LSN. The reply —
the LSNs — is the acknowledgement, and it is sent only after the sync the fsync policy
requires:

* ``always``: one ``fdatasync`` covers every append written before it started (group
  commit); it runs on a worker thread (:mod:`osup_mp.storage.wal.sync`), so the loop keeps reading
  and writing the next group while the disk works;
* ``everysec``: reply after the write; a timer syncs once a second if anything was written;
* ``no``: reply after the write; the kernel decides.

An fsync or write error is fatal and never retried (after a failed fsync the page cache may
already have dropped the data): the manager logs it, asks the supervisor to stop the tree,
and answers every waiting append with an error — nothing unwritten is ever acknowledged.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from loguru import logger

from osup_mp.components.messages import (
    Append,
    Fatal,
    Follow,
    FollowLost,
    LastLsn,
    ReadSpansAfter,
    SkipThrough,
    TruncateThrough,
    WalEntries,
    WalStats,
    WalTail,
    WalVerify,
)
from osup_mp.config import Config
from osup_mp.runtime.calls import CallError
from osup_mp.runtime.channel import MAX_FDS, Channel
from osup_mp.runtime.component import NOREPLY, Caller, Component, on_call, on_cast, on_info
from osup_mp.storage.wal.records import WALError
from osup_mp.storage.wal.recovery import verify_dir
from osup_mp.storage.wal.store import WALStore
from osup_mp.storage.wal.sync import BackgroundSync
from osup_mp.wire import FrameError, unpack_payload

MAX_SPANS = MAX_FDS  # segments (each with its descriptor) per read_spans_after reply
# Appends written (who asked, their LSNs, the entries) awaiting the sync that acknowledges them.
Written = list[tuple[Caller, list[int], list[bytes]]]
FOLLOWER_BACKLOG = 64 << 20  # bytes queued to a follower that does not read: it is dropped


@dataclass(frozen=True, slots=True)
class _Sync:
    """A second has passed: sync what was written (the ``everysec`` policy)."""


class WALManager(Component):
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.policy = cfg.wal.fsync
        self.store = WALStore(
            cfg.o_supervisor.wal_dir,
            segment_entries=cfg.wal.segment_entries,
            segment_bytes=cfg.wal.segment_bytes,
            salvage=cfg.wal.salvage,
        )
        self._staged: list[tuple[Caller, list[bytes]]] = []  # appends of this wake-up
        self._dirty = False
        self._background: BackgroundSync | None = None  # the "always" policy's worker
        self._syncing: Written = []  # covered by the sync in flight
        self._unsynced: Written = []  # written since it started: the next sync covers them
        self._failed: str | None = None
        self.appends = 0
        self.syncs = 0
        self.acked_lsn = 0  # the newest entry acknowledged to its writer
        self.followers: dict[Channel, int] = {}  # connection -> last LSN pushed to it

    def init(self) -> None:
        self.store.open()  # WALCorruption stops the start with file and offset
        for note in self.store.notes:
            logger.warning("wal: {}", note)
        self.acked_lsn = self.store.last_lsn  # on disk before this start: replayed, so known
        logger.info(
            "wal: open at LSN {} ({} segments, fsync {})",
            self.store.last_lsn,
            len(self.store.segments),
            self.policy,
        )
        if self.policy == "everysec":
            self.send_after(1.0, _Sync())
        if self.policy == "always":
            self._background = BackgroundSync(self.store.sync_fd)
            self.watch_fd(self._background.fileno(), self._on_synced)

    def terminate(self, reason: str) -> None:
        if self._background is not None:
            self._background.close()  # waits for the sync in flight; the one below covers all
        if self._failed is None and self.policy != "no":
            try:
                self.store.sync()
            except OSError as exc:
                logger.critical("wal: final fsync failed: {}", exc)
                self._failed = f"final fsync failed: {exc}"
        self._answer(self._syncing + self._unsynced)  # durable now, or told they are not
        self._syncing, self._unsynced = [], []
        self.store.close()

    @on_call(Append)
    def _on_append(self, request: Append, caller: Caller) -> Any:
        return self._append(request.entries, caller)

    @on_call(ReadSpansAfter)
    def _on_read_spans(self, request: ReadSpansAfter, caller: Caller) -> Any:
        self._write_staged()
        return self._send_spans(caller, request.lsn, request.limit)

    @on_call(LastLsn)
    def _on_last_lsn(self, request: LastLsn, caller: Caller) -> int:
        self._write_staged()
        return self.store.last_lsn

    @on_call(SkipThrough)
    def _on_skip_through(self, request: SkipThrough, caller: Caller) -> int:
        """A checkpoint covers LSNs this log never had (salvage cut them)."""
        self._write_staged()
        before = self.store.next_lsn
        self.store.skip_through(request.lsn)
        if not (self._staged or self._syncing or self._unsynced):
            self.acked_lsn = self.store.last_lsn  # the skipped LSNs will never hold entries
        if self.store.next_lsn != before:
            logger.warning(
                "wal: LSNs {}..{} are covered by a checkpoint but not in the log; "
                "the next entry gets LSN {}",
                before,
                self.store.next_lsn - 1,
                self.store.next_lsn,
            )
        return self.store.last_lsn

    @on_call(WalStats)
    def _on_stats(self, request: WalStats, caller: Caller) -> dict[str, Any]:
        return {
            **self.store.stats(),
            "fsync": self.policy,
            "appends": self.appends,
            "syncs": self.syncs,
            "failed": self._failed,
        }

    @on_call(WalTail)
    def _on_tail(self, request: WalTail, caller: Caller) -> list[dict[str, Any]]:
        self._write_staged()
        first = max(0, self.store.last_lsn - max(0, request.n))
        return [{"lsn": r.lsn, "entry": self._entry(r)} for r in self.store.read_after(first)]

    @on_call(WalVerify)
    def _on_verify(self, request: WalVerify, caller: Caller) -> dict[str, Any]:
        return verify_dir(self.store.dir)

    @on_call(TruncateThrough)
    def _on_truncate(self, request: TruncateThrough, caller: Caller) -> list[str]:
        return [str(p) for p in self.store.truncate_through(request.lsn)]

    def _send_spans(self, caller: Caller, lsn: int, limit: int | None) -> Any:
        """Answer ``{"spans": [SegmentSpan], "more": bool, "newest": int}`` for the records
        after ``lsn`` (at most ``limit``, from at most ``MAX_SPANS`` segments), with a
        read-only descriptor of each span's segment attached: the caller reads the verified
        records itself, so megabytes of entries never cross this channel, and a segment
        released meanwhile stays readable through its descriptor. ``newest`` is the newest
        LSN handed out: a restart's plan needs it, and asking apart costs a round trip."""
        spans = self.store.spans_after(lsn, limit, MAX_SPANS)
        last = spans[-1].first_lsn + len(spans[-1]) - 1 if spans else lsn
        more = any(seg.count and seg.last_lsn > last for seg in self.store.segments)
        value = {"spans": spans, "more": more, "newest": self.store.last_lsn}
        if not spans:
            return value
        fds: list[int] = []
        try:
            for span in spans:
                fds.append(os.open(span.path, os.O_RDONLY | os.O_CLOEXEC))
            caller.channel.send_with_fds(("reply", caller.call_id, True, value), fds)
        except OSError as exc:
            raise CallError(f"cannot hand out WAL segments: {exc}") from exc
        finally:
            for fd in fds:
                os.close(fd)
        return NOREPLY

    @staticmethod
    def _entry(record: Any) -> Any:
        try:
            return unpack_payload(record.payload, max_frame=1 << 30)
        except FrameError as exc:  # verified by CRC, so it was written like this
            raise CallError(f"WAL record LSN {record.lsn} is not a map entry: {exc}") from exc

    @on_cast(TruncateThrough)
    def _on_truncate_cast(self, request: TruncateThrough) -> None:
        removed = self.store.truncate_through(request.lsn)
        if removed:
            logger.info("wal: released {} segment(s) covered by checkpoints", len(removed))

    @on_info(_Sync)
    def _on_sync_due(self, msg: _Sync) -> None:
        if self._dirty and self._failed is None:
            self._sync()
        self.send_after(1.0, _Sync())

    def _append(self, entries: list[Any], caller: Caller) -> Any:
        """Stage now; write, sync and answer once for the whole wake-up (after_events)."""
        if self._failed is not None:
            raise CallError(f"WAL unavailable: {self._failed}")
        if not isinstance(entries, list) or any(type(e) is not bytes for e in entries):
            raise CallError("append takes a list of MessagePack-encoded entries (bytes)")
        self._staged.append((caller, entries))
        return NOREPLY

    def after_events(self) -> None:
        self._write_staged()

    def _write_staged(self) -> None:
        """Write this wake-up's appends. A read calls it first: it answers for every append
        that came before it, even one that came in the same wake-up (a restore planned
        without it would leave its entries out and number the next ones wrongly)."""
        if not self._staged:
            return
        staged, self._staged = self._staged, []
        payloads = [p for _caller, batch in staged for p in batch]
        try:
            lsns = self.store.append(payloads)  # one write per segment touched
        except (OSError, WALError) as exc:
            self._fatal(f"write to {self.store.segments[-1].path} failed: {exc}")
            for caller, _ in staged:
                self.reply_error(caller, f"WAL write failed: {exc}")
            return
        self.appends += len(lsns)
        self._dirty = True
        written: Written = []
        start = 0
        for caller, batch in staged:
            written.append((caller, lsns[start : start + len(batch)], batch))
            start += len(batch)
        if self._background is None:
            self._answer(written)  # everysec, no: the write is the acknowledgement
            return
        self._unsynced += written
        if not self._background.busy:
            self._start_sync()

    def _start_sync(self) -> None:
        assert self._background is not None
        self._syncing, self._unsynced = self._unsynced, []
        self._background.start(self.store.sync_handle())

    def _on_synced(self) -> None:
        """A background sync finished: answer what it covered, start the next one."""
        assert self._background is not None
        for error in self._background.finished():
            if error is not None:
                self._fatal(f"fdatasync of {self.store.segments[-1].path} failed: {error}")
                self._answer(self._syncing + self._unsynced)
                self._syncing, self._unsynced = [], []
                return
            self.syncs += 1
            self._answer(self._syncing)
            self._syncing = []
        if self._unsynced and not self._background.busy and self._failed is None:
            self._start_sync()
        elif not self._unsynced:
            self._dirty = False

    def _answer(self, written: Written) -> None:
        for caller, lsns, _entries in written:
            if self._failed is None:
                self.reply(caller, lsns)
            else:
                self.reply_error(caller, f"WAL unavailable: {self._failed}")
        lsns = [lsn for _caller, batch_lsns, _entries in written for lsn in batch_lsns]
        if self._failed is None and lsns:
            self.acked_lsn = lsns[-1]
            if self.followers:
                self._push(lsns[0], [e for _caller, _lsns, batch in written for e in batch])

    # -- followers (shadows kept in step with the main's writes) ------------------------------

    @on_call(Follow)
    def _on_follow(self, request: Follow, caller: Caller) -> int:
        """Catch the follower up on what is acknowledged after its LSN, then push the rest
        as it is acknowledged."""
        after = request.after_lsn
        if after < self.acked_lsn:
            first = self.store.segments[0].first_lsn if self.store.segments else 1
            if after + 1 < first:
                raise CallError(f"WAL entries {after + 1}..{first - 1} are released: restore")
            for run in self.store.read_payloads_after(after, self.acked_lsn - after):
                caller.channel.send(("cast", WalEntries(run.first_lsn, run.payloads())))
        self.followers[caller.channel] = max(after, self.acked_lsn)
        return self.acked_lsn

    def _push(self, first: int, payloads: list[bytes]) -> None:
        last = first + len(payloads) - 1
        for channel, pushed in list(self.followers.items()):
            if channel.closed:
                del self.followers[channel]
            elif channel.backlog > FOLLOWER_BACKLOG:
                del self.followers[channel]
                logger.warning("wal: a follower fell {} bytes behind: dropped", channel.backlog)
                channel.send(("cast", FollowLost("fell too far behind the WAL")))
            elif last > pushed:
                skip = max(0, pushed + 1 - first)
                channel.send(("cast", WalEntries(first + skip, payloads[skip:])))
                self.followers[channel] = last

    def _sync(self) -> bool:
        try:
            self.store.sync()
        except OSError as exc:
            self._fatal(f"fdatasync of {self.store.segments[-1].path} failed: {exc}")
            return False
        self.syncs += 1
        self._dirty = False
        return True

    def _fatal(self, reason: str) -> None:
        if self._failed is not None:
            return
        self._failed = reason
        logger.critical(
            "wal: {} — stopping the tree (an fsync/write error is never retried)", reason
        )
        try:
            self.parent.call(Fatal(f"WAL: {reason}"), timeout=5.0)
        except CallError:
            self.stop("wal failed")
