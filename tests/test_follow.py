"""Shadows start from the main agent's state and follow its acknowledged writes."""

from __future__ import annotations

import os
import signal
from typing import Any

from support import wait_for

FAST = {
    "o_supervisor": {"heartbeat_interval": 200, "heartbeat_timeout": 2000},
    "agent": {"backoff_base": 20, "backoff_cap": 200},
}


def _add(tree: Any, first: int, n: int) -> None:
    with tree.data_client() as client:
        ids = [
            client.send("request", data={"op": "memory_add", "id": f"b{i}", "text": f"text {i}"})
            for i in range(first, first + n)
        ]
        answered = {client.receive()["id"] for _ in ids}
    assert answered == set(ids)


def _shadow(tree: Any, data: dict[str, Any]) -> Any:
    return tree.request("call", name="agent:s1", request=["request", data])


def _caught_up(tree: Any, blocks: int) -> bool:
    return bool(_shadow(tree, {"op": "stats"})["blocks"] == blocks)


def test_a_shadow_restores_the_main_state_then_follows_its_writes(make_tree) -> None:
    tree = make_tree(**FAST).start()
    _add(tree, 0, 300)
    assert tree.cli("checkpoint", "create").returncode == 0
    _add(tree, 300, 200)  # after the checkpoint: only in the WAL
    assert tree.cli("shadow", "start", "s1").returncode == 0
    assert _shadow(tree, {"op": "stats"})["blocks"] == 500  # checkpoint + WAL, at start
    assert _shadow(tree, {"op": "memory_get", "id": "b450"})["text"] == "text 450"

    _add(tree, 500, 250)  # written while the shadow runs: pushed to it as acknowledged
    wait_for(lambda: _caught_up(tree, 750), what="the shadow to follow")
    main, shadow = tree.agents()["main"], tree.agents()["s1"]
    assert shadow["applied_lsn"] == main["applied_lsn"] == 750
    assert shadow["restarts"] == 0  # pushed to it, not restored again

    # The WAL restarts: the shadow follows the new one from where it was.
    wal = tree.pids()["wal"]
    os.kill(wal, signal.SIGKILL)
    wait_for(lambda: (p := tree.running_pids()) and p["wal"] != wal, what="the WAL back")
    _add(tree, 750, 50)
    wait_for(lambda: _caught_up(tree, 800), what="the shadow to follow the new WAL")

    # The shadow's agent dies: its successor restores the main's state and follows on.
    pid = tree.agents()["s1"]["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_for(
        lambda: (a := tree.agents()["s1"])["state"] == "RUNNING" and a["pid"] != pid,
        what="the shadow back",
    )
    _add(tree, 800, 10)
    wait_for(lambda: _caught_up(tree, 810), what="the new shadow agent to follow")
    hits = _shadow(tree, {"op": "memory_search", "query": "text 805", "k": 1})
    assert hits[0]["id"] == "b805"
    assert tree.agent_request({"op": "stats"})["blocks"] == 810  # the main never waited
