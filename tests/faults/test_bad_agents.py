"""Fault matrix: bad agents.

Each case makes the agent misbehave several times in a row: garbage on stdout, a huge
length prefix, a heartbeat flood, children forked with and without ``setsid``, SIGTERM
ignored, exits before ready, hanging mid-request. The agent manager must survive every
time (same pid), bring a serving agent back, keep its memory flat, and leave nothing
behind when the tree stops (the autouse ``no_leaks`` fixture checks every tagged process).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
from support import AGENTS_DIR, SCRIPTED_AGENT, Tree, wait_for

from osup_mp.client import ClientError

pytestmark = pytest.mark.faults

ROUNDS = 4
RSS_GROWTH = 10 << 20
FAST = {
    "o_supervisor": {"heartbeat_interval": 200, "heartbeat_timeout": 1000},
    "agent": {
        "backoff_base": 20,
        "backoff_cap": 200,
        "max_retries": 3,
        "startsecs": 0,  # a crash after serving is not a crash loop
        "stop_timeout": 300,
        "request_timeout": 2000,
    },
}


def _tree(make_tree: Callable[..., Tree], agent: Path = SCRIPTED_AGENT) -> Tree:
    sections: dict[str, dict[str, Any]] = {k: dict(v) for k, v in FAST.items()}
    sections["o_supervisor"].update(gerbil_executable=sys.executable, gerbil_main_script=str(agent))
    tree = make_tree(**sections)
    tree.env["OSUP_STALL_TIMEOUT_MS"] = "1500"  # a handler stuck this long counts as hung
    return tree


def _pid(tree: Tree) -> int:
    return int(wait_for(tree.running_agent, 30, what="agent running")["pid"])


def _replaced(tree: Tree, old: int) -> int:
    return int(
        wait_for(
            lambda: (a := tree.running_agent()) and a["pid"] != old and a["pid"],
            30,
            what=f"agent {old} replaced",
        )
    )


def _request(tree: Tree, data: Any) -> Any:
    try:
        return tree.agent_request(data, timeout=5)
    except ClientError as exc:
        return exc


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _children(setsid: bool) -> Callable[[Tree, Path], None]:
    def act(tree: Tree, _tmp: Path) -> None:
        old = _pid(tree)
        child = _request(tree, {"do": "spawn", "setsid": setsid})
        assert isinstance(child, int)
        _request(tree, {"do": "crash"})
        _replaced(tree, old)
        wait_for(lambda: _gone(child), 5, what=f"the agent's child {child} gone")

    return act


def _frame(kind: str) -> Callable[[Tree, Path], None]:
    def act(tree: Tree, _tmp: Path) -> None:
        old = _pid(tree)
        _request(tree, {"do": kind})
        _replaced(tree, old)

    return act


def _ignore_term(tree: Tree, _tmp: Path) -> None:
    old = _pid(tree)
    assert _request(tree, {"do": "ignore_term"}) == "ignoring"
    assert tree.cli("agent-restart").returncode == 0
    _replaced(tree, old)


def _hang(tree: Tree, _tmp: Path) -> None:
    old = _pid(tree)
    assert isinstance(_request(tree, {"do": "sleep", "s": 60}), ClientError)  # deadline
    _replaced(tree, old)  # the stalled agent stops heartbeating: killed as hung


def _exit_before_ready(tree: Tree, tmp: Path) -> None:
    flag = tmp / "fail-start"
    old = _pid(tree)
    flag.touch()
    _request(tree, {"do": "crash"})
    wait_for(lambda: tree.agents()["main"]["state"] == "FATAL", 30, what="FATAL after max_retries")
    flag.unlink()
    assert tree.cli("agent-restart").returncode == 0
    _replaced(tree, old)


CASES: dict[str, Callable[[Tree, Path], None]] = {
    "garbage": _frame("garbage"),
    "huge length prefix": _frame("oversized"),
    "children": _children(setsid=False),
    "children with setsid": _children(setsid=True),
    "SIGTERM ignored": _ignore_term,
    "exits before ready": _exit_before_ready,
    "hangs mid-request": _hang,
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_agent_never_takes_its_manager_down(make_tree, tmp_path, case: str) -> None:
    tree = _tree(make_tree)
    tree.env["SCRIPTED_FAIL_START"] = str(tmp_path / "fail-start")
    tree.start()
    manager = psutil.Process(tree.pids()["agent:main"])
    CASES[case](tree, tmp_path)  # once to warm up: imports and buffers of a first restart
    rss = manager.memory_info().rss
    for _ in range(ROUNDS - 1):
        CASES[case](tree, tmp_path)
    assert tree.pids()["agent:main"] == manager.pid  # the manager survived every round
    assert _request(tree, {"echo": 1}) == {"echo": 1}  # and its agent serves
    growth = manager.memory_info().rss - rss
    assert growth < RSS_GROWTH, f"manager RSS grew {growth >> 10} KiB over {ROUNDS - 1} rounds"


def test_a_heartbeat_flood_leaves_the_manager_serving(make_tree) -> None:
    tree = _tree(make_tree, agent=AGENTS_DIR / "heartbeat_flood.py").start()
    manager = tree.pids()["agent:main"]
    agent = _pid(tree)
    rss = psutil.Process(manager).memory_info().rss
    for i in range(200):
        assert tree.agent_request({"n": i}, timeout=5) == {"n": i}
    assert tree.pids()["agent:main"] == manager and _pid(tree) == agent  # nobody restarted
    assert psutil.Process(manager).memory_info().rss - rss < RSS_GROWTH
