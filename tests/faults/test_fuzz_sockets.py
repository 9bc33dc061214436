"""Fault matrix: both sockets fuzzed with generated frames.

Each example connects to the supervisor's control socket or the main agent's data plane
and sends one generated input: a frame of random MessagePack (maps with odd keys and
values, other types at the top), of random bytes, with a lying or huge length prefix, or
cut short. A complete frame must be answered or the connection closed; a cut one may be
left waiting. Afterwards the tree is healthy (same agent, same components) and serves.
"""

from __future__ import annotations

import socket
import struct
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import wait_for

from osup_mp.wire import FrameDecoder

pytestmark = pytest.mark.faults

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=True)
    | st.text(max_size=20)
    | st.binary(max_size=40)
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_scalars, inner, max_size=4),
    max_leaves=12,
)
_keys = st.sampled_from(["type", "command", "id", "args", "data", "timeout"]) | _scalars
_commands = st.sampled_from(["ping", "status", "request", "stop", "nope", "", "restart"])
_maps = st.dictionaries(_keys, _values | _commands, max_size=6)


def _frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


def _packed(value: Any) -> bytes:
    return bytes(msgpack.packb(value, use_bin_type=True))


_inputs = st.one_of(
    _maps.map(lambda m: _frame(_packed(m))),  # a map: the common case, odd fields
    _values.map(lambda v: _frame(_packed(v))),  # anything else at the top
    st.binary(min_size=1, max_size=200).map(_frame),  # not MessagePack at all
    st.binary(min_size=1, max_size=64),  # not even a frame
    st.integers(min_value=2**20, max_value=2**32 - 1).map(lambda n: struct.pack(">I", n)),
    _maps.map(lambda m: _frame(_packed(m))[:-1]),  # one byte short
)


def _exchange(path: Path, data: bytes) -> str:
    """Send ``data``; return "answered", "closed" or "waiting" (nothing within 0.3 s)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.3)
        sock.connect(str(path))
        sock.sendall(data)
        decoder = FrameDecoder(max_frame=64 << 20)
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    return "closed"
                if decoder.feed(chunk):
                    return "answered"
        except TimeoutError:
            return "waiting"
        except ConnectionResetError:
            return "closed"


def _complete(data: bytes, max_frame: int) -> bool:
    """Does ``data`` hold a whole frame, or a length over the socket's ``max_frame`` (which
    the server refuses without reading on)?"""
    if len(data) < 4:
        return False
    (length,) = struct.unpack(">I", data[:4])
    return len(data) - 4 >= length or length > max_frame


def test_fuzzed_frames_are_answered_or_closed_and_the_tree_stays_healthy(make_tree) -> None:
    tree = make_tree().start()
    agent = wait_for(tree.running_agent, what="agent running")
    components = tree.pids()
    sockets = {
        "control": tree.cfg.control_socket,
        "data plane": tree.cfg.data_socket("main"),
    }
    limits = {"control": tree.cfg.control.max_frame, "data plane": tree.cfg.agent.max_frame}
    outcomes: dict[str, int] = {}

    @settings(
        max_examples=150,
        deadline=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    @given(which=st.sampled_from(sorted(sockets)), data=_inputs)
    def fuzz(which: str, data: bytes) -> None:
        outcome = _exchange(sockets[which], data)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        if _complete(data, limits[which]):
            assert outcome != "waiting", f"{which}: no answer and no close for {data[:64]!r}"

    fuzz()
    assert tree.pids() == components  # no component crashed
    assert tree.running_agent()["pid"] == agent["pid"]  # nor the agent
    assert tree.request("ping") == "pong"
    assert tree.agent_request({"op": "stats"})["blocks"] == 0
    print(f"\nfuzz outcomes: {outcomes}")
