"""The health monitor in the shipped tree: agents' metrics and transitions, via the CLI."""

from __future__ import annotations

import json
import os
import signal
from typing import Any

from support import wait_for


def _health(tree: Any, *args: str) -> Any:
    done = tree.cli("health", *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_metrics_history_transitions_and_compare(make_tree) -> None:
    tree = make_tree()
    tree.env["OSUP_METRICS_INTERVAL_MS"] = "100"  # the agents report ten times a second
    tree.start()
    for i in range(20):
        tree.agent_request({"op": "memory_add", "id": f"b{i}", "text": f"t{i}"})

    def served() -> list[dict[str, Any]] | None:
        done = tree.cli("health", "history", "main", "--json")
        if "no metrics for 'main'" in done.stderr:
            return None  # the agent's first report has not come yet
        assert done.returncode == 0, done.stderr
        history: list[dict[str, Any]] = json.loads(done.stdout)
        return history if sum(r["metrics"].get("requests", 0) for r in history) >= 20 else None

    history = wait_for(served, what="main's reports to count the 20 requests")
    assert history == sorted(history, key=lambda r: r["at"])
    busy = next(r["metrics"] for r in history if r["metrics"].get("requests"))
    assert {"avg_latency", "error_rate", "memory_usage", "throughput"} <= busy.keys()
    assert busy["avg_latency"] > 0 and busy["error_rate"] == 0
    newest = _health(tree, "--id", "main")["metrics"]
    assert newest["id"] == "main" and newest["at"] >= history[-1]["at"]
    same = _health(tree, "compare", "main", "main")["metrics"]
    assert same["memory_usage"]["diff"] == 0.0 and same["memory_usage"]["n_a"] >= 2

    pid = tree.running_agent()["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: (a := tree.running_agent()) and a["pid"] != pid, what="the agent back")

    def transitions() -> list[tuple[str, str]] | None:
        found = [(e["from"], e["to"]) for e in _health(tree, "--events", "50")["events"]]
        return (
            found if ("RUNNING", "BACKOFF") in found or ("RUNNING", "RESTARTING") in found else None
        )

    found = wait_for(transitions, what="the death among the transitions")
    assert found[:2] == [("STOPPED", "STARTING"), ("STARTING", "RUNNING")]
    assert found[-1] == ("STARTING", "RUNNING")
    events = _health(tree)["events"]
    death = next(e for e in events if e["from"] == "RUNNING")
    assert "SIGKILL" in (death["reason"] or "")

    counted = tree.request("call", name="telemetry", request=["events"])
    assert counted["osup.health.metrics"]["count"] >= len(history)  # an event per record
    assert counted["osup.health.transition"]["count"] >= len(found)

    plain = tree.cli("health")
    assert plain.returncode == 0 and "main" in plain.stdout and "RUNNING" in plain.stdout
    unknown = tree.cli("health", "history", "ghost")
    assert unknown.returncode != 0 and "no metrics for 'ghost'" in unknown.stderr
