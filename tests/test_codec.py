"""Tests for osup_mp.wire: framing, strict decoding, incremental decoding."""

from __future__ import annotations

import io
import itertools
import pickle
import time
from typing import Any

import msgpack  # type: ignore[import-untyped, unused-ignore]
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from osup_mp.wire import (
    DEFAULT_MAX_FRAME,
    HEADER,
    BadMessage,
    FrameDecoder,
    FrameError,
    FrameTooLarge,
    TruncatedFrame,
    pack,
    read_frame,
    unpack_payload,
    write_frame,
)

pytestmark = pytest.mark.unit  # no process started

# database=None: no example database is written into the work tree.
SETTINGS = settings(max_examples=200, deadline=None, database=None)
FEW = settings(max_examples=50, deadline=None, database=None)

# ---------------------------------------------------------------- strategies

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=20)
)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=12,
)
messages = st.dictionaries(st.text(max_size=10), values, max_size=6)
small_messages = st.dictionaries(
    st.text(max_size=4),
    st.none() | st.integers(-1000, 1000) | st.text(max_size=6) | st.binary(max_size=6),
    max_size=3,
)


def raw_frame(payload: bytes) -> bytes:
    """A frame around an arbitrary payload, bypassing pack()'s checks."""
    return HEADER.pack(len(payload)) + payload


def feed_chunks(chunks: list[bytes], **kwargs: Any) -> list[dict[str, Any]]:
    dec = FrameDecoder(**kwargs)
    out: list[dict[str, Any]] = []
    for chunk in chunks:
        out.extend(dec.feed(chunk))
    assert dec.at_boundary
    assert dec.buffered == 0
    return out


FIXED_MESSAGES: list[dict[str, Any]] = [
    {"type": "hello", "pid": 1234},
    {},
    {"type": "data", "blob": bytes(range(256)) * 2, "n": [1, 2.5, None, True]},
    {"type": "nested", "a": {"b": {"c": ["x", {"d": b"\x00"}]}}},
    {"type": "text", "s": "héllo wörld ✓" * 30},
]


# ---------------------------------------------------------------- round trip


@SETTINGS
@given(messages)
def test_round_trip(msg: dict[str, Any]) -> None:
    frame = pack(msg)
    (length,) = HEADER.unpack(frame[:4])
    assert length == len(frame) - 4
    # pack -> unpack_payload (bytes and memoryview)
    assert unpack_payload(frame[4:]) == msg
    assert unpack_payload(memoryview(frame)[4:]) == msg
    # pack -> FrameDecoder.feed
    dec = FrameDecoder()
    assert dec.feed(frame) == [msg]
    assert dec.at_boundary
    assert dec.buffered == 0
    # pack -> read_frame
    assert read_frame(io.BytesIO(frame)) == msg


def test_pack_accepts_any_mapping_and_tuples() -> None:
    from types import MappingProxyType

    frame = pack(MappingProxyType({"type": "x", "t": (1, 2)}))
    assert unpack_payload(frame[4:]) == {"type": "x", "t": [1, 2]}


def test_wire_format_is_packet4_msgpack() -> None:
    frame = pack({"type": "ping"})
    assert frame == b"\x00\x00\x00\x0b" + b"\x81\xa4type\xa4ping"
    assert frame[4:] == msgpack.packb({"type": "ping"}, use_bin_type=True)


def test_bytes_and_str_are_distinct() -> None:
    msg = {"s": "abc", "b": b"abc", "nested": {b"bk": 1, "sk": 2}}
    out = unpack_payload(pack(msg)[4:])
    assert out == msg
    assert type(out["s"]) is str
    assert type(out["b"]) is bytes


# ---------------------------------------------------------------- splitting


def test_every_single_split_point_fixed() -> None:
    stream = b"".join(pack(m) for m in FIXED_MESSAGES)
    for cut in range(len(stream) + 1):
        assert feed_chunks([stream[:cut], stream[cut:]]) == FIXED_MESSAGES, cut


def test_every_pair_of_split_points_small() -> None:
    msgs: list[dict[str, Any]] = [{"type": "a"}, {"k": 1}, {"type": "b", "v": b"xy"}]
    stream = b"".join(pack(m) for m in msgs)
    for i in range(len(stream) + 1):
        for j in range(i, len(stream) + 1):
            chunks = [stream[:i], stream[i:j], stream[j:]]
            assert feed_chunks(chunks) == msgs, (i, j)


def test_one_byte_at_a_time_fixed() -> None:
    stream = b"".join(pack(m) for m in FIXED_MESSAGES)
    chunks = [stream[i : i + 1] for i in range(len(stream))]
    assert feed_chunks(chunks) == FIXED_MESSAGES


@FEW
@given(st.lists(small_messages, min_size=1, max_size=4))
def test_every_split_point_property(msgs: list[dict[str, Any]]) -> None:
    stream = b"".join(pack(m) for m in msgs)
    for cut in range(len(stream) + 1):
        assert feed_chunks([stream[:cut], stream[cut:]]) == msgs


@FEW
@given(st.lists(messages, min_size=1, max_size=3))
def test_one_byte_at_a_time_property(msgs: list[dict[str, Any]]) -> None:
    frames = [pack(m) for m in msgs]
    stream = b"".join(frames)
    dec = FrameDecoder()
    out: list[dict[str, Any]] = []
    for i in range(len(stream)):
        out.extend(dec.feed(stream[i : i + 1]))
        consumed = sum(len(f) for f in frames[: len(out)])
        assert dec.buffered == i + 1 - consumed
        assert dec.at_boundary == (dec.buffered == 0)
    assert out == msgs
    assert dec.at_boundary


@SETTINGS
@given(
    st.lists(small_messages, min_size=1, max_size=6),
    st.lists(st.integers(min_value=0, max_value=10_000), max_size=20),
    st.sampled_from(["bytes", "bytearray", "memoryview"]),
)
def test_random_chunking(msgs: list[dict[str, Any]], cuts: list[int], kind: str) -> None:
    stream = b"".join(pack(m) for m in msgs)
    points = sorted({c % (len(stream) + 1) for c in cuts})
    bounds = [0, *points, len(stream)]
    chunks = [stream[a:b] for a, b in itertools.pairwise(bounds)]
    assert b"".join(chunks) == stream
    dec = FrameDecoder()
    out: list[dict[str, Any]] = []
    for chunk in chunks:
        data: bytes | bytearray | memoryview
        if kind == "bytearray":
            data = bytearray(chunk)
        elif kind == "memoryview":
            data = memoryview(chunk)
        else:
            data = chunk
        out.extend(dec.feed(data))
    assert out == msgs
    assert dec.at_boundary


def test_feed_empty_returns_nothing() -> None:
    dec = FrameDecoder()
    assert dec.feed(b"") == []
    assert dec.at_boundary
    frame = pack({"a": 1})
    assert dec.feed(frame[:3]) == []
    assert dec.feed(b"") == []
    assert dec.feed(frame[3:]) == [{"a": 1}]


# ---------------------------------------------------------------- partial frames


def test_buffered_and_at_boundary_on_partial_frame() -> None:
    first, second = pack({"type": "one"}), pack({"type": "two", "x": 1})
    dec = FrameDecoder()
    assert dec.at_boundary and dec.buffered == 0
    assert dec.feed(second[:2]) == []  # partial header
    assert dec.buffered == 2 and not dec.at_boundary
    assert dec.feed(second[2:6]) == []  # header + 2 payload bytes
    assert dec.buffered == 6 and not dec.at_boundary
    assert dec.feed(second[6:] + first + second[:5]) == [
        {"type": "two", "x": 1},
        {"type": "one"},
    ]
    assert dec.buffered == 5 and not dec.at_boundary
    assert dec.feed(second[5:]) == [{"type": "two", "x": 1}]
    assert dec.buffered == 0 and dec.at_boundary
    assert not dec.broken


# ---------------------------------------------------------------- size limits


def test_oversized_length_prefix_rejected_from_header_alone() -> None:
    limit = 1000
    dec = FrameDecoder(max_frame=limit)
    header = HEADER.pack(limit + 1)
    assert dec.feed(header[:3]) == []
    with pytest.raises(FrameTooLarge) as info:
        dec.feed(header[3:])  # no body bytes at all
    assert "1001" in str(info.value) and "1000" in str(info.value)
    assert info.value.size == limit + 1
    assert info.value.limit == limit
    assert dec.broken


def test_huge_length_prefix_with_default_limit() -> None:
    dec = FrameDecoder()
    with pytest.raises(FrameTooLarge):
        dec.feed(b"\xff\xff\xff\xff")
    with pytest.raises(FrameTooLarge):
        FrameDecoder().feed(HEADER.pack(DEFAULT_MAX_FRAME + 1))


def test_frame_of_exactly_max_frame_is_accepted() -> None:
    msg = {"type": "blob", "b": b"z" * 100}
    frame = pack(msg)
    size = len(frame) - 4
    assert pack(msg, max_frame=size) == frame
    assert FrameDecoder(max_frame=size).feed(frame) == [msg]
    assert unpack_payload(frame[4:], max_frame=size) == msg
    assert read_frame(io.BytesIO(frame), max_frame=size) == msg
    with pytest.raises(FrameTooLarge):
        FrameDecoder(max_frame=size - 1).feed(frame)
    with pytest.raises(FrameTooLarge):
        unpack_payload(frame[4:], max_frame=size - 1)


def test_pack_oversized_message() -> None:
    msg = {"type": "big", "data": b"x" * 5000}
    with pytest.raises(FrameTooLarge) as info:
        pack(msg, max_frame=4096)
    assert "4096" in str(info.value)
    assert str(info.value.size) in str(info.value)
    assert info.value.size > 5000


def test_invalid_max_frame() -> None:
    with pytest.raises(ValueError):
        FrameDecoder(max_frame=0)
    with pytest.raises(ValueError):
        pack({}, max_frame=-1)


# ---------------------------------------------------------------- bad payloads


@pytest.mark.parametrize(
    "payload",
    [
        msgpack.packb(42),
        msgpack.packb([1, 2, 3]),
        msgpack.packb("a string"),
        msgpack.packb(None),
        msgpack.packb(b"bin", use_bin_type=True),
    ],
    ids=["int", "list", "str", "nil", "bin"],
)
def test_non_map_payload(payload: bytes) -> None:
    with pytest.raises(BadMessage, match="not a map"):
        unpack_payload(payload)
    with pytest.raises(BadMessage):
        FrameDecoder().feed(raw_frame(payload))


@pytest.mark.parametrize(
    "payload",
    [
        msgpack.packb({"a": msgpack.ExtType(5, b"data")}),
        msgpack.packb({"a": msgpack.ExtType(5, b"")}),
        msgpack.packb(msgpack.ExtType(1, b"x")),
        msgpack.packb({"when": msgpack.Timestamp(1, 2)}),
        msgpack.packb({"when": msgpack.Timestamp(2**40, 5)}),
    ],
    ids=["ext", "empty-ext", "top-level-ext", "timestamp32", "timestamp96"],
)
def test_ext_types_rejected(payload: bytes) -> None:
    with pytest.raises(BadMessage, match="ext"):
        unpack_payload(payload)
    with pytest.raises(BadMessage):
        FrameDecoder().feed(raw_frame(payload))


@pytest.mark.parametrize(
    "payload",
    [
        msgpack.packb({1: 2}),
        msgpack.packb({b"type": "x"}, use_bin_type=True),
        msgpack.packb({"ok": {3: "nested int key"}}),
        msgpack.packb({None: 1}),
    ],
    ids=["int-key", "bytes-key", "nested-int-key", "nil-key"],
)
def test_non_str_keys_rejected(payload: bytes) -> None:
    with pytest.raises(BadMessage):
        unpack_payload(payload)
    with pytest.raises(BadMessage):
        FrameDecoder().feed(raw_frame(payload))


@pytest.mark.parametrize(
    "payload",
    [
        b"\xc1",  # never-used msgpack byte
        b"\x81\xa1a",  # map missing its value
        b"\xa2\xff\xfe",  # str that is not UTF-8
        b"\x81\xa2\xff\xfe\x01",  # map key that is not UTF-8
        b"\xdf\xff\xff\xff\xff",  # map32 claiming 4 billion entries
        b"\x81\xa1a\xdb\xff\xff\xff\xff",  # str32 claiming 4 GiB
        b"\x91" * 5000 + b"\x80",  # absurdly deep nesting
        bytes(range(256)),
    ],
    ids=[
        "c1",
        "incomplete",
        "bad-utf8",
        "bad-utf8-key",
        "map32",
        "str32",
        "deep",
        "junk",
    ],
)
def test_garbage_rejected(payload: bytes) -> None:
    with pytest.raises(BadMessage):
        unpack_payload(payload)
    with pytest.raises(BadMessage):
        FrameDecoder().feed(raw_frame(payload))


def test_trailing_bytes_inside_frame() -> None:
    payload = msgpack.packb({"type": "a"}) + msgpack.packb({"type": "b"})
    with pytest.raises(BadMessage, match="trailing"):
        unpack_payload(payload)
    with pytest.raises(BadMessage, match="trailing"):
        FrameDecoder().feed(raw_frame(payload))
    with pytest.raises(BadMessage, match="trailing"):
        unpack_payload(msgpack.packb({"a": 1}) + b"\x00")


def test_zero_length_frame() -> None:
    dec = FrameDecoder()
    with pytest.raises(BadMessage):
        dec.feed(b"\x00\x00\x00\x00")
    assert dec.broken
    with pytest.raises(BadMessage):
        unpack_payload(b"")
    with pytest.raises(BadMessage):
        read_frame(io.BytesIO(b"\x00\x00\x00\x00"))


def test_require_type() -> None:
    ok = pack({"type": "x", "v": 1})
    assert unpack_payload(ok[4:], require_type=True) == {"type": "x", "v": 1}
    assert FrameDecoder(require_type=True).feed(ok) == [{"type": "x", "v": 1}]
    bad_msgs: list[dict[str, Any]] = [
        {},
        {"v": 1},
        {"type": 3},
        {"type": None},
        {"type": b"x"},
        {"type": ["x"]},
    ]
    for msg in bad_msgs:
        frame = pack(msg)
        assert unpack_payload(frame[4:]) == msg  # fine without require_type
        with pytest.raises(BadMessage, match="type"):
            unpack_payload(frame[4:], require_type=True)
        with pytest.raises(BadMessage, match="type"):
            FrameDecoder(require_type=True).feed(frame)
        with pytest.raises(BadMessage, match="type"):
            read_frame(io.BytesIO(frame), require_type=True)


@SETTINGS
@given(st.binary(max_size=200))
def test_fuzz_unpack_payload_only_raises_bad_message(payload: bytes) -> None:
    try:
        out = unpack_payload(payload)
    except BadMessage:
        return
    assert type(out) is dict
    assert all(type(k) is str for k in out)


@SETTINGS
@given(st.binary(max_size=300), st.integers(min_value=1, max_value=50))
def test_fuzz_decoder_only_raises_frame_error(data: bytes, step: int) -> None:
    dec = FrameDecoder(max_frame=1024)
    try:
        for i in range(0, len(data), step):
            for msg in dec.feed(data[i : i + step]):
                assert type(msg) is dict
    except FrameError:
        assert dec.broken


# ---------------------------------------------------------------- pack errors


class Unencodable:
    pass


@pytest.mark.parametrize(
    "msg",
    [
        [("type", "x")],
        "type",
        42,
        None,
    ],
    ids=["list-of-pairs", "str", "int", "none"],
)
def test_pack_rejects_non_mapping(msg: Any) -> None:
    with pytest.raises(BadMessage):
        pack(msg)


@pytest.mark.parametrize(
    "msg",
    [
        {"x": Unencodable()},
        {"x": 2**64},
        {"x": -(2**63) - 1},
        {"x": "\ud800"},
        {"x": {1, 2}},
        {1: "int key"},
        {b"type": "bytes key"},
        {"x": {"nested": {2: "int key"}}},
        {"x": [{(1, 2): "tuple key"}]},
        {"x": msgpack.ExtType(3, b"e")},
        {"x": [msgpack.Timestamp(0, 0)]},
    ],
    ids=[
        "object",
        "int-too-big",
        "int-too-small",
        "surrogate",
        "set",
        "int-key",
        "bytes-key",
        "nested-int-key",
        "tuple-key",
        "ext",
        "timestamp",
    ],
)
def test_pack_rejects_unencodable(msg: Any) -> None:
    with pytest.raises(BadMessage):
        pack(msg)
    # The cached packer must still work after a failure.
    assert unpack_payload(pack({"after": "error"})[4:]) == {"after": "error"}


def test_pack_rejects_cycles() -> None:
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    with pytest.raises(BadMessage):
        pack({"x": cyclic})
    assert pack({"a": 1})[4:] == msgpack.packb({"a": 1})


def test_pack_allows_nested_bytes_keys() -> None:
    msg = {"m": {b"raw": 1}}
    assert unpack_payload(pack(msg)[4:]) == msg


# ---------------------------------------------------------------- broken decoder


def test_decoder_broken_after_error() -> None:
    dec = FrameDecoder()
    good = pack({"type": "ok"})
    bad = raw_frame(msgpack.packb([1, 2]))
    with pytest.raises(BadMessage) as info:
        dec.feed(good + good + bad + good)
    # Messages decoded before the bad frame in the same call are kept.
    assert info.value.messages == [{"type": "ok"}, {"type": "ok"}]
    assert dec.broken
    assert not dec.at_boundary
    assert dec.buffered == 0
    for data in (good, b"", b"\x00"):
        with pytest.raises(FrameError, match="broken"):
            dec.feed(data)


def test_decoder_broken_after_too_large() -> None:
    dec = FrameDecoder(max_frame=10)
    with pytest.raises(FrameTooLarge):
        dec.feed(HEADER.pack(11))
    with pytest.raises(FrameError):
        dec.feed(pack({"a": 1}))


def test_error_hierarchy_and_pickling() -> None:
    assert issubclass(FrameError, ValueError)
    for cls in (FrameTooLarge, BadMessage, TruncatedFrame):
        assert issubclass(cls, FrameError)
    exc = FrameTooLarge("frame length 11 exceeds max_frame 10", size=11, limit=10)
    exc.messages = [{"a": 1}]
    copy = pickle.loads(pickle.dumps(exc))
    assert type(copy) is FrameTooLarge
    assert (copy.size, copy.limit, copy.messages, str(copy)) == (
        11,
        10,
        [{"a": 1}],
        str(exc),
    )
    bad = pickle.loads(pickle.dumps(BadMessage("nope")))
    assert type(bad) is BadMessage and str(bad) == "nope" and bad.messages == []


# ---------------------------------------------------------------- blocking helpers


def test_write_then_read_frames() -> None:
    buf = io.BytesIO()
    for m in FIXED_MESSAGES:
        write_frame(buf, m)
    assert buf.getvalue() == b"".join(pack(m) for m in FIXED_MESSAGES)
    buf.seek(0)
    got = []
    while (msg := read_frame(buf)) is not None:
        got.append(msg)
    assert got == FIXED_MESSAGES
    assert read_frame(buf) is None  # still clean EOF


def test_read_frame_clean_eof() -> None:
    assert read_frame(io.BytesIO(b"")) is None


@pytest.mark.parametrize("keep", [1, 3, 4, 5, 10])
def test_read_frame_truncated(keep: int) -> None:
    frame = pack({"type": "x", "payload": "0123456789"})
    assert len(frame) > 10
    with pytest.raises(TruncatedFrame, match="truncated"):
        read_frame(io.BytesIO(frame[:keep]))


def test_read_frame_second_frame_truncated() -> None:
    frame = pack({"type": "x"})
    stream = io.BytesIO(frame + frame[:-1])
    assert read_frame(stream) == {"type": "x"}
    with pytest.raises(FrameError):
        read_frame(stream)


def test_read_frame_too_large_without_body() -> None:
    stream = io.BytesIO(HEADER.pack(2000))  # no body at all
    with pytest.raises(FrameTooLarge):
        read_frame(stream, max_frame=1000)
    assert stream.tell() == 4


def test_read_frame_bad_payload() -> None:
    with pytest.raises(BadMessage):
        read_frame(io.BytesIO(raw_frame(msgpack.packb([1]))))


class Dribble(io.RawIOBase):
    """A raw stream that returns at most 3 bytes per read and accepts at most
    5 bytes per write, like a slow pipe."""

    def __init__(self, data: bytes = b"") -> None:
        self.data = bytearray(data)
        self.out = bytearray()
        self.flushes = 0

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        n = min(len(b), 3, len(self.data))
        b[:n] = self.data[:n]
        del self.data[:n]
        return n

    def write(self, b: Any) -> int:
        chunk = bytes(b)[:5]
        self.out += chunk
        return len(chunk)

    def flush(self) -> None:
        self.flushes += 1


def test_short_reads_and_writes() -> None:
    raw = Dribble()
    write_frame(raw, FIXED_MESSAGES[2])
    assert bytes(raw.out) == pack(FIXED_MESSAGES[2])
    assert raw.flushes >= 1
    reader = Dribble(bytes(raw.out) * 2)
    assert read_frame(reader) == FIXED_MESSAGES[2]
    assert read_frame(reader) == FIXED_MESSAGES[2]
    assert read_frame(reader) is None


def test_write_frame_errors_leave_stream_untouched() -> None:
    buf = io.BytesIO()
    with pytest.raises(FrameTooLarge):
        write_frame(buf, {"b": b"x" * 100}, max_frame=50)
    with pytest.raises(BadMessage):
        write_frame(buf, {"x": Unencodable()})
    assert buf.getvalue() == b""


# ---------------------------------------------------------------- volume


def test_many_small_frames_in_7_byte_chunks() -> None:
    count = 10_000
    stream = b"".join(pack({"type": "tick", "seq": i}) for i in range(count))
    dec = FrameDecoder(require_type=True)
    got: list[dict[str, Any]] = []
    started = time.perf_counter()
    for i in range(0, len(stream), 7):
        got.extend(dec.feed(stream[i : i + 7]))
    elapsed = time.perf_counter() - started
    assert len(got) == count
    assert [m["seq"] for m in got] == list(range(count))
    assert dec.at_boundary
    assert elapsed < 10, f"decoding took {elapsed:.2f}s"


def test_many_frames_in_one_feed_and_large_frame_in_small_chunks() -> None:
    count = 20_000
    stream = b"".join(pack({"seq": i}) for i in range(count))
    dec = FrameDecoder()
    got = dec.feed(stream + stream[:3])
    assert [m["seq"] for m in got] == list(range(count))
    assert dec.buffered == 3
    assert dec.feed(stream[3:])[-1] == {"seq": count - 1}

    big = {"type": "blob", "b": b"\xab" * (1 << 20)}
    frame = pack(big)
    dec = FrameDecoder()
    out: list[dict[str, Any]] = []
    for i in range(0, len(frame), 1024):
        out.extend(dec.feed(frame[i : i + 1024]))
    assert out == [big]
