"""The arbiter's pure parts: the experiment's checked states and record, the history on disk
(bounded, surviving restarts and torn lines), and the agent manager's record of the code
hot-loaded into its agent."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from loguru import logger

from osup_mp.components.agent.code import CodeBook
from osup_mp.components.arbiter.experiment import Experiment, ExpState, Outcome
from osup_mp.components.arbiter.history import History
from osup_mp.evolution import Sample, decide
from osup_mp.runtime.calls import CallError

pytestmark = pytest.mark.unit

RECORD_KEYS = {"id", "state", "verdict", "rule", "reason", "metrics", "mismatches", "target"}


def _experiment(number: int = 1) -> Experiment:
    return Experiment(f"e{number}", "memory_system", "X = 1\n", 0.1, 60.0, reason="faster")


def test_experiment_moves_only_along_its_transitions() -> None:
    exp = _experiment()
    with pytest.raises(RuntimeError, match="starting -> running is not a transition"):
        exp.move(ExpState.RUNNING)
    exp.move(ExpState.LOADING)
    with pytest.raises(RuntimeError, match="loading -> running is not a transition"):
        exp.move(ExpState.RUNNING)  # not before the pair's own difference is measured
    for state in (ExpState.CALIBRATING, ExpState.SWITCHING, ExpState.RUNNING):
        exp.move(state)
    for state in (ExpState.PROMOTING, ExpState.WATCHING):
        exp.move(state)
    exp.move(ExpState.DECIDED)
    with pytest.raises(RuntimeError):
        exp.move(ExpState.RUNNING)


def test_record_carries_the_documented_schema_and_the_evidence() -> None:
    exp = _experiment()
    for i in range(40):
        exp.evidence.add(Sample("candidate", 1.0 + i % 3, False, "match"))
        exp.evidence.add(Sample("control", 2.0 + i % 3, False, "match"))
    verdict = decide(exp.evidence, exp.settings, final=True)
    exp.decide(Outcome.INCONCLUSIVE, "stopped", "stopped by the operator", verdict)
    record = exp.record()
    assert record.keys() >= RECORD_KEYS and "code" not in record
    assert record["calibration"] == {"looks": 0, "own_difference": None}
    assert record["verdict"] == "inconclusive" and record["rule"] == "stopped"
    names = {m["name"] for m in record["metrics"]}
    assert names == {"latency_ms", "error_rate", "throughput", "memory_mb"}
    assert record["samples"]["candidate"]["n"] == 40
    assert record["arms"] == {"candidate": "e1-cand", "control": "e1-cont"}
    json.dumps(exp.record(code=True))  # JSON as it is, code included
    # A later decision keeps the evidence it was given first.
    exp.decide(Outcome.ROLLED_BACK, "rollback", "the main crashed")
    assert exp.record()["metrics"] == record["metrics"]


def _record(number: int, verdict: str = "rejected") -> dict[str, Any]:
    return {"id": f"e{number}", "state": "decided", "verdict": verdict, "target": "m"}


def test_history_survives_a_restart_keeps_the_newest_and_compacts(tmp_path: Path) -> None:
    history = History(tmp_path / "evolution", size=100)
    history.load()
    for n in range(1, 251):
        history.add(_record(n))
    history.add(_record(250, "rolled_back"))  # a later line for the same id replaces it
    lines = (tmp_path / "evolution" / "history.jsonl").read_text().splitlines()
    assert len(lines) < 200  # compacted at twice the size

    again = History(tmp_path / "evolution", size=100)
    again.load()
    newest = again.newest(1000)
    assert len(newest) == 100
    assert newest[0] == _record(250, "rolled_back") and newest[-1]["id"] == "e151"


def test_history_skips_a_torn_line_with_a_warning(tmp_path: Path) -> None:
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m)), level="WARNING", format="{message}")
    directory = tmp_path / "evolution"
    directory.mkdir()
    good = json.dumps(_record(1))
    (directory / "history.jsonl").write_text(f'{good}\n{{"id": "e2", "sta\n[1, 2]\n')
    history = History(directory, size=100)
    try:
        history.load()
    finally:
        logger.remove(sink)
    assert list(history.records) == ["e1"]
    assert [line.split(" skipped")[0][-6:] for line in lines] == ["line 2", "line 3"]


def test_history_in_flight_round_trip_and_an_unwritable_directory(tmp_path: Path) -> None:
    history = History(tmp_path / "evolution", size=100)
    history.load()
    history.set_in_flight([_record(3) | {"state": "running"}])
    assert history.in_flight()[0]["id"] == "e3"
    history.set_in_flight([])
    assert history.in_flight() == [] and not history.running_file.exists()
    if os.geteuid() != 0:  # root writes anywhere
        os.chmod(history.dir, 0o500)
        try:
            history.add(_record(4))  # logged, kept in memory, no exception
            assert history.newest(1)[0]["id"] == "e4"
        finally:
            os.chmod(history.dir, 0o700)


class _Agent:
    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []

    def __call__(self, frame: dict[str, Any]) -> None:
        self.frames.append(frame)


def test_code_book_keeps_reloads_reapplies_them_and_reverts(tmp_path: Path) -> None:
    agent, path = _Agent(), tmp_path / "code.json"
    book = CodeBook("main", agent, path)
    book.reload("caller-1", "A = 1\n", "memory_system")  # type: ignore[arg-type]
    book.reload("caller-2", "syntax error(", "memory_system")  # type: ignore[arg-type]
    assert book.result({"ok": True, "module": "memory_system"}) == (
        "caller-1",
        {"ok": True, "module": "memory_system", "error": None},
    )
    caller, result = book.result({"ok": False, "module": "memory_system", "error": "bad"})
    assert caller == "caller-2" and not result["ok"]
    assert book.current() == {"memory_system": "A = 1\n"}

    restarted = CodeBook("main", _Agent(), path)  # a new manager reads what was promoted
    assert restarted.current() == {"memory_system": "A = 1\n"}
    restarted.reapply()
    assert [f["code"] for f in restarted.send.frames] == ["A = 1\n"]  # type: ignore[attr-defined]
    assert restarted.result({"ok": True, "module": "memory_system"})[0] is None

    book.reload(None, "A = 2\n", "memory_system")
    book.result({"ok": True, "module": "memory_system"})
    assert book.revert("memory_system") is False  # back to A = 1, loaded again
    assert agent.frames[-1]["code"] == "A = 1\n"
    book.result({"ok": True, "module": "memory_system"})
    assert book.current() == {"memory_system": "A = 1\n"}
    assert book.revert("memory_system") is True  # nothing older: the agent's own code
    with pytest.raises(CallError, match="nothing to revert"):
        book.revert("memory_system")
    assert json.loads(path.read_text()) == {}


def test_code_book_reads_a_corrupt_file_as_no_reloads(tmp_path: Path) -> None:
    path = tmp_path / "code.json"
    path.write_text('{"memory_system": 3}')
    assert CodeBook("main", _Agent(), path).current() == {}


def test_an_unanswered_reload_result_is_the_agents_own_rollback(tmp_path: Path) -> None:
    book = CodeBook("s1", _Agent(), None)
    book.reload(None, "A = 1\n", "m")
    book.result({"ok": True, "module": "m"})
    caller, result = book.result({"ok": False, "module": "m", "error": "rolled back after X"})
    assert caller is None and not result["ok"] and book.current() == {}
