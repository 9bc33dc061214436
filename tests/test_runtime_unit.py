"""Unit tests of the runtime core's pure parts: channels, calls, intensity, exit text."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time

import pytest
from support import wait_for

from osup_mp.lowlevel.proc import describe_exit
from osup_mp.runtime.calls import CallError, CallMux, CallTimeout
from osup_mp.runtime.channel import MAX_FDS, Channel, channel_pair
from osup_mp.runtime.children import Intensity
from osup_mp.runtime.control import peer_uid_allowed

pytestmark = pytest.mark.unit  # no process started


@pytest.fixture
def pair():
    a, b = channel_pair()
    yield a, b
    a.close()
    b.close()


def test_channel_batches_many_messages(pair) -> None:
    a, b = pair
    for i in range(1000):
        a.send(("cast", i))
    assert a.pending_output
    a.flush_blocking()
    got: list = []
    while len(got) < 1000:
        b.wait_readable(1)
        got += b.receive()
    assert got == [("cast", i) for i in range(1000)]


def test_channel_large_message_and_eof(pair) -> None:
    a, b = pair
    blob = os.urandom(3 * 1024 * 1024)
    a.send(("blob", blob))
    got: list = []
    while not got:
        a.flush()
        if b.wait_readable(1):
            got = b.receive()
    assert got == [("blob", blob)]
    a.close()
    b.wait_readable(1)
    assert b.receive() == [] and b.closed


def test_fds_arrive_with_their_message(pair) -> None:
    a, b = pair
    r, w = os.pipe()
    a.send(("plain", 1))
    a.send_with_fds(("with_fd", 2), [r])
    a.send_now(("plain", 3))
    os.close(r)
    got: list = []
    while len(got) < 3:
        b.wait_readable(1)
        got += b.receive()
    assert got[0] == ("plain", 1) and got[2] == ("plain", 3)
    kind, n, fds = got[1]
    assert (kind, n, len(fds)) == ("with_fd", 2, 1)
    os.write(w, b"x")
    assert os.read(fds[0], 1) == b"x"
    os.close(fds[0])
    os.close(w)


def test_up_to_max_fds_arrive_with_a_large_message_and_more_are_refused(pair) -> None:
    a, b = pair
    pipes = [os.pipe() for _ in range(MAX_FDS)]
    blob = os.urandom(2 * 1024 * 1024)  # arrives over many reads; the fds ride on the first
    got: list = []

    def receive() -> None:
        while not got and b.wait_readable(5):
            got.extend(b.receive())

    reader = threading.Thread(target=receive)
    reader.start()
    a.send_with_fds(("many", blob), [r for r, _w in pipes])  # queued: never waits
    a.flush_blocking(10)
    reader.join(10)
    kind, data, fds = got[0]
    assert (kind, data, len(fds)) == ("many", blob, MAX_FDS)
    for fd, (r, w) in zip(fds, pipes, strict=True):
        os.write(w, b"y")
        assert os.read(fd, 1) == b"y"
        for end in (fd, r, w):
            os.close(end)
    with pytest.raises(ValueError, match="at most"):
        a.send_with_fds(("too many", 0), [0] * (MAX_FDS + 1))


def test_fds_to_a_peer_that_does_not_read_wait_in_the_channel_not_in_the_sender(pair) -> None:
    """A full socket queues a message with descriptors as any other: the sender's loop goes
    on, order is kept, and each message gets its own descriptors once the peer reads."""
    a, b = pair
    filler = os.urandom(64 * 1024)
    while a.flush():  # fill the socket: the peer reads nothing yet
        a.send(("fill", filler))
    pipes = [os.pipe() for _ in range(3)]
    for i, (r, _w) in enumerate(pipes):
        t0 = time.monotonic()
        assert a.send_with_fds(("with_fd", i), [r]) is True
        assert time.monotonic() - t0 < 0.1  # queued, not waited for
        os.close(r)  # the channel keeps its own copy until it is sent
        a.send(("plain", i))
    assert a.pending_output
    got: list = []
    deadline = time.monotonic() + 10
    while len([m for m in got if m[0] != "fill"]) < 6 and time.monotonic() < deadline:
        a.flush()
        if b.wait_readable(0.1):
            got += b.receive()
    ours = [m for m in got if m[0] != "fill"]
    assert [m[:2] for m in ours] == [(k, i) for i in range(3) for k in ("with_fd", "plain")]
    for (_kind, i, fds), (_r, w) in zip(ours[::2], pipes, strict=True):
        os.write(w, bytes([i]))
        assert os.read(fds[0], 1) == bytes([i])  # its own pipe, not a neighbour's
        os.close(fds[0])
        os.close(w)


def test_fds_to_a_gone_peer_say_so(pair) -> None:
    """A peer that is gone (its process died, perhaps not yet reaped): False, no raise."""
    a, b = pair
    b.close()
    r, w = os.pipe()
    try:
        assert a.send_with_fds(("with_fd", 1), [r]) is False
        assert a.closed
    finally:
        os.close(r)
        os.close(w)


def _serve(channel: Channel) -> None:
    """Answer every call on ``channel`` with (request * 2)."""
    channel.wait_readable(1)
    for msg in channel.receive():
        if msg[0] == "call":
            channel.send(("reply", msg[1], True, msg[2] * 2))
    channel.flush_blocking()


def test_pipelined_calls_match_by_id(pair) -> None:
    a, b = pair
    mux = CallMux(a, "b")
    results: dict[int, object] = {}
    for i in range(100):
        mux.call_async(i, lambda ok, v, i=i: results.__setitem__(i, (ok, v)))
    a.flush_blocking()
    assert mux.in_flight == 100
    while mux.in_flight:
        _serve(b)
        a.wait_readable(1)
        assert mux.dispatch(a.receive()) == []
    assert results == {i: (True, i * 2) for i in range(100)}


def test_blocking_call_timeout_and_peer_exit(pair) -> None:
    a, b = pair
    mux = CallMux(a, "b")
    with pytest.raises(CallTimeout):
        mux.call("x", timeout=0.05)
    # the late reply to the timed-out call is dropped, not delivered to the next caller
    b.wait_readable(1)
    (call,) = b.receive()
    b.send_now(("reply", call[1], True, "late"))
    failures: list = []
    mux.call_async("y", lambda ok, v: failures.append((ok, v)), timeout=None)
    a.flush_blocking()
    b.close()
    while not a.closed:  # the late reply first, then EOF
        a.wait_readable(1)
        assert mux.dispatch(a.receive()) == []
    mux.fail_all("b exited")
    assert failures and failures[0][0] is False and isinstance(failures[0][1], CallError)
    with pytest.raises(CallError, match="not connected"):
        mux.call("z")


def test_async_call_expires() -> None:
    a, b = channel_pair()
    mux = CallMux(a, "b")
    seen: list = []
    mux.call_async("q", lambda ok, v: seen.append((ok, v)), timeout=0.01)
    assert mux.expire(now=0.0) is not None  # not yet
    import time

    mux.expire(now=time.monotonic() + 1)
    assert seen and seen[0][0] is False and isinstance(seen[0][1], CallTimeout)
    assert mux.in_flight == 0
    a.close()
    b.close()


def test_intensity_window() -> None:
    limit = Intensity(max_restarts=3, max_seconds=5)
    assert not any(limit.exceeded(t) for t in (0.0, 1.0, 2.0))
    assert limit.exceeded(3.0)  # 4 restarts within 5 s
    limit = Intensity(max_restarts=3, max_seconds=5)
    assert not any(limit.exceeded(t) for t in (0.0, 2.0, 4.0, 6.0, 8.0, 10.0))
    assert Intensity(max_restarts=0, max_seconds=5).exceeded(0.0)


def test_describe_exit() -> None:
    assert describe_exit(0) == "exited with status 0"
    assert describe_exit(-signal.SIGKILL) == "killed by SIGKILL"
    assert describe_exit(None) == "still running"


def test_peer_uid_policy() -> None:
    assert peer_uid_allowed(1000, own_uid=1000)
    assert peer_uid_allowed(0, own_uid=1000)
    assert not peer_uid_allowed(1001, own_uid=1000)


def test_socketpair_is_unix() -> None:
    a, b = channel_pair()
    assert a.sock.family == socket.AF_UNIX
    a.close()
    b.close()


def test_messages_read_during_a_blocking_call_are_kept(pair) -> None:
    a, b = pair
    mux = CallMux(a, "b")
    # The peer sends a call of its own, then answers ours: both arrive while we block.
    b.send(("call", 99, "their request"))
    b.send(("cast", "note"))
    b.flush_blocking()

    import threading

    def answer() -> None:
        b.wait_readable(2)
        (msg,) = [m for m in b.receive() if m[0] == "call"]
        b.send_now(("reply", msg[1], True, "ours"))

    t = threading.Thread(target=answer)
    t.start()
    assert mux.call("our request", timeout=2) == "ours"
    t.join()
    assert mux.deferred == [("call", 99, "their request"), ("cast", "note")]


def test_an_agents_stdin_pipe_is_widened_where_the_kernel_allows() -> None:
    import fcntl

    from osup_mp.components.agent.pipes import PIPE_SIZE, widen_pipe

    r, w = os.pipe()
    try:
        capacity = widen_pipe(w)
        assert capacity == fcntl.fcntl(w, fcntl.F_GETPIPE_SZ)
        with open("/proc/sys/fs/pipe-max-size") as f:
            if int(f.read()) >= PIPE_SIZE:
                assert capacity >= PIPE_SIZE
    finally:
        os.close(r)
        os.close(w)


def test_an_event_for_a_closed_fd_never_runs_the_callback_of_its_reused_number(pair) -> None:
    """Two ready pipes; the first callback run closes the other and opens a new pipe under
    the same fd number (as an agent's restart reuses its dead predecessor's numbers). The
    batch's event for the old fd must not run the new fd's callback."""
    from osup_mp.runtime.component import Component
    from osup_mp.runtime.loop import ComponentLoop

    loop = ComponentLoop(Component(), "test", pair[0])
    pipes = [os.pipe(), os.pipe()]
    for _r, w in pipes:
        os.write(w, b"x")
    ran: list[str] = []
    opened: list[int] = []

    def replace_other(me: int) -> None:
        ran.append(f"old {me}")
        os.read(pipes[me][0], 1)
        other = pipes[1 - me][0]
        loop.set_watch(other, None, None)
        r, w = os.pipe()
        os.dup2(r, other)  # the same number, a new pipe with nothing in it
        os.close(r)
        opened.append(w)
        loop.set_watch(other, lambda: ran.append(f"new {1 - me}"), None)

    for i, (r, _w) in enumerate(pipes):
        loop.set_watch(r, lambda i=i: replace_other(i), None)
    try:
        loop.wait_on({r for r, _w in pipes}, 1.0)
        assert len(ran) == 1 and ran[0].startswith("old"), ran  # the other event was stale
        # The new fd's own readiness is still reported: it is level-triggered.
        os.write(opened[0], b"y")
        loop.wait_on({r for r, _w in pipes}, 1.0)
        assert ran[1].startswith("new"), ran
    finally:
        for fd in [fd for p in pipes for fd in p] + opened:
            os.close(fd)
        loop._epoll.close()


def test_a_wake_up_flushes_what_was_queued_and_expires_what_is_timed(pair) -> None:
    """After a wake-up the loop flushes the channels that queued output since the last one
    and expires the calls of the muxes that made calls with a deadline, and says when the
    next deadline is; a channel dropped meanwhile is neither flushed nor expired."""
    from osup_mp.runtime.component import Component
    from osup_mp.runtime.loop import ComponentLoop

    loop = ComponentLoop(Component(), "test", pair[0])
    ours, theirs = channel_pair()
    mux = CallMux(ours, "peer")
    loop._add_channel(ours, mux)
    seen: list[tuple[bool, object]] = []
    try:
        assert loop._service_channels() is None  # nothing queued, nothing timed
        pair[0].send(("info", 1))
        mux.call_async("slow", lambda ok, v: seen.append((ok, v)), timeout=0.05)
        due = loop._service_channels()
        assert due is not None and 0 < due <= 0.05
        assert pair[1].receive() == [("info", 1)]
        assert theirs.receive() == [("call", 1, "slow")]

        def expired() -> list[tuple[bool, object]]:
            loop._service_channels()  # once the deadline has passed, a pass fails the call
            return seen

        wait_for(expired, 5, what="the call to expire")
        assert seen[0][0] is False and isinstance(seen[0][1], CallTimeout)
        assert loop._service_channels() is None  # no call in flight any more
        mux.call_async("never", lambda ok, v: seen.append((ok, v)), timeout=0.01)
        loop._drop_channel(ours)
        assert loop._service_channels() is None and not loop._timed and not loop._unflushed
    finally:
        theirs.close()
        loop._epoll.close()
