"""A restore plan: what a new agent generation restores, and running its calls to the
vault and the WAL, now or from the loop.

The plan (:meth:`RestorePlanning.planning`) is written once, as a generator that yields
each call it needs (peer, request, timeout) and gets the reply back (or the error thrown
in). Two drivers run it: :func:`run_now` makes blocking calls, for a component's ``init``
(it serves nothing yet); :class:`PlanInFlight` makes asynchronous calls, so that the
manager's loop keeps serving while a restarting agent's (or a standby's) state is looked
up.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

from loguru import logger

from osup_mp.components.agent.restore import close_spans
from osup_mp.components.agent.restore import frames as restore_frames
from osup_mp.components.messages import (
    LatestCheckpoint,
    LoadCheckpoint,
    ReadSpansAfter,
    SkipThrough,
)
from osup_mp.runtime.calls import CallError
from osup_mp.storage.wal.records import SegmentSpan

if TYPE_CHECKING:
    from osup_mp.components.agent.lifecycle import AgentLifecycle
    from osup_mp.runtime.component import Component

_PAGE = 50_000  # WAL entries per read_spans_after reply

Call = tuple[str, Any, float]  # peer, request, timeout (s)
Restore = dict[str, Any] | None
Steps = Generator[Call, Any, Restore]
Planned = Callable[[Restore, Exception | None], None]


def run_now(steps: Steps, host: Component) -> Restore:
    """Run ``steps`` with blocking calls; raises what the plan raises (CallError)."""
    try:
        call = next(steps)
        while True:
            peer, request, timeout = call
            try:
                reply = host.peer(peer).call(request, timeout=timeout)
            except CallError as exc:
                call = steps.throw(exc)
            else:
                call = steps.send(reply)
    except StopIteration as done:
        restore: Restore = done.value
        return restore


class PlanInFlight:
    """``steps`` run with asynchronous calls; ``done(restore, None)`` or ``done(None,
    error)`` once they end, unless :meth:`cancel` came first."""

    def __init__(self, steps: Steps, host: Component, done: Planned) -> None:
        self._steps = steps
        self._host = host
        self._done = done
        self.cancelled = False
        self.calls = 0  # calls sent so far (a message sent after the n-th is ordered after it)

    def start(self) -> None:
        """Make the first call (``done`` may run before this returns)."""
        self._advance(self._steps.send, None)  # send(None) starts a generator

    def cancel(self) -> None:
        """Drop the plan: its descriptors are closed, a late reply is discarded."""
        self.cancelled = True
        self._steps.close()

    def _advance(self, step: Callable[[Any], Call], arg: Any) -> None:
        """One step of the plan: ``step(arg)`` is ``send(reply)`` or ``throw(error)``."""
        try:
            peer, request, timeout = step(arg)
        except StopIteration as finished:
            self._done(finished.value, None)
            return
        except (CallError, KeyError) as exc:
            self._done(None, exc)
            return
        try:
            reply = functools.partial(self._reply, peer)
            self._host.peer(peer).call_async(request, reply, timeout)
            self.calls += 1
        except CallError as exc:
            self._advance(self._steps.throw, exc)

    def _reply(self, peer: str, ok: bool, value: Any) -> None:
        if self.cancelled:
            if isinstance(value, tuple):  # (value, descriptors) nobody will read
                for fd in value[1]:
                    os.close(fd)
            return
        if ok:
            self._advance(self._steps.send, value)
        else:
            error = value if isinstance(value, CallError) else CallError(f"{peer}: {value}")
            self._advance(self._steps.throw, error)


class RestorePlanning:
    """What a new agent generation restores, looked up in the vault and the WAL: the part
    of :class:`.durability.Durability` that plans (see :meth:`planning`)."""

    host: AgentLifecycle
    label: str
    durable: bool
    follower: bool
    applied_lsn: int
    pinned: str | None
    checkpoint_soon: bool
    nothing_stored: bool
    _since_checkpoint: int

    def planning(self) -> Steps:
        """For a new agent generation: the newest valid checkpoint (or the pinned one) and
        where every WAL entry after its LSN is; None when there is nothing to restore.
        Raises CallError when the vault or the WAL cannot answer (starting empty would lose
        data) or entries are missing.

        The WAL answers with where the entries are (segment spans,
        from its index of the records it verified) and a descriptor of each segment; the
        entries themselves are read by :meth:`send_restore`, once the agent is starting (it
        boots meanwhile). Pass the plan to :meth:`send_restore` or :func:`.restore.discard`.

        A follower reads the same, changes nothing (no skip, no accepted gap), and leaves
        entries written after its read to the WAL's push.

        The steps yield the calls to make (:mod:`.planning` runs them): use :meth:`plan`
        or :meth:`plan_async`."""
        if not (self.durable or self.follower):
            return None
        if self.durable and self.nothing_stored and not self.pinned:
            return None  # no call: only this manager stores, and it stored nothing since
        pinned, self.pinned = (self.pinned, None) if self.durable else (None, None)
        request = LoadCheckpoint(pinned, raw=True) if pinned else LatestCheckpoint(raw=True)
        checkpoint = yield ("vault", request, 30.0)
        lsn = checkpoint["lsn"] if checkpoint else 0
        spans: list[tuple[SegmentSpan, int]] = []
        count = 0
        missing: list[tuple[int, int]] = []  # LSN ranges neither the checkpoint nor the WAL has
        cursor = lsn
        try:
            while True:  # paged: one reply never has to hold the whole tail
                reply = yield ("wal", ReadSpansAfter(cursor, _PAGE), 60.0)
                page, fds = reply if isinstance(reply, tuple) else (reply, [])
                if len(fds) != len(page["spans"]):
                    for fd in fds:
                        os.close(fd)
                    raise CallError(f"WAL segments came with {len(fds)} descriptors")
                for span, fd in zip(page["spans"], fds, strict=True):
                    spans.append((span, fd))
                    if span.first_lsn != cursor + 1:  # LSNs are consecutive within a span
                        missing.append((cursor + 1, span.first_lsn - 1))
                    count += len(span)
                    cursor = span.first_lsn + len(span) - 1
                if not page["more"]:
                    break
            if self.follower:
                if missing:
                    raise CallError(
                        f"the main's WAL lacks entries {missing[0][0]}..{missing[0][1]}"
                    )
                return self._planned(checkpoint, lsn, cursor, count, spans)
            # The WAL's newest LSN counts what salvage cut too: entries it handed out that it
            # can no longer give back are missing, not merely absent.
            newest = page["newest"]
            if newest > cursor:
                missing.append((cursor + 1, newest))
            if missing:
                self._accept_gap(checkpoint, lsn, missing)
                self.checkpoint_soon = True  # so the accepted loss is not met again next start
            elif newest < lsn:
                # The WAL is behind the checkpoint (salvage cut it): its next LSN must come
                # after what the checkpoint covers, or new entries would be skipped on restore.
                yield ("wal", SkipThrough(lsn), 30.0)
        except BaseException:
            close_spans(spans)
            raise
        self.nothing_stored = checkpoint is None and not count and not missing
        return self._planned(checkpoint, lsn, cursor, count, spans)

    def plan(self) -> dict[str, Any] | None:
        """:meth:`planning` with blocking calls (raises CallError or KeyError)."""
        return run_now(self.planning(), self.host)

    def plan_async(self, done: Planned) -> PlanInFlight:
        """:meth:`planning` with calls answered through the loop, once started;
        ``done(restore, error)``."""
        return PlanInFlight(self.planning(), self.host, done)

    def _planned(
        self,
        checkpoint: dict[str, Any] | None,
        lsn: int,
        cursor: int,
        count: int,
        spans: list[tuple[SegmentSpan, int]],
    ) -> dict[str, Any] | None:
        self.applied_lsn = cursor
        self._since_checkpoint = count
        if checkpoint is None and not count:
            close_spans(spans)
            return None
        logger.info(
            "agent {}: restoring checkpoint {} (LSN {}) + {} WAL entries",
            self.label,
            checkpoint["id"] if checkpoint else "none",
            lsn,
            count,
        )
        return {
            "checkpoint_id": checkpoint["id"] if checkpoint else None,
            "payload": checkpoint["payload"] if checkpoint else None,
            "lsn": lsn,
            "spans": spans,
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

    def send_restore(
        self, restore: dict[str, Any], send: Callable[[bytes], None] | None = None
    ) -> None:
        """Send a plan (or ``entries`` given in ``restore``) as :func:`.restore.frames`, to
        the host's agent or to ``send``."""
        send = send or self.host.send_agent_raw
        for frame in restore_frames(restore, self.host.cfg.agent.max_frame):
            send(frame)
