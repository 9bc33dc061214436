"""Shadow experiments end to end: a real tree, real shadows, mirrored traffic, verdicts.

The main agent is first given a slow search (a hot reload), so that the shipped search is a
genuinely faster candidate against a control that runs the main's current code; wrong,
broken and leaking candidates are variants of the shipped module.
"""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from support import wait_for

from osup_mp.agent.reference import memory_system

SOURCE = inspect.getsource(memory_system)
SLOW = SOURCE + (
    "\n_search = search\n\n\ndef search(matrix, query, k):\n"
    "    import time\n    time.sleep(0.004)\n    return _search(matrix, query, k)\n"
)
WRONG = SOURCE + (
    "\n_search = search\n\n\ndef search(matrix, query, k):\n"
    "    return _search(matrix, query, k)[::-1]\n"
)
FRAGILE = SOURCE + (  # fast, but raises for k == 7: the agent rolls it back
    "\n_search = search\n\n\ndef search(matrix, query, k):\n"
    "    if k == 7:\n        raise RuntimeError('k == 7')\n    return _search(matrix, query, k)\n"
)
BROKEN = SOURCE + "\nraise ImportError('this module cannot load')\n"
LEAKY = SOURCE + (
    "\n_search = search\n_KEPT = []\n\n\ndef search(matrix, query, k):\n"
    "    _KEPT.append(bytearray(8 << 20))\n    return _search(matrix, query, k)\n"
)


def _souring(flag: Path) -> str:
    """The shipped search, 30 ms slower once ``flag`` exists."""
    return SOURCE + (
        f"\nimport os as _os\nimport time as _time\n_FLAG = {str(flag)!r}\n_search = search\n\n\n"
        "def search(matrix, query, k):\n    if _os.path.exists(_FLAG):\n"
        "        _time.sleep(0.03)\n    return _search(matrix, query, k)\n"
    )


OSUP = {
    "evolution_enabled": True,
    "max_concurrent_shadows": 2,
    "heartbeat_interval": 200,
    "heartbeat_timeout": 3000,
}
# The shortest calibration the arbiter runs: 10 looks (the default is 15 s)
EVOLUTION = {"min_samples": 20, "rollback_watch": 3000, "calibration": 10000}
# Where latency does not decide (answers, memory, loading, the watch): straight to the code
UNCALIBRATED = EVOLUTION | {"calibration": 0}


def _tree(shared_tree: Any, **sections: dict[str, Any]) -> Any:
    tree = shared_tree(**{"o_supervisor": OSUP, "evolution": EVOLUTION, **sections})
    _load_blocks(tree)
    return tree


def _load_blocks(tree: Any) -> None:
    with tree.data_client() as client:
        for i in range(200):
            block = {"op": "memory_add", "id": f"b{i}", "text": f"note {i} about topic {i % 13}"}
            client.request("request", data=block)


def _only_the_main(tree: Any) -> bool:
    """No arm left: gone from the agents and their managers exited (until then they still
    count toward ``max_concurrent_shadows``, and a new experiment may be refused)."""
    status = tree.status()
    managers = {c["name"] for c in status["components"] if c["name"].startswith("agent:")}
    return tree.agents().keys() == {"main"} and managers <= {"agent:main"}


def _show(tree: Any, exp_id: str) -> dict[str, Any]:
    """The experiment's record, asked over the control socket: polled in a loop, a CLI
    process per look would take a core from the arms being measured."""
    record: dict[str, Any] = tree.request("experiment_show", id=exp_id)
    return record


def _requests(tmp: Path) -> Path:
    path = tmp / "searches.jsonl"
    lines = [{"op": "memory_search", "query": f"topic {i % 13}", "k": 3} for i in range(50)]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def _traffic(tree: Any, tmp: Path, seconds: float, rate: int = 200) -> subprocess.Popen[str]:
    args = ["traffic", "--file", str(_requests(tmp)), "--rate", str(rate)]
    args += ["--duration", str(seconds), "--concurrency", "4"]
    cmd = [sys.executable, "-m", "osup_mp", "--config", str(tree.config_path), *args]
    return subprocess.Popen(
        cmd, env=tree.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _experiment(
    tree: Any, tmp: Path, code: str, *extra: str, seconds: float = 20
) -> dict[str, Any]:
    """Run one experiment to its verdict under steady mirrored traffic."""
    code_file = tmp / "candidate.py"
    code_file.write_text(code)
    traffic = _traffic(tree, tmp, seconds + 10)
    try:
        done = tree.cli(
            "experiment", "start", "--code", str(code_file), "--target", "memory_system",
            "--ratio", "1", "--duration", str(seconds), "--wait", "--json", *extra,
            timeout=seconds + 60,
        )  # fmt: skip
    finally:
        traffic.kill()
        traffic.communicate()
    assert done.returncode == 0, done.stderr
    record: dict[str, Any] = json.loads(done.stdout)
    assert record["state"] in ("watching", "decided")
    return record


def _search_answers(tree: Any) -> list[Any]:
    with tree.data_client() as client:
        return [
            client.request("request", data={"op": "memory_search", "query": f"topic {i}", "k": 3})
            for i in range(13)
        ]


def test_refusals_name_the_key_and_bad_code_is_refused_before_any_shadow(
    make_tree: Any, tmp_path: Path
) -> None:
    tree = make_tree(o_supervisor={"evolution_enabled": False}).start()
    code = tmp_path / "c.py"
    code.write_text(SOURCE)
    start = ("experiment", "start", "--code", str(code), "--target", "memory_system")
    off = tree.cli(*start)
    assert off.returncode == 1
    where = f"[o_supervisor] evolution_enabled = false (set in {tree.config_path})"
    assert f"evolution is disabled: {where}" in off.stderr
    missing = tree.cli("experiment", "start", "--code", str(tmp_path / "nope.py"), "--target", "m")
    assert missing.returncode == 2 and "cannot read" in missing.stderr
    assert tree.cli("experiment", "show", "e9").returncode == 1
    assert tree.cli("history", "--json").stdout.strip() == "[]"
    assert tree.agents().keys() == {"main"}


def test_without_traffic_to_calibrate_on_it_is_inconclusive_once_the_code_loads(
    shared_tree: Any, tmp_path: Path
) -> None:
    tree = _tree(shared_tree)
    for code, verdict, rule in ((SOURCE, "inconclusive", "not_enough_data"),
                                (BROKEN, "rejected", "load_failed")):  # fmt: skip
        (tmp_path / "code.py").write_text(code)
        done = tree.cli(
            "experiment", "start", "--code", str(tmp_path / "code.py"), "--target",
            "memory_system", "--duration", "1", "--wait", "--json", timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        record = json.loads(done.stdout)
        assert (record["verdict"], record["rule"]) == (verdict, rule), record["reason"]
        if rule == "not_enough_data":
            assert record["reason"].startswith(
                "too little traffic to measure the arms' own difference: 0 looks"
            )
        wait_for(lambda: _only_the_main(tree), what="the arms stopped")


def test_syntax_errors_and_shadow_limits_are_refused(shared_tree: Any, tmp_path: Path) -> None:
    tree = _tree(shared_tree)
    bad = tmp_path / "bad.py"
    bad.write_text("def search(:\n")
    done = tree.cli("experiment", "start", "--code", str(bad), "--target", "memory_system")
    assert done.returncode == 1 and "does not compile: invalid syntax (line 1)" in done.stderr
    assert tree.cli("shadow", "start", "s1").returncode == 0
    try:
        code = tmp_path / "c.py"
        code.write_text(SOURCE)
        full = tree.cli("experiment", "start", "--code", str(code), "--target", "memory_system")
        assert full.returncode == 1
        assert "1 shadows run and an experiment needs 2 more" in full.stderr
        assert "[o_supervisor] max_concurrent_shadows = 2" in full.stderr
    finally:
        tree.cli("shadow", "stop", "s1")


def test_a_wrong_candidate_is_vetoed_with_examples(shared_tree: Any, tmp_path: Path) -> None:
    tree = _tree(shared_tree, evolution=UNCALIBRATED)
    before = _search_answers(tree)
    record = _experiment(tree, tmp_path, WRONG)
    assert record["verdict"] == "rejected" and record["rule"] == "mismatch_veto", record
    mm = record["mismatches"]
    assert mm["mismatches_candidate"] >= 3 and mm["mismatches_control"] == 0
    assert mm["examples"] and mm["examples"][0]["expected"] != mm["examples"][0]["got"]
    wait_for(lambda: _only_the_main(tree), what="both arms stopped")
    assert _search_answers(tree) == before  # the main never ran it
    shown = tree.cli("experiment", "show", record["id"])
    assert shown.returncode == 0 and "rejected" in shown.stdout and "mismatch_veto" in shown.stdout


def test_a_candidate_that_fails_to_load_is_rejected_and_the_main_untouched(
    shared_tree: Any, tmp_path: Path
) -> None:
    tree = _tree(shared_tree, evolution=UNCALIBRATED)
    record = _experiment(tree, tmp_path, BROKEN, seconds=10)
    assert record["verdict"] == "rejected" and record["rule"] == "load_failed"
    assert "this module cannot load" in record["reason"]
    wait_for(lambda: _only_the_main(tree), what="both arms stopped")
    assert tree.agents()["main"]["restarts"] == 0


def test_a_leaking_candidate_is_killed_by_its_limit_and_rejected(
    shared_tree: Any, tmp_path: Path
) -> None:
    tree = _tree(shared_tree, watchdog={"shadow_rss_mb": 200}, evolution=UNCALIBRATED)
    record = _experiment(tree, tmp_path, LEAKY)
    assert record["verdict"] == "rejected" and record["rule"] == "candidate_died", record
    assert "rss" in record["reason"].lower()


def test_an_identical_candidate_is_never_promoted(shared_tree: Any, tmp_path: Path) -> None:
    """A/A on the real pipeline, five experiments at once (ten shadows on a shared machine,
    the hard case): none promoted, none rejected, and not for lack of data."""
    tree = _tree(shared_tree, o_supervisor=OSUP | {"max_concurrent_shadows": 10})
    code = tmp_path / "same.py"
    code.write_text(SOURCE)
    traffic = _traffic(tree, tmp_path, 60)
    try:
        ids = []
        for _ in range(5):
            done = tree.cli(
                "experiment", "start", "--code", str(code), "--target", "memory_system",
                "--ratio", "0.2", "--duration", "15", "--json",
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
            ids.append(json.loads(done.stdout)["id"])

        def decided() -> list[dict[str, Any]] | None:
            records = [_show(tree, i) for i in ids]
            return records if all(r["state"] == "decided" for r in records) else None

        records = wait_for(decided, timeout=90, what="five A/A experiments decided")
    finally:
        traffic.kill()
        traffic.communicate()
    summary = [(r["verdict"], r["reason"], r["metrics"][0]["interval"]) for r in records]
    assert {(r["verdict"], r["rule"]) for r in records} == {("inconclusive", "no_difference")}, (
        summary
    )
    assert all(r["metrics"][0]["interval"] is not None for r in records), summary
    assert all(r["calibration"]["looks"] >= 10 for r in records), summary  # measured first
    wait_for(lambda: _only_the_main(tree), what="every arm stopped")


def test_faster_code_is_promoted_then_rolled_back_when_it_fails_in_the_main(
    make_tree: Any, tmp_path: Path
) -> None:
    tree = make_tree(o_supervisor=OSUP, evolution=UNCALIBRATED | {"rollback_watch": 60000}).start()
    _load_blocks(tree)
    slow = tmp_path / "slow.py"
    slow.write_text(SLOW)
    loaded = tree.cli("hot-reload", "--module", "memory_system", str(slow))
    assert loaded.returncode == 0, loaded.stderr
    before = _search_answers(tree)

    record = _experiment(tree, tmp_path, FRAGILE)
    assert record["verdict"] == "promoted" and record["state"] == "watching", record
    assert record["rule"] == "improvement"
    latency = next(m for m in record["metrics"] if m["name"] == "latency_ms")
    assert latency["outcome"] == "better" and latency["effect"] < -0.3
    rows = {m["name"]: m for m in record["metrics"]}  # the arms measured, not just timed
    assert rows["throughput"]["n_candidate"] > 0 and rows["throughput"]["outcome"] != "worse"
    memory = rows["memory_mb"]
    assert memory["n_candidate"] >= 5 and memory["candidate"] > 10 and memory["control"] > 10
    assert memory["outcome"] == "same" and memory["test"].startswith("measured: excess")
    assert _search_answers(tree) == before  # same answers, now from the promoted code

    with tree.data_client() as client:  # the promoted code raises: the agent rolls it back
        client.request("request", data={"op": "memory_search", "query": "topic 1", "k": 7})

    def rolled_back() -> dict[str, Any] | None:
        shown = _show(tree, record["id"])
        return shown if shown["verdict"] == "rolled_back" else None

    final = wait_for(rolled_back, timeout=15, what="the promotion rolled back")
    assert final["state"] == "decided" and "rolled the promoted code back" in final["reason"]

    tree.stop()
    tree.start()  # the history survives a restart of the whole tree
    history = json.loads(tree.cli("history", "--json").stdout)
    assert [(r["id"], r["verdict"]) for r in history] == [(record["id"], "rolled_back")]


def test_a_promotion_that_slows_the_main_down_later_is_rolled_back(
    make_tree: Any, tmp_path: Path
) -> None:
    """Faster in the experiment, slower in the main once promoted: the watch compares the
    main's own metrics after the promotion with before it, and reverts."""
    tree = make_tree(o_supervisor=OSUP, evolution=EVOLUTION | {"rollback_watch": 60000})
    tree.env["OSUP_METRICS_INTERVAL_MS"] = "500"  # the agents report twice a second
    tree.start()
    _load_blocks(tree)
    slow, souring = tmp_path / "slow.py", tmp_path / "souring.py"
    slow.write_text(SLOW)
    sour = tmp_path / "sour"  # created once promoted: the code turns slow from then on
    souring.write_text(_souring(sour))
    assert tree.cli("hot-reload", "--module", "memory_system", str(slow)).returncode == 0
    traffic = _traffic(tree, tmp_path, 90)
    try:
        done = tree.cli(
            "experiment", "start", "--code", str(souring), "--target", "memory_system",
            "--ratio", "1", "--duration", "15", "--wait", "--json", timeout=60,
        )  # fmt: skip
        record = json.loads(done.stdout)
        assert record["verdict"] == "promoted" and record["state"] == "watching", record
        sour.touch()

        def rolled_back() -> dict[str, Any] | None:
            shown = _show(tree, record["id"])
            return shown if shown["verdict"] == "rolled_back" else None

        final = wait_for(rolled_back, timeout=50, what="the slowed-down promotion rolled back")
    finally:
        traffic.kill()
        traffic.communicate()
    assert "mean latency rose from" in final["reason"] and "after the promotion" in final["reason"]
    loaded = tree.request("call", name="agent:main", request=["loaded_code"])
    assert loaded["memory_system"] == SLOW  # the code before the promotion is back


def test_an_arbiter_restart_closes_its_experiment_and_stops_the_arms(
    shared_tree: Any, tmp_path: Path
) -> None:
    tree = _tree(shared_tree)
    code = tmp_path / "same.py"
    code.write_text(SOURCE)
    started = tree.cli(
        "experiment", "start", "--code", str(code), "--target", "memory_system",
        "--duration", "600", "--json",
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    exp_id = json.loads(started.stdout)["id"]

    def state() -> str:
        return str(_show(tree, exp_id)["state"])

    # no traffic: the arms stay on the main's code, mirrored, waiting to measure themselves
    wait_for(lambda: state() == "calibrating", what="the experiment mirroring")
    assert tree.agents().keys() == {"main", f"{exp_id}-cand", f"{exp_id}-cont"}
    assert tree.cli("restart", "arbiter").returncode == 0
    wait_for(lambda: _only_the_main(tree), what="the arms stopped")
    record = json.loads(tree.cli("experiment", "show", exp_id, "--json").stdout)
    assert (record["state"], record["verdict"], record["rule"]) == (
        "decided",
        "inconclusive",
        "interrupted",
    )
    mirrors = json.loads(tree.cli("mirror", "status", "--json").stdout)
    assert mirrors == []
    again = tree.cli("experiment", "start", "--code", str(code), "--target", "memory_system")
    assert again.returncode == 0 and f"e{int(exp_id[1:]) + 1} started" in again.stdout
    tree.cli("experiment", "stop", f"e{int(exp_id[1:]) + 1}")
    wait_for(lambda: _only_the_main(tree), what="the arms stopped")


def test_scipy_is_imported_once_and_off_the_calling_thread() -> None:
    """The arbiter starts importing the explanation's tests when an experiment starts, in a
    thread: its loop goes on judging meanwhile (the import takes about 0.6 s)."""
    code = (
        "import sys, threading\n"
        "from osup_mp.evolution import fixed\n"
        "assert 'scipy' not in sys.modules\n"
        "fixed.preload(); fixed.preload()\n"
        "others = [t for t in threading.enumerate() if t is not threading.main_thread()]\n"
        "assert len(others) == 1 and others[0].daemon, others\n"
        "others[0].join(60)\n"
        "assert 'scipy.stats' in sys.modules\n"
        "print(fixed.latency_test([1.0, 2.0, 3.0], [4.0, 5.0, 6.0]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Mann-Whitney U p=")
