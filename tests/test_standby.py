"""The hot standby: it follows the main's writes, takes over when the main dies, and its own
failures never touch the main."""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any

import pytest
from support import Tree, wait_for
from support.trees import AGENTS_DIR

STANDBY = {
    "o_supervisor": {"heartbeat_interval": 200, "heartbeat_timeout": 1500},
    # Every kill of a main that became ready is news, not a crash loop: promoted at once.
    "agent": {
        "standby": True,
        "startsecs": 0,
        "max_restarts": 1000,
        "backoff_base": 20,
        "backoff_cap": 200,
    },
}


def _with(**agent: Any) -> dict[str, Any]:
    return {**STANDBY, "agent": {**STANDBY["agent"], **agent}}


def _main(tree: Tree) -> dict[str, Any]:
    return tree.agents()["main"]


def _standby(tree: Tree) -> dict[str, Any]:
    return dict(_main(tree)["standby"])


def _following(tree: Tree) -> bool:
    standby = _standby(tree)
    return standby["state"] == "RUNNING" and standby["lag"] == 0


def _standby_ready(tree: Tree) -> bool:
    return bool((_main(tree)["standby"] or {}).get("state") == "RUNNING")


def _add(tree: Tree, first: int, n: int) -> None:
    with tree.data_client() as client:
        sent = [
            client.send("request", data={"op": "memory_add", "id": f"b{i}", "text": f"t {i}"})
            for i in range(first, first + n)
        ]
        assert all(client.receive()["ok"] for _ in sent)


def _stats(tree: Tree) -> dict[str, Any]:
    stats: dict[str, Any] = tree.agent_request({"op": "stats"})
    return stats


def test_the_standby_follows_and_takes_over_at_once(make_tree) -> None:
    tree = make_tree(**STANDBY).start()
    wait_for(lambda: _following(tree), 30, what="the standby to follow")
    standby = _standby(tree)
    main = _main(tree)
    assert standby["role"] == "standby" and standby["pid"] != main["pid"]
    assert standby["slot"] == 1 and standby["applied_lsn"] == 0
    assert main["life_lock"] and standby["life_lock"]  # SDK agents hold one

    _add(tree, 0, 300)
    wait_for(lambda: _standby(tree)["applied_lsn"] == 300, what="the standby at LSN 300")
    assert _standby(tree)["lag"] == 0
    shm = tree.cli("inspect", "shm", "--json")
    assert shm.returncode == 0 and '"standby"' in shm.stdout

    os.kill(main["pid"], signal.SIGKILL)
    # The next request is answered by the promoted standby, with every acknowledged write.
    assert _stats(tree)["blocks"] == 300
    after = _main(tree)
    assert after["pid"] == standby["pid"] and after["promotions"] == 1
    assert after["state"] == "RUNNING" and after["slot"] == 0
    assert tree.agent_request({"op": "memory_get", "id": "b299"})["text"] == "t 299"

    # It is the main now: it logs its writes, and a new standby follows them.
    wait_for(lambda: _following(tree), 30, what="a new standby")
    assert _standby(tree)["pid"] not in (main["pid"], standby["pid"])
    _add(tree, 300, 100)
    wait_for(lambda: _standby(tree)["applied_lsn"] == 400, what="the new standby to follow")
    assert _main(tree)["applied_lsn"] == 400
    wait_for(lambda: "standby pid" in tree.log_text and "promoted in" in tree.log_text)


def test_a_main_with_much_to_free_is_replaced_before_it_is_gone(make_tree, monkeypatch) -> None:
    """A main with 2 GiB to free (milliseconds of teardown) and a child of its own: its
    manager acts on its death when its life lock is released, reaps it once the kernel has
    freed it, and only then kills what it left."""
    monkeypatch.setenv("SCRIPTED_MAIN_HOG_MB", "2048")
    osup = {
        **STANDBY["o_supervisor"],
        "gerbil_executable": sys.executable,
        "gerbil_main_script": str(AGENTS_DIR / "scripted.py"),
    }
    # Touching 2 GiB takes seconds on a small VM: the start is not what is tested here.
    agent = {**STANDBY["agent"], "ready_timeout": 60_000}
    tree = make_tree(o_supervisor=osup, agent=agent).start()
    wait_for(lambda: _following(tree), 60, what="the standby to follow")
    main, standby = _main(tree), _standby(tree)
    assert main["life_lock"] and standby["life_lock"]
    child = tree.agent_request({"do": "spawn", "setsid": True})
    os.kill(main["pid"], signal.SIGKILL)
    assert tree.agent_request({"echo": 1}) == {"echo": 1}  # the promoted standby answers
    assert _main(tree)["pid"] == standby["pid"]
    wait_for(lambda: "noticed by its life lock" in tree.log_text, what="the promotion logged")
    wait_for(lambda: not os.path.exists(f"/proc/{main['pid']}"), what="the dead main reaped")
    wait_for(lambda: not os.path.exists(f"/proc/{child}"), what="its child killed")
    assert f"pid {main['pid']} died (killed by SIGKILL, noticed by its life lock)" in tree.log_text


def test_main_kills_under_write_load_lose_and_repeat_nothing(make_tree) -> None:
    """Writes without ids (each applied twice would be two blocks), pipelined, never retried;
    the main SIGKILLed again and again: every write is answered, none twice."""
    tree = make_tree(**STANDBY).start()
    acknowledged: list[str] = []
    errors: list[str] = []
    stop = threading.Event()

    def write() -> None:
        with tree.data_client(timeout=30) as client:
            n = 0
            while not stop.is_set():
                sent = [
                    client.send("request", data={"op": "memory_add", "text": f"w {n + i}"})
                    for i in range(16)
                ]
                n += len(sent)
                for _ in sent:
                    reply = client.receive()
                    if reply["ok"]:
                        acknowledged.append(reply["data"]["id"])
                    else:
                        errors.append(str(reply.get("error")))

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    try:
        for kill in range(6):
            # Ready, not caught up: under a writer that never pauses, on a loaded machine, a
            # status may never find the lag at 0; a promotion catches up what is missing.
            wait_for(lambda: _standby_ready(tree) or not writer.is_alive(), 30, what="a standby")
            done = len(acknowledged)
            wait_for(lambda: len(acknowledged) > done + 50 or not writer.is_alive())
            os.kill(_main(tree)["pid"], signal.SIGKILL)
            wait_for(lambda: _main(tree)["promotions"] == kill + 1, what=f"promotion {kill + 1}")
            assert writer.is_alive(), f"the writer stopped after kill {kill}"
    finally:
        stop.set()
        writer.join(30)
    assert not writer.is_alive()
    assert errors == []
    stats = _stats(tree)
    assert stats["blocks"] == len(acknowledged) == len(set(acknowledged))
    assert stats["operations"] == _main(tree)["applied_lsn"]  # each entry applied once
    with tree.data_client() as client:
        for key in acknowledged[::7]:
            assert client.request("request", data={"op": "memory_get", "id": key})["id"] == key
    # From disk alone (checkpoint + WAL), the same state.
    assert tree.cli("agent-restart").returncode == 0
    wait_for(lambda: tree.running_agent() and _stats(tree)["blocks"] == len(acknowledged))


def test_killing_the_standby_leaves_the_main_untouched(make_tree) -> None:
    tree = make_tree(**STANDBY).start()
    wait_for(lambda: _following(tree), 30, what="the standby")
    main, standby = _main(tree), _standby(tree)
    _add(tree, 0, 50)
    os.kill(standby["pid"], signal.SIGKILL)
    _add(tree, 50, 50)  # served throughout
    wait_for(lambda: _following(tree) and _standby(tree)["pid"] != standby["pid"])
    after = _main(tree)
    assert (after["pid"], after["generation"], after["restarts"]) == (
        main["pid"],
        main["generation"],
        main["restarts"],
    )
    assert _standby(tree)["restarts"] == 1
    assert _standby(tree)["applied_lsn"] == 100  # restored, then following


def test_a_standby_planned_while_the_main_writes_gets_every_entry(make_tree) -> None:
    """A new standby's restore is looked up through the manager's loop: with the WAL
    stopped mid-plan the main's manager still serves, the writes the main makes meanwhile
    reach the standby after its restore, and a promotion then loses none of them."""
    tree = make_tree(**STANDBY).start()
    wait_for(lambda: _following(tree), 30, what="the standby")
    _add(tree, 0, 20)
    wal, standby = tree.pids()["wal"], _standby(tree)
    os.kill(wal, signal.SIGSTOP)
    try:
        os.kill(standby["pid"], signal.SIGKILL)
        wait_for(
            lambda: _standby(tree)["state"] == "STARTING" and _standby(tree)["pid"] is None,
            what="the new standby planning",
        )
        with tree.data_client() as client:  # sent now, acknowledged once the WAL is back
            sent = [
                client.send("request", data={"op": "memory_add", "id": f"b{i}", "text": f"t {i}"})
                for i in range(20, 30)
            ]
            # Written, and sent to the (stopped) WAL after the plan's read: the manager
            # answers meanwhile.
            wait_for(lambda: _main(tree)["wal_pending"] > 0, what="entries on their way")
            assert _standby(tree)["state"] == "STARTING"
            os.kill(wal, signal.SIGCONT)
            assert all(client.receive()["ok"] for _ in sent)
    finally:
        os.kill(wal, signal.SIGCONT)
    wait_for(lambda: _following(tree) and _standby(tree)["applied_lsn"] == 30, 30)
    follower = _standby(tree)["pid"]
    os.kill(_main(tree)["pid"], signal.SIGKILL)
    assert _stats(tree)["blocks"] == 30  # answered by the promoted standby
    assert _main(tree)["pid"] == follower
    assert tree.agent_request({"op": "memory_get", "id": "b29"})["text"] == "t 29"
    assert "numbered entries" not in tree.log_text


def test_killing_both_falls_back_to_a_restart(make_tree) -> None:
    tree = make_tree(**STANDBY).start()
    wait_for(lambda: _following(tree), 30, what="the standby")
    _add(tree, 0, 120)
    main, standby = _main(tree), _standby(tree)
    os.kill(standby["pid"], signal.SIGKILL)
    os.kill(main["pid"], signal.SIGKILL)
    gone = {main["pid"], standby["pid"]}

    def back() -> bool:
        # New processes: right after the kills, a status may not have seen them yet.
        now = _main(tree)
        standby = now["standby"] or {}
        return (
            now["state"] == "RUNNING"
            and now["pid"] not in gone
            and (
                standby.get("state") == "RUNNING"
                and standby["lag"] == 0
                and standby["pid"] not in gone
            )
        )

    wait_for(back, 30, what="a new main and a new standby")
    assert _stats(tree)["blocks"] == 120
    wait_for(lambda: "cannot take over" in tree.log_text or "promoted in" in tree.log_text)


def test_a_hanging_standby_is_replaced(make_tree) -> None:
    tree = make_tree(**STANDBY).start()
    wait_for(lambda: _following(tree), 30, what="the standby")
    main, standby = _main(tree), _standby(tree)
    os.kill(standby["pid"], signal.SIGSTOP)
    try:
        wait_for(lambda: _standby(tree)["restarts"] == 1, 30, what="the hung standby replaced")
    finally:
        try:
            os.kill(standby["pid"], signal.SIGCONT)
        except ProcessLookupError:
            pass
    assert "heartbeat timeout" in str(_standby(tree)["last_kill_reason"])
    wait_for(lambda: _following(tree), 30, what="a new standby")
    assert _main(tree)["pid"] == main["pid"] and _main(tree)["restarts"] == 0


def test_a_standby_that_falls_behind_is_replaced(make_tree) -> None:
    tree = make_tree(**_with(standby_max_lag=40)).start()
    wait_for(lambda: _following(tree), 30, what="the standby")
    standby = _standby(tree)
    os.kill(standby["pid"], signal.SIGSTOP)  # it reads nothing: the lag grows
    try:
        for first in range(0, 200, 20):
            _add(tree, first, 20)  # in batches: the bound is checked at each
        wait_for(lambda: _standby(tree)["restarts"] >= 1, 30, what="the standby replaced")
    finally:
        try:
            os.kill(standby["pid"], signal.SIGCONT)
        except ProcessLookupError:
            pass
    assert "behind the main" in str(_standby(tree)["last_kill_reason"])
    wait_for(lambda: _following(tree) and _standby(tree)["applied_lsn"] == 200, 30)
    assert _main(tree)["restarts"] == 0


def test_a_crash_looping_standby_backs_off_and_the_main_serves_on(make_tree) -> None:
    agent = str(AGENTS_DIR / "standby_crash.py")
    tree = make_tree(
        o_supervisor={
            **STANDBY["o_supervisor"],
            "gerbil_executable": sys.executable,
            "gerbil_main_script": agent,
        },
        agent={**STANDBY["agent"], "max_retries": 3},
    ).start()
    wait_for(lambda: _standby(tree)["state"] == "FATAL", 30, what="the standby FATAL")
    assert _standby(tree)["restarts"] == 3
    main = _main(tree)
    assert main["state"] == "RUNNING" and main["restarts"] == 0
    _add(tree, 0, 10)
    assert "standby FATAL" in tree.log_text
    # Without a standby, the main's death is a restart, as it is without the option.
    os.kill(main["pid"], signal.SIGKILL)
    wait_for(lambda: (a := tree.running_agent()) and a["pid"] != main["pid"], 30)
    assert _stats(tree)["blocks"] == 10 and _main(tree)["promotions"] == 0


def test_an_agent_that_cannot_be_a_standby_runs_without_one(make_tree) -> None:
    agent = str(AGENTS_DIR / "main_only.py")
    tree = make_tree(
        o_supervisor={
            **STANDBY["o_supervisor"],
            "gerbil_executable": sys.executable,
            "gerbil_main_script": agent,
        },
        agent=STANDBY["agent"],
    ).start()
    wait_for(lambda: _standby(tree)["unsupported"], 30, what="the standby refused")
    assert _standby(tree)["state"] == "EXITED" and _standby(tree)["pid"] is None
    assert "cannot be a standby" in tree.log_text
    pid = _main(tree)["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: (a := tree.running_agent()) and a["pid"] != pid, 30)
    assert "the standby cannot take over" in tree.log_text


@pytest.mark.parametrize("standby", [True, False])
def test_the_standby_counts_as_a_shadow(make_tree, standby: bool) -> None:
    osup = {**STANDBY["o_supervisor"], "max_concurrent_shadows": 2}
    tree = make_tree(o_supervisor=osup, agent={**STANDBY["agent"], "standby": standby}).start()
    assert tree.cli("shadow", "start", "s1").returncode == 0
    second = tree.cli("shadow", "start", "s2")
    if standby:
        assert second.returncode != 0 and "standby counts as one" in second.stderr
    else:
        assert second.returncode == 0, second.stderr
