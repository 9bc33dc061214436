"""The shared-memory segment: layout, attach, seqlock, stale/foreign segments, inspection.

Every test works on a real POSIX segment named ``/osup_test_<tag>`` and unlinks it in the
``segment`` fixture (the autouse leak check would fail the test otherwise). Other processes
are real ones (``subprocess`` running ``python -c``) started with ``OSUP_TEST_TAG`` in their
environment — not ``multiprocessing`` fork children: ``/proc/PID/environ`` of a forked child
is the parent's exec-time environment, so the leak check could never see the tag in them.
"""

from __future__ import annotations

import json
import mmap
import os
import stat
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import posix_ipc
import pytest
from support import Tree, wait_for, write_config

from osup_mp.storage.shm.segment import (
    BUFFER_HEADER_SIZE,
    HEADER_SIZE,
    LAYOUT_VERSION,
    MAGIC,
    SLOT_COUNT,
    SLOT_SIZE,
    STATE_HEADER_SIZE,
    Role,
    SharedState,
    ShmError,
    SlotState,
    monotonic_ns,
    shm_path,
)
from osup_mp.storage.shm.view import describe

ROOT = Path(__file__).resolve().parent.parent
SHM_DUMP = ROOT / "tools" / "shm_dump.py"
SIZE = 1 << 20


@pytest.fixture
def segment(tag: str) -> Iterator[str]:
    """A unique segment name, unlinked whatever the test did with it."""
    name = f"/osup_test_{tag}"
    yield name
    try:
        posix_ipc.unlink_shared_memory(name)
    except posix_ipc.ExistentialError:
        pass


def tagged_env(tag: str) -> dict[str, str]:
    return dict(os.environ, OSUP_TEST_TAG=tag)


def python(tag: str, code: str, *args: str, timeout: float = 30) -> str:
    out = subprocess.run(
        [sys.executable, "-c", code, *args],
        env=tagged_env(tag),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def shm_dump(tag: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SHM_DUMP), *args],
        env=tagged_env(tag),
        capture_output=True,
        text=True,
        timeout=30,
    )


def close_keep(shm: SharedState) -> None:
    """Unmap without unlinking (the test goes on with the segment)."""
    shm.owner = False
    shm.close()


def dead_pid(tag: str) -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"], env=tagged_env(tag))
    proc.wait()  # reaped: the pid names no process (until reused, which takes a while)
    return proc.pid


def segment_bytes(name: str) -> bytes:
    return Path(shm_path(name)).read_bytes()


# -- layout, attach, slots -------------------------------------------------------------------


def test_create_writes_header_and_is_owner_only(segment: str) -> None:
    shm, note = SharedState.create(segment, SIZE)
    try:
        assert note is None
        h = shm.header
        assert bytes(h["magic"]) == MAGIC
        assert int(h["version"]) == LAYOUT_VERSION
        assert int(h["header_size"]) == HEADER_SIZE
        assert int(h["total_size"]) == SIZE == shm.size
        assert int(h["creator_pid"]) == os.getpid()
        assert int(h["slot_count"]) == SLOT_COUNT and int(h["slot_size"]) == SLOT_SIZE
        assert int(h["slots_offset"]) == HEADER_SIZE
        assert int(h["state_offset"]) == HEADER_SIZE + SLOT_COUNT * SLOT_SIZE
        assert int(h["state_offset"]) + int(h["state_size"]) == SIZE
        assert abs(int(h["created_ns"]) - time.time_ns()) < 60e9
        assert shm.epoch == int(h["epoch"]) != 0
        assert shm.buffer_size % 64 == 0
        assert 2 * shm.buffer_size <= int(h["state_size"]) - STATE_HEADER_SIZE
        assert shm.capacity == shm.buffer_size - BUFFER_HEADER_SIZE
        assert shm.seq == 0 and not shm.slots["in_use"].any()
        st = os.stat(shm_path(segment))
        assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_size == SIZE
        with pytest.raises(ShmError, match="too small"):
            SharedState.create(segment + "_small", 4096)
        assert not os.path.exists(shm_path(segment + "_small"))
    finally:
        shm.close()
    assert not os.path.exists(shm_path(segment)), "the owner unlinks on close"


ATTACH_CHILD = """
import json, sys
from osup_mp.storage.shm.segment import Role, SharedState
from osup_mp.storage.shm.view import describe
shm = SharedState.attach(sys.argv[1])
shm.claim_slot(5, Role.SHADOW, "shadow-1")
shm.slot(5)["pid"] = 4242
print(json.dumps({"epoch": shm.epoch, "slots": describe(shm)["slots"]}))
shm.close()
"""


def test_attach_from_another_process_and_slot_round_trip(segment: str, tag: str) -> None:
    shm, _ = SharedState.create(segment, SIZE)
    try:
        shm.claim_slot(3, Role.MAIN, "main")
        shm.slot(3)["state"] = int(SlotState.RUNNING)
        shm.slot(3)["hb_agent_ns"] = monotonic_ns()
        seen = json.loads(python(tag, ATTACH_CHILD, segment))
        assert seen["epoch"] == shm.epoch
        by_slot = {s["slot"]: s for s in seen["slots"]}
        assert by_slot[3]["role"] == "main" and by_slot[3]["state"] == "RUNNING"
        assert by_slot[3]["id"] == "main" and by_slot[3]["heartbeat_age_ms"] is not None
        assert by_slot[5]["role"] == "shadow" and by_slot[5]["state"] == "STARTING"
        # What the child wrote is visible here, and a release round-trips.
        assert bool(shm.slot(5)["in_use"]) and int(shm.slot(5)["pid"]) == 4242
        assert bytes(shm.slot(5)["instance_id"]) == b"shadow-1"
        shm.release_slot(5)
        assert not shm.slot(5)["in_use"] and int(shm.slot(5)["pid"]) == 0
        assert int(shm.slot(5)["state"]) == SlotState.FREE
        assert [s["slot"] for s in describe(shm)["slots"]] == [3]
        # A re-claim starts from zeroed counters.
        shm.slot(3)["requests"] = 17
        shm.claim_slot(3, Role.SHADOW, "x" * 40)
        assert int(shm.slot(3)["requests"]) == 0 and bytes(shm.slot(3)["instance_id"]) == b"x" * 32
    finally:
        shm.close()


# -- state region ----------------------------------------------------------------------------


def test_publish_read_round_trip_with_crc(segment: str) -> None:
    shm, _ = SharedState.create(segment, SIZE)
    reader = SharedState.attach(segment, writable=False)
    try:
        empty = reader.read(verify=True)
        assert empty.version == 0 and empty.matrix.shape == (0, 0) and empty.crc_ok is True
        rng = np.random.default_rng(7)
        for expected_version, shape in enumerate([(4, 8), (1, 1), (33, 17), (4, 8)], start=1):
            m = rng.standard_normal(shape).astype(np.float32)
            assert shm.publish(m) == expected_version
            got = reader.read(verify=True)
            assert got.version == expected_version and got.crc_ok is True
            assert got.matrix.dtype == np.float32 and np.array_equal(got.matrix, m)
            assert got.matrix.flags.writeable, "copy=True returns a private copy"
            assert reader.read().crc_ok is None, "crc only checked when asked"
        # float64 input is stored as float32; 1-D input is refused.
        shm.publish(np.arange(6, dtype=np.float64).reshape(2, 3))
        assert reader.read().matrix.tolist() == [[0, 1, 2], [3, 4, 5]]
        with pytest.raises(ValueError, match="2-D"):
            shm.publish(np.zeros(5))
        # Corrupt one payload byte of the active buffer: verify catches it.
        active = int(shm.state["active"])
        at = shm._buffers_offset + active * shm.buffer_size + BUFFER_HEADER_SIZE
        shm._mm[at] ^= 0xFF
        assert reader.read(verify=True).crc_ok is False
        shm.publish(np.zeros((2, 2)), checksum=False)
        assert int(shm._buffer(int(shm.state["active"]))[0]["crc32"]) == 0
    finally:
        reader.close()
        shm.close()


def test_an_append_only_state_publishes_what_it_added(
    segment: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``unchanged_rows``: each buffer is topped up with the rows it lacks, and its checksum
    extended; what readers see is exactly the newest matrix, CRC and all."""
    shm, _ = SharedState.create(segment, SIZE)
    reader = SharedState.attach(segment, writable=False)
    try:
        rng = np.random.default_rng(3)
        state = rng.standard_normal((10, 8)).astype(np.float32)
        shm.publish(state)
        copied: list[int] = []
        real_crc = zlib.crc32
        monkeypatch.setattr(
            "osup_mp.storage.shm.segment.zlib.crc32",
            # Only the publish extends a checksum (reads check theirs in one call).
            lambda data, *start: (
                (start and copied.append(memoryview(data).nbytes)) or real_crc(data, *start)
            ),
        )
        for added in (5, 1, 7, 0, 3):
            published = len(state)
            state = np.vstack([state, rng.standard_normal((added, 8)).astype(np.float32)])
            shm.publish(state, unchanged_rows=published)
            got = reader.read(verify=True)
            assert got.crc_ok is True and np.array_equal(got.matrix, state)
        # The first incremental publish fills the buffer this writer never wrote (15 rows);
        # from then on each one copies and checksums only the rows its target buffer lacks:
        # those of the last two publishes (6, 1 + 7, 7 + 0, 0 + 3 rows of 32 bytes).
        assert copied == [15 * 32, 6 * 32, 8 * 32, 7 * 32, 3 * 32]
        # A changed prefix (a block replaced): a full publish, still exact.
        state = state.copy()
        state[0] = 0
        shm.publish(state, unchanged_rows=0)
        assert np.array_equal(reader.read(verify=True).matrix, state)
        shm.publish(state[:4], unchanged_rows=4)  # fewer rows: what is kept still checks out
        got = reader.read(verify=True)
        assert got.crc_ok is True and np.array_equal(got.matrix, state[:4])
    finally:
        reader.close()
        shm.close()


def test_zero_copy_read_is_a_view_of_the_mapping(segment: str) -> None:
    shm, _ = SharedState.create(segment, SIZE)
    try:
        shm.publish(np.full((3, 5), 1.0))
        got = shm.read(copy=False, verify=True)
        assert got.crc_ok is True and not got.matrix.flags.owndata
        base: object = got.matrix
        while isinstance(base, np.ndarray):
            base = base.base
        assert isinstance(base, memoryview) and base.obj is shm._mm, "a view, not a copy"
        assert shm.still_valid(got.seq)
        shm.publish(np.full((3, 5), 2.0))  # into the other buffer: the view stays intact
        assert shm.still_valid(got.seq) and (got.matrix == 1.0).all()
        shm.publish(np.full((3, 5), 3.0))  # overwrites the buffer the view points into
        assert not shm.still_valid(got.seq)
        assert (got.matrix == 3.0).all(), "the view shows the new content: it is live memory"
        del got, base
    finally:
        shm.close()


def test_state_that_does_not_fit_writes_nothing(segment: str) -> None:
    shm, _ = SharedState.create(segment, SIZE)
    try:
        floats = shm.capacity // 4
        shm.publish(np.full((1, 10), 5.0))
        state_at = int(shm.header["state_offset"])
        before = bytes(shm._mm[state_at:])
        seq = shm.seq
        for too_big in ((1, floats + 1), (floats // 2 + 1, 2), (2 * floats, 1)):
            with pytest.raises(ValueError, match="does not fit"):
                shm.publish(np.ones(too_big, np.float32))
        assert shm.seq == seq
        assert bytes(shm._mm[state_at:]) == before
        assert os.stat(shm_path(segment)).st_size == SIZE
        got = shm.read(verify=True)
        assert got.version == 1 and got.crc_ok and (got.matrix == 5.0).all()
        # Exactly the capacity fits, in either buffer, without touching past the end.
        for value in (6.0, 7.0):
            version = shm.publish(np.full((1, floats), value))
            got = shm.read(verify=True)
            assert got.version == version and got.crc_ok and (got.matrix == value).all()
    finally:
        shm.close()


def test_read_only_attach_never_writes(segment: str) -> None:
    shm, _ = SharedState.create(segment, SIZE)
    try:
        shm.claim_slot(0, Role.MAIN, "main")
        shm.publish(np.ones((2, 2)))
        before = segment_bytes(segment)
        ro = SharedState.attach(segment, writable=False)
        assert not ro.slots.flags.writeable
        with pytest.raises((ValueError, TypeError)):
            ro.slots[0]["pid"] = 1
        with pytest.raises((ValueError, TypeError)):
            ro.claim_slot(1, Role.SHADOW, "x")
        with pytest.raises((ValueError, TypeError)):
            ro.publish(np.ones((2, 2)))
        describe(ro)
        ro.read(verify=True)
        ro.read(copy=False)
        ro.close()
        assert ro._mm.closed, "nothing kept a view of the mapping"
        assert segment_bytes(segment) == before
        assert os.path.exists(shm_path(segment)), "a non-owner never unlinks"
    finally:
        shm.close()


STRESS_WORKER = """
import json, sys, time
import numpy as np
from osup_mp.storage.shm.segment import SharedState, ShmError

SHAPES = [(1, 1), (7, 13), (64, 100), (200, 1), (256, 1000), (3, 1000), (256, 5), (17, 64)]


def expected_shape(version):
    return SHAPES[version % len(SHAPES)]


def writer(name, seconds):
    shm = SharedState.attach(name)
    version, publishes = shm.read().version, 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        nxt = version + 1
        version = shm.publish(np.full(expected_shape(nxt), nxt % 1000, np.float32))
        assert version == nxt, (version, nxt)
        publishes += 1
    shm.close()
    print(json.dumps({"publishes": publishes, "last_version": version}))


def reader(name):
    shm = SharedState.attach(name, writable=False)
    counts = {"reads": 0, "overlapped": 0, "torn": 0, "exhausted": 0, "errors": 0, "versions": 0}
    last, n, got, m = -1, 0, None, None
    print("ready", flush=True)
    while True:
        n += 1
        if n % 32 == 0 and shm.slots[0]["requests"]:  # the test's stop flag
            break
        try:
            got = shm.read(verify=True)
        except ShmError:  # the writer kept it busy for all of read()'s retries
            counts["exhausted"] += 1
            continue
        except Exception as exc:
            counts["errors"] += 1
            counts["last_error"] = repr(exc)
            continue
        counts["reads"] += 1
        counts["overlapped"] += shm.seq != got.seq  # a publish ran during (or right after) it
        m = got.matrix
        if not (
            got.crc_ok is True
            and m.shape == expected_shape(got.version)
            and bool((m == got.version % 1000).all())
        ):
            counts["torn"] += 1
            counts["torn_example"] = [got.version, list(m.shape), got.crc_ok]
        if got.version != last:
            counts["versions"] += 1
            last = got.version
    del got, m
    shm.close()
    print(json.dumps(counts))


if sys.argv[1] == "writer":
    writer(sys.argv[2], float(sys.argv[3]))
else:
    reader(sys.argv[2])
"""


def test_seqlock_stress_no_torn_reads(segment: str, tag: str) -> None:
    """One writer publishing as fast as it can for ~2 s, two verifying readers: no torn read.

    Shapes vary so a read mixing two publishes would show (wrong shape, wrong fill, bad
    crc). Every rows x dim mix fits in the region: a torn *header* then cannot make read()
    raise (see test_lapped_read_of_a_torn_header_retries).
    """
    shm, _ = SharedState.create(segment, 4 << 20)
    procs: list[subprocess.Popen[str]] = []

    def spawn(*args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-c", STRESS_WORKER, *args],
            env=tagged_env(tag),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        return proc

    try:
        assert shm.capacity >= 256 * 1000 * 4
        shm.publish(np.full((7, 13), 1, np.float32))  # version 1, as the workers expect
        readers = [spawn("reader", segment) for _ in range(2)]
        for r in readers:
            assert r.stdout is not None
            assert r.stdout.readline().strip() == "ready", r.communicate(timeout=10)[1]
        writer = spawn("writer", segment, "2.0")
        w_out, w_err = writer.communicate(timeout=30)
        assert writer.returncode == 0, w_err
        wrote = json.loads(w_out)
        shm.slots[0]["requests"] = 1  # stop the readers
        counts = []
        for r in readers:
            out, err = r.communicate(timeout=30)
            assert r.returncode == 0, err
            counts.append(json.loads(out))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        shm.close()
    print(f"\nseqlock stress: writer {wrote}; readers {counts}")
    assert wrote["publishes"] > 100
    for c in counts:
        assert c["reads"] > 0, c
        assert c["torn"] == 0, c
        assert c["errors"] == 0, c
        assert c["versions"] > 1, c


def test_lapped_read_of_a_torn_header_retries(segment: str) -> None:
    """Deterministic replay of a race the stress test can hit with unlucky shapes.

    Between the reader's load of ``seq`` and its loads of ``rows``/``dim``, the writer
    completes one publish (into the other buffer) and starts the next (into the buffer the
    reader is about to read), having written ``rows`` but not yet ``dim``. ``read()`` must
    notice that ``seq`` moved and retry; it must not raise anything but ShmError.
    """
    shm, _ = SharedState.create(segment, SIZE)
    reader = SharedState.attach(segment, writable=False)
    real_buffer = reader._buffer
    fired = False

    def lapped(index: int) -> tuple[np.void, int]:
        nonlocal fired
        found = real_buffer(index)
        if not fired:
            fired = True
            shm.publish(np.zeros((3, 2)))  # publish 1 completes
            shm.state["seq"] += 1  # publish 2 starts, into `index`...
            shm._buffer(index)[0]["rows"] = 1_000_000  # ...rows written, dim not yet
        return found

    try:
        shm.publish(np.ones((2, 3)))
        reader._buffer = lapped  # type: ignore[method-assign]
        with pytest.raises(ShmError):
            reader.read(patience=0.05)
    finally:
        del reader._buffer
        reader.close()
        shm.close()


# -- stale, live, foreign, wrong-version segments --------------------------------------------


def test_stale_segment_is_rebuilt(segment: str, tag: str) -> None:
    old, _ = SharedState.create(segment, SIZE)
    old_epoch = old.epoch
    old.header["creator_pid"] = dead_pid(tag)
    old.publish(np.ones((2, 2)))
    close_keep(old)
    shm, note = SharedState.create(segment, SIZE)
    try:
        assert note is not None and "rebuilt stale" in note, note
        assert shm.epoch != old_epoch
        assert int(shm.header["creator_pid"]) == os.getpid()
        assert shm.seq == 0 and shm.read().version == 0, "a fresh segment, not the old content"
    finally:
        shm.close()


def test_live_segment_in_use_is_refused(segment: str, tag: str) -> None:
    sleeper = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], env=tagged_env(tag)
    )
    try:
        shm, _ = SharedState.create(segment, SIZE)
        epoch = shm.epoch
        shm.header["creator_pid"] = sleeper.pid
        close_keep(shm)
        with pytest.raises(ShmError, match="in use") as info:
            SharedState.create(segment, SIZE)
        assert str(sleeper.pid) in str(info.value)
        still = SharedState.attach(segment, writable=False)
        assert still.epoch == epoch, "the live segment was left alone"
        still.close()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_foreign_segment_is_refused(segment: str) -> None:
    raw = posix_ipc.SharedMemory(segment, posix_ipc.O_CREX, mode=0o600, size=SIZE)
    with mmap.mmap(raw.fd, SIZE) as mm:
        mm[:] = np.random.default_rng(1).integers(0, 256, SIZE, np.uint8).tobytes()
    raw.close_fd()
    before = segment_bytes(segment)
    with pytest.raises(ShmError, match="not an osup-mp segment"):
        SharedState.create(segment, SIZE)
    with pytest.raises(ShmError, match="not an osup-mp segment"):
        SharedState.attach(segment)
    assert segment_bytes(segment) == before, "a foreign segment is never touched"


def test_tiny_foreign_segment_is_refused(segment: str) -> None:
    raw = posix_ipc.SharedMemory(segment, posix_ipc.O_CREX, mode=0o600, size=16)
    raw.close_fd()
    with pytest.raises(ShmError, match="not an osup-mp segment"):
        SharedState.create(segment, SIZE)
    with pytest.raises(ShmError, match="not an osup-mp segment"):
        SharedState.attach(segment)


def test_wrong_layout_version_is_refused(segment: str) -> None:
    shm, _ = SharedState.create(segment, SIZE)
    shm.header["version"] = LAYOUT_VERSION + 1
    close_keep(shm)
    with pytest.raises(ShmError, match="layout version"):
        SharedState.create(segment, SIZE)
    with pytest.raises(ShmError, match="layout version"):
        SharedState.attach(segment, writable=False)
    assert os.path.exists(shm_path(segment))


# -- inspection: osup-mp inspect shm and tools/shm_dump.py -----------------------------------


def test_inspect_errors_are_one_line(segment: str, tag: str, tmp_path: Path) -> None:
    tree = Tree(write_config(tmp_path, tag), tag)  # not started: only its config is used
    assert tree.cfg.o_supervisor.shared_memory_name == segment

    out = tree.cli("inspect", "shm")
    assert out.returncode == 3
    assert out.stderr == f"osup-mp: no shared memory named {segment} (is the tree running?)\n"
    dump = shm_dump(tag, segment)
    assert dump.returncode == 3 and dump.stderr.count("\n") == 1, dump.stderr
    assert "no shared memory named" in dump.stderr

    raw = posix_ipc.SharedMemory(segment, posix_ipc.O_CREX, mode=0o600, size=SIZE)
    raw.close_fd()
    for result in (tree.cli("inspect", "shm", "--json"), shm_dump(tag, shm_path(segment))):
        assert result.returncode == 1, result
        assert "not an osup-mp segment" in result.stderr and "Traceback" not in result.stderr
        assert result.stderr.count("\n") == 1 and result.stdout == ""
    posix_ipc.unlink_shared_memory(segment)

    shm, _ = SharedState.create(segment, SIZE)
    try:
        shm.claim_slot(2, Role.MAIN, "main")
        shm.slot(2)["role"] = 9  # a byte no Role has
        out = tree.cli("inspect", "shm", "--json")
        assert out.returncode == 0, out.stderr  # shown as raw, not a crash
        assert json.loads(out.stdout)["slots"][0]["role"] == "unknown(9)"
        assert tree.cli("inspect", "shm", "--interval", "1").returncode == 2
    finally:
        shm.close()


STABLE_SLOT_FIELDS = ("slot", "role", "id", "pid", "state", "generation", "restarts")


def _main_running(tree: Tree) -> dict[str, object] | None:
    out = tree.cli("inspect", "shm", "--json")
    assert out.returncode == 0, out.stderr
    desc = json.loads(out.stdout)
    slots = {s["slot"]: s for s in desc["slots"]}
    main = slots.get(0)
    if main and main["state"] == "RUNNING" and main["heartbeat_age_ms"] is not None:
        return desc  # type: ignore[no-any-return]
    return None


def test_inspect_shm_on_a_running_tree_then_a_leftover(
    make_tree: Callable[..., Tree], tag: str
) -> None:
    tree = make_tree().start()
    name = tree.cfg.o_supervisor.shared_memory_name
    assert tree.proc is not None
    desc = wait_for(lambda: _main_running(tree), 20, interval=0.2, what="main agent RUNNING")
    main = desc["slots"][0]
    assert main["role"] == "main" and main["id"] == "main" and main["pid"] > 0
    assert main["heartbeat_age_ms"] < tree.cfg.o_supervisor.heartbeat_timeout
    header = desc["header"]
    assert header["magic"] == MAGIC.decode() and header["version"] == LAYOUT_VERSION
    assert header["creator_pid"] == tree.proc.pid and header["creator_alive"] is True
    assert desc["name"] == name and set(desc["state"]) >= {"seq", "active", "buffers"}

    dump = shm_dump(tag, name, "--json")
    assert dump.returncode == 0, dump.stderr
    dumped = json.loads(dump.stdout)
    assert dumped["header"]["epoch"] == header["epoch"]
    assert [{k: s[k] for k in STABLE_SLOT_FIELDS} for s in dumped["slots"]] == [
        {k: s[k] for k in STABLE_SLOT_FIELDS} for s in desc["slots"]
    ]

    text = tree.cli("inspect", "shm")
    assert text.returncode == 0, text.stderr
    for word in ("OSUPSHM1", "alive", "RUNNING", "main", "HB AGE", "state region", "capacity"):
        assert word in text.stdout, (word, text.stdout)
    plain = shm_dump(tag, name, "--plain")
    assert plain.returncode == 0 and "RUNNING" in plain.stdout and "alive" in plain.stdout

    tree.proc.kill()  # SIGKILL: the segment stays behind
    tree.proc.wait(10)
    try:
        assert os.path.exists(shm_path(name))
        left = shm_dump(tag, shm_path(name), "--json")
        assert left.returncode == 0, left.stderr
        leftover = json.loads(left.stdout)
        assert leftover["header"]["creator_alive"] is False
        assert leftover["header"]["epoch"] == header["epoch"]
        # The managers die with the tree (pdeathsig) and may release their slots on the way.
        assert {s["slot"] for s in leftover["slots"]} <= {s["slot"] for s in desc["slots"]}
        plain = shm_dump(tag, name, "--plain")
        assert "dead" in plain.stdout and "leftover" in plain.stdout
    finally:
        try:
            posix_ipc.unlink_shared_memory(name)
        except posix_ipc.ExistentialError:
            pass
