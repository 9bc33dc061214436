"""The event loop every component process runs: :class:`ComponentLoop` owns the process,
with one ``epoll`` wait over the parent channel, peer channels, watched file descriptors,
the signal wakeup fd and a timer heap.

Design decisions:

* Batching: each wake-up drains every readable channel, handles all messages, then flushes
  once each channel that queued output (a channel and a mux tell the loop when they have
  something to flush or a deadline to keep, so a wake-up costs nothing per idle peer): a
  burst of pipelined calls costs one read and one write.
* The wait is a bare ``epoll`` with a table of (reader, writer) callbacks per fd, not
  ``selectors``, which builds key objects and translates events on every wait (about 0.5 µs
  more here): a wake-up that carries a single message is the common case on the request
  path, and busy polling waits with a timeout of zero many times in a row.
* A batch runs an event only for the watch it was reported for: a watch registered after
  the poll (an fd number closed and reused by an earlier callback of the batch) waits for
  the next poll.
* Let it crash: an exception in a callback fails the call in flight, runs ``terminate`` and
  exits non-zero; restarting is the supervisor's job, not the component's.
"""

from __future__ import annotations

import contextlib
import functools
import heapq
import itertools
import os
import select
import signal
import socket
import time
import traceback
from collections.abc import Callable
from typing import Any

from loguru import logger

from osup_mp.lowlevel.spin import Spinner
from osup_mp.runtime.calls import CallError, CallInterrupted, CallMux
from osup_mp.runtime.channel import Channel
from osup_mp.runtime.component import NOREPLY, NORMAL_REASONS, Caller, Component
from osup_mp.runtime.messages import Connect, PeerDown
from osup_mp.runtime.peers import PeerRef

Callback = Callable[[], None]

_READ_EVENTS = select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR
_WRITE_EVENTS = select.EPOLLOUT | select.EPOLLHUP | select.EPOLLERR


class ComponentLoop:
    """Runs one component in the current process until it stops."""

    def __init__(self, component: Component, name: str, parent: Channel) -> None:
        self.component = component
        self.name = name
        self.parent = CallMux(parent, "supervisor")
        self._epoll = select.epoll()
        # fd -> (reader, writer, registration number). The number tells a watch made while a
        # batch of ready events is being run from the one the batch's event was for.
        self._watches: dict[int, tuple[Callback | None, Callback | None, int]] = {}
        self._registrations = 0
        self.stop_reason: str | None = None
        self._channels: dict[int, tuple[Channel, CallMux | None]] = {}
        # What a wake-up left to do: channels with output to flush, muxes with deadlines.
        self._unflushed: set[Channel] = set()
        self._timed: set[CallMux] = set()
        self._peers: dict[str, PeerRef] = {}
        self._unconfirmed: set[CallMux] = set()  # connects the parent has not answered yet
        self._timers: list[tuple[float, int, Any]] = []
        self._cancelled: set[int] = set()
        self._timer_ids = itertools.count(1)
        self._wakeup_r, self._wakeup_w = socket.socketpair()
        self._interruptible(self.parent)
        self._add_channel(parent, self.parent)
        component.name = name
        component._loop = self

    # -- plumbing used by Component helpers --------------------------------------------------

    def set_watch(self, fd: int, reader: Callback | None, writer: Callback | None) -> None:
        """Watch ``fd`` with these callbacks (both None: stop watching it)."""
        mask = (select.EPOLLIN if reader else 0) | (select.EPOLLOUT if writer else 0)
        known = self._watches.get(fd)
        if not mask:
            if known is not None:
                del self._watches[fd]
                with contextlib.suppress(OSError):  # closed already: epoll forgot it
                    self._epoll.unregister(fd)
            return
        if known is not None:
            try:
                self._epoll.modify(fd, mask)
                self._watches[fd] = (reader, writer, known[2])
                return
            except FileNotFoundError:  # closed and reused since: a new registration
                pass
        self._epoll.register(fd, mask)
        self._registrations += 1
        self._watches[fd] = (reader, writer, self._registrations)

    def wait_on(self, fds: set[int], timeout: float) -> None:
        """Wait up to ``timeout`` s and run the callbacks of those of ``fds`` that are ready;
        the others stay ready for the main loop (epoll is level-triggered)."""
        self._run_ready(self._epoll.poll(timeout), fds)

    def _run_ready(self, ready: list[tuple[int, int]], only: set[int] | None = None) -> None:
        """Run the callbacks of the ready fds (of those in ``only``, if given).

        A callback may close an fd and open another that gets the same number (an agent's
        pipes closed, a new agent spawned): an event of the batch for the old fd must not run
        the new fd's callback, which would act on a readiness its fd never had. Watches
        registered after the poll are therefore skipped; epoll reports them next time."""
        watches = self._watches
        polled = self._registrations
        for fd, events in ready:
            watch = watches.get(fd)
            if watch is None or watch[2] > polled or (only is not None and fd not in only):
                continue  # unwatched or re-registered by an earlier callback, or not asked for
            reader, writer, _registration = watch
            if writer is not None and events & _WRITE_EVENTS:
                writer()
            if reader is not None and events & _READ_EVENTS:
                reader()

    def reader_of(self, fd: int) -> Callback | None:
        watch = self._watches.get(fd)
        return watch[0] if watch is not None else None

    def writer_of(self, fd: int) -> Callback | None:
        watch = self._watches.get(fd)
        return watch[1] if watch is not None else None

    def _add_channel(self, channel: Channel, mux: CallMux | None) -> None:
        self._channels[channel.fileno()] = (channel, mux)
        channel.on_output = self._unflushed.add
        if channel.pending_output:
            self._unflushed.add(channel)
        if mux is not None:
            mux.on_deadline = self._timed.add
            if mux.in_flight:
                self._timed.add(mux)
        self.set_watch(channel.fileno(), lambda: self._on_channel(channel), None)

    def _drop_channel(self, channel: Channel) -> None:
        fd = channel.fileno()
        entry = self._channels.pop(fd, None)
        self._unflushed.discard(channel)
        if entry is not None and entry[1] is not None:
            self._timed.discard(entry[1])
        self.set_watch(fd, None, None)
        channel.close()

    def peer(self, name: str) -> PeerRef:
        ref = self._peers.get(name)
        if ref is None:
            ref = self._peers[name] = PeerRef(self, name)
        return ref

    def connect(self, name: str, *, wait: bool = True) -> CallMux:
        """A channel to component ``name``, usable at once; its other end goes through the
        parent, which holds it while ``name`` starts. ``wait``: until the parent has handed
        it over (a refusal raises :class:`CallError`); else a refusal fails what was sent."""
        ours, theirs = socket.socketpair()
        channel = Channel.from_fd(ours.detach())
        mux = CallMux(channel, name)
        try:
            if wait:
                self.parent.call(Connect(name), timeout=10.0, fds=[theirs.fileno()])
            else:
                self._unconfirmed.add(mux)
                done = functools.partial(self._on_connect_reply, mux)
                self.parent.call_async(Connect(name), done, timeout=None, fds=[theirs.fileno()])
        except CallError:
            channel.close()
            raise
        finally:
            theirs.close()  # the parent holds its own copy now
        self._interruptible(mux)
        self._add_channel(channel, mux)
        return mux

    def _on_connect_reply(self, mux: CallMux, ok: bool, value: Any) -> None:
        """The parent handed the channel's other end over (``ok``) or could not: then what
        was sent fails, and no :class:`PeerDown` follows (the peer never was up for us)."""
        self._unconfirmed.discard(mux)
        if ok:
            if mux.channel.closed:  # it died right after the hand-over
                self.component.handle_info(PeerDown(mux.peer))
            return
        mux.fail_all(f"{mux.peer}: {value}")
        if not mux.channel.closed:
            self._drop_channel(mux.channel)

    def _interruptible(self, mux: CallMux) -> None:
        mux.interrupt_fd = self._wakeup_r.fileno()
        mux.interrupted = self._interrupted

    def _interrupted(self) -> bool:
        """The wakeup fd woke a blocking call: drain it (the handler's flag is set already,
        and the loop checks it) and say whether the process is stopping."""
        self._drain_wakeup()
        return self.stop_reason is not None

    def add_timer(self, delay: float, msg: Any) -> int:
        ref = next(self._timer_ids)
        heapq.heappush(self._timers, (time.monotonic() + delay, ref, msg))
        return ref

    def cancel_timer(self, ref: int) -> None:
        self._cancelled.add(ref)

    # -- the loop ----------------------------------------------------------------------------

    def _on_signal(self, signum: int, _frame: object) -> None:
        # Only record the request; the loop acts on it (nothing else is safe here).
        self.stop_reason = "shutdown"

    def run(self) -> int:
        """Initialise, report ready, serve until stopped; return the exit status."""
        self._wakeup_r.setblocking(False)
        self._wakeup_w.setblocking(False)
        signal.set_wakeup_fd(self._wakeup_w.fileno(), warn_on_full_buffer=False)
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the supervisor's to act on
        self.set_watch(self._wakeup_r.fileno(), self._drain_wakeup, None)
        comp = self.component
        try:
            comp.init()
        except Exception as exc:
            logger.error("{}: init failed: {}", self.name, exc)
            logger.opt(exception=exc).debug("{}: init traceback", self.name)
            self.parent.channel.send_now(("init_failed", f"{type(exc).__name__}: {exc}"))
            return 1
        self.parent.channel.send_now(("ready", os.getpid()))
        reason = "normal"
        try:
            self._serve()
            reason = self.stop_reason or "normal"
        except CallInterrupted:
            reason = self.stop_reason or "shutdown"  # stopped in the middle of a call
        except Exception as exc:
            reason = f"crashed: {type(exc).__name__}: {exc}"
            logger.error("{}: {}\n{}", self.name, reason, traceback.format_exc().rstrip())
        try:
            comp.terminate(reason)
        except Exception as exc:
            logger.error("{}: terminate failed: {}", self.name, exc)
        for channel, _mux in list(self._channels.values()):
            try:
                channel.flush_blocking(timeout=1.0)
            except (OSError, TimeoutError):
                pass
        return 0 if reason in NORMAL_REASONS else 1

    def _serve(self) -> None:
        poll = self._epoll.poll
        spinner = Spinner()
        channel_timeout: float | None = None
        calls_seen = -1  # calls made in init() may have left messages: look at once
        timers = self._timers
        while self.stop_reason is None:
            timeout = channel_timeout
            if timers:
                due = max(0.0, timers[0][0] - time.monotonic())
                timeout = due if timeout is None else min(timeout, due)
            if CallMux.blocking_calls != calls_seen:
                timeout = 0  # a call made after the last look left messages to handle
            self._run_ready(spinner.wait(poll, timeout))
            if timers and timers[0][0] <= time.monotonic():
                self._run_timers()
            if CallMux.blocking_calls != calls_seen:
                calls_seen = CallMux.blocking_calls
                self._run_deferred()
            self.component.after_events()
            channel_timeout = self._service_channels()

    def _run_deferred(self) -> None:
        """Messages a blocking call read past (see :attr:`CallMux.deferred`)."""
        for channel, mux in list(self._channels.values()):
            while mux is not None and mux.deferred:
                messages, mux.deferred = mux.deferred, []
                for msg in messages:
                    self._dispatch(channel, msg)

    def _service_channels(self) -> float | None:
        """One pass per wake-up: flush what was queued, expire calls; the next deadline (0
        when a call that expired queued output)."""
        unflushed = self._unflushed
        while unflushed:
            channel = unflushed.pop()
            if not channel.flush():
                self._flush_when_writable(channel)
        timeout: float | None = None
        # A copy: a timed-out call's callback may connect a new peer.
        for mux in list(self._timed):
            nxt = mux.expire()
            if nxt is None:
                self._timed.discard(mux)
            elif timeout is None or nxt < timeout:
                timeout = max(0.0, nxt)
        return 0.0 if unflushed else timeout

    def _flush_when_writable(self, channel: Channel) -> None:
        """A peer's buffer is full (a slow reader, or a peer still starting): the rest
        leaves when its socket has room again. Waiting on that, not retrying on a timer,
        costs no wake-up however long the peer takes."""
        fd = channel.fileno()
        if self.writer_of(fd) is not None:
            return

        def writable() -> None:
            if channel.flush() and not channel.closed:  # a closed one is dropped with its fd
                self.set_watch(fd, self.reader_of(fd), None)

        self.set_watch(fd, self.reader_of(fd), writable)

    def _drain_wakeup(self) -> None:
        try:
            while self._wakeup_r.recv(512):
                pass
        except BlockingIOError:
            pass

    def _run_timers(self) -> None:
        now = time.monotonic()
        timers = self._timers
        while timers and timers[0][0] <= now:
            _when, ref, msg = heapq.heappop(timers)
            if ref in self._cancelled:
                self._cancelled.discard(ref)
                continue
            self.component.handle_info(msg)

    def _on_channel(self, channel: Channel) -> None:
        entry = self._channels.get(channel.fileno())
        if entry is None:
            return
        mux = entry[1]
        messages = channel.receive()
        if mux is not None:
            messages = mux.dispatch(messages)
        for msg in messages:
            self._dispatch(channel, msg)
        if channel.closed:
            self._on_closed(channel, mux)

    def _on_closed(self, channel: Channel, mux: CallMux | None) -> None:
        self._drop_channel(channel)
        if mux is self.parent:
            # The supervisor is gone (pdeathsig may not have fired yet): never outlive it.
            self.stop_reason = "shutdown"
        elif mux is not None:
            mux.fail_all(f"{mux.peer} exited")
            if mux not in self._unconfirmed:  # else the parent's answer says what happened
                self.component.handle_info(PeerDown(mux.peer))

    def _dispatch(self, channel: Channel, msg: Any) -> None:
        comp = self.component
        kind = msg[0] if type(msg) is tuple and msg else None
        if kind == "call":
            caller = Caller(channel, msg[1])
            try:
                result = comp.handle_call(msg[2], caller)
            except CallError as exc:
                channel.send(("reply", msg[1], False, str(exc)))
                return
            except Exception as exc:
                channel.send(("reply", msg[1], False, f"{self.name} crashed: {exc}"))
                raise
            if result is not NOREPLY:
                channel.send(("reply", msg[1], True, result))
        elif kind == "cast":
            comp.handle_cast(msg[1])
        elif kind == "peer":
            # A new inbound connection handed over by the parent: ("peer", caller, [fd]).
            self._add_channel(Channel.from_fd(msg[2][0]), None)
        else:
            comp.handle_info(msg)
