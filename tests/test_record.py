"""Recordings of live read-only traffic: the splitter's bounded buffer (sampling, pages,
full buffer, abandonment) with an injected clock and seeded draws; the command's loop with
a fake control socket; then ``osup-mp traffic record`` against a tree under load."""

from __future__ import annotations

import io
import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from support import wait_for

from osup_mp.cli.record import record
from osup_mp.components import recording as rec
from osup_mp.components.recording import Recording


def _recording(share: float = 1.0, count: int = 10**6, seconds: float = 60.0) -> Recording:
    return Recording("r1", share, count, deadline=seconds, taken_at=0.0)


@pytest.mark.unit
def test_a_recording_keeps_its_share_of_what_the_main_draws() -> None:
    kept = []
    for seed in range(50):
        rng = random.Random(seed)
        r = _recording(share=0.1)
        for i in range(2000):  # copies drawn at 0.4 (a mirror wants 0.4): keep 1 in 4
            r.offer({"i": i}, 1.0, draw=0.4, roll=rng.random)
        kept.append(r.kept / 2000)
    assert abs(sum(kept) / len(kept) - 0.25) < 0.01
    assert all(0.20 < k < 0.30 for k in kept)


@pytest.mark.unit
def test_it_stops_at_its_count_and_at_its_deadline() -> None:
    r = _recording(count=5, seconds=10.0)
    for i in range(8):
        r.offer(i, 1.0, draw=1.0)
    assert r.kept == 5 and not r.active(1.0)
    late = _recording(seconds=10.0)
    late.offer("early", 9.9, draw=1.0)
    late.offer("late", 10.0, draw=1.0)
    assert late.kept == 1 and not late.active(10.0)
    page, more = late.take(10.0)
    assert (page, more) == (["early"], False) and late.finished(10.0)


@pytest.mark.unit
def test_takes_are_pages_oldest_first_and_a_full_buffer_drops_and_counts() -> None:
    r = _recording()
    big = "x" * (100 << 10)  # 100 KiB: 5 to a page, 41 to the buffer
    for i in range(50):
        r.offer({"i": i, "pad": big}, 1.0, draw=1.0)
    assert r.kept == rec.BUFFER_BYTES // (100 << 10) and r.dropped == 50 - r.kept
    taken: list[int] = []
    more = True
    while more:
        page, more = r.take(2.0)
        assert 0 < len(page) <= rec.PAGE_BYTES // (100 << 10)
        taken += [p["i"] for p in page]
    assert taken == list(range(r.kept)) and r.buffered == 0
    r.offer("x" * (rec.PAGE_BYTES + 1), 2.0, draw=1.0)
    assert r.too_large == 1 and r.figures(2.0)["too_large"] == 1


@pytest.mark.unit
def test_a_recording_nobody_takes_from_is_abandoned() -> None:
    r = _recording(seconds=1000.0)
    assert not r.abandoned(rec.ABANDONED)
    assert r.abandoned(rec.ABANDONED + 0.1)
    r.take(20.0)
    assert not r.abandoned(20.0 + rec.ABANDONED)


class FakeSplitter:
    """A control socket that records: ``per_take`` requests appear before each take; the
    take that follows ``fail_after`` raises (the splitter went away)."""

    def __init__(self, total: int, per_take: int, fail_after: int | None = None) -> None:
        self.total, self.per_take, self.fail_after = total, per_take, fail_after
        self.made = self.takes = 0
        self.stopped = False

    def request(self, command: str, /, **args: Any) -> Any:
        if command == "traffic_record":
            assert args == {"share": 0.5, "count": self.total, "seconds": 9.0}
            return {"id": "r1"}
        assert command == "traffic_take" and args["id"] == "r1"
        self.takes += 1
        if self.fail_after is not None and self.takes > self.fail_after:
            raise ConnectionError("splitter gone")
        self.stopped = self.stopped or args["stop"]
        fresh = 0 if self.stopped else min(self.per_take, self.total - self.made)
        page = [{"op": "memory_search", "n": self.made + i} for i in range(fresh)]
        self.made += fresh
        active = not self.stopped and self.made < self.total
        return {"requests": page, "more": False, "active": active, "offered": self.made}


@pytest.mark.unit
def test_the_command_writes_every_request_taken_once_in_order() -> None:
    out, waits = io.StringIO(), []
    splitter = FakeSplitter(total=25, per_take=4)
    report = record(splitter, out, share=0.5, count=25, seconds=9.0, wait=waits.append)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["n"] for line in lines] == list(range(25))
    assert report.written == 25 and report.error is None and not report.interrupted
    assert len(waits) == splitter.takes - 1  # waits between takes, not after the last


@pytest.mark.unit
def test_ctrl_c_stops_and_keeps_what_was_recorded_and_a_lost_splitter_too() -> None:
    splitter, out = FakeSplitter(total=100, per_take=3), io.StringIO()
    waits = 0

    def interrupt_third(_: float) -> None:
        nonlocal waits
        waits += 1
        if waits == 3:
            raise KeyboardInterrupt

    report = record(splitter, out, share=0.5, count=100, seconds=9.0, wait=interrupt_third)
    assert report.interrupted and splitter.stopped and report.written == 9
    assert len(out.getvalue().splitlines()) == 9
    lost, out = FakeSplitter(total=100, per_take=3, fail_after=2), io.StringIO()
    report = record(lost, out, share=0.5, count=100, seconds=9.0, wait=lambda _: None,
                    lost=(ConnectionError,))  # fmt: skip
    assert report.written == 6 and report.error == "splitter gone"
    assert len(out.getvalue().splitlines()) == 6


def test_traffic_record_keeps_live_reads_only(make_tree, tmp_path: Path) -> None:
    tree = make_tree().start()
    out = tmp_path / "live.jsonl"
    cmd = [sys.executable, "-m", "osup_mp", "--config", str(tree.config_path), "traffic",
           "record", "--out", str(out), "--count", "40", "--share", "0.5", "--json"]  # fmt: skip
    recorder = subprocess.Popen(cmd, env=tree.env, stdout=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: tree.agents()["main"]["mirror_ratio"] == 0.5, what="the recording")
        with tree.data_client() as client:
            i = 0
            while recorder.poll() is None and i < 5000:
                client.request("request", data={"op": "memory_add", "id": f"w{i}", "text": "t"})
                client.request("request", data={"op": "memory_search", "query": f"q{i}", "k": 2})
                i += 1
        report = json.loads(recorder.communicate(timeout=30)[0])
    finally:
        if recorder.poll() is None:
            recorder.kill()
            recorder.wait()
    assert recorder.returncode == 0 and report["written"] == 40 and report["dropped"] == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 40 and {line["op"] for line in lines} == {"memory_search"}
    assert len({line["query"] for line in lines}) == 40  # each drawn once
    assert not (tmp_path / "live.jsonl.part").exists()
    wait_for(lambda: tree.agents()["main"]["mirror_ratio"] == 0.0, what="copies to stop")
    replayed = tree.cli("traffic", "--file", str(out), "--json")
    assert replayed.returncode == 0 and json.loads(replayed.stdout)["ok"] == 40
    stale = tree.request("mirror_status")
    assert stale == []
    unknown = tree.cli("traffic", "record", "--out", str(out), "--share", "2")
    assert unknown.returncode == 2 and "--share" in unknown.stderr
    both = tree.cli("traffic", "--file", str(out), "record", "--out", str(out))
    assert both.returncode == 2 and "not an option of record" in both.stderr


def test_recording_from_an_agent_without_read_only_operations_is_refused(make_tree) -> None:
    minimal = Path(__file__).resolve().parent / "support" / "agents" / "minimal_agent.py"
    agent = {"gerbil_executable": sys.executable, "gerbil_main_script": str(minimal)}
    tree = make_tree(o_supervisor=agent).start()
    assert tree.agents()["main"]["read_only"] == []
    done = tree.cli("traffic", "record", "--out", "never.jsonl", "--seconds", "30")
    assert done.returncode == 1 and "declares no read-only operation" in done.stderr
    assert tree.agents()["main"]["mirror_ratio"] == 0.0  # no recording was started


def test_a_splitter_restart_ends_the_recording_and_keeps_what_was_taken(
    make_tree, tmp_path: Path
) -> None:
    tree = make_tree().start()
    out = tmp_path / "live.jsonl"
    cmd = [sys.executable, "-m", "osup_mp", "--config", str(tree.config_path), "traffic",
           "record", "--out", str(out), "--count", "100000", "--share", "1"]  # fmt: skip
    recorder = subprocess.Popen(cmd, env=tree.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)  # fmt: skip
    try:
        wait_for(lambda: tree.agents()["main"]["mirror_ratio"] == 1.0, what="the recording")
        with tree.data_client() as client:
            for i in range(30):
                client.request("request", data={"op": "memory_search", "query": f"q{i}", "k": 1})
        wait_for(lambda: out.with_name("live.jsonl.part").stat().st_size > 0, what="a take")
        assert tree.cli("restart", "splitter").returncode == 0
        stderr = recorder.communicate(timeout=30)[1]
    finally:
        if recorder.poll() is None:
            recorder.kill()
            recorder.communicate()
    assert recorder.returncode == 1 and "the recording was lost" in stderr, stderr
    kept = [json.loads(line) for line in out.read_text().splitlines()]
    assert 0 < len(kept) <= 30 and f"{len(kept)} requests written" in stderr
    assert all(line["op"] == "memory_search" for line in kept)
