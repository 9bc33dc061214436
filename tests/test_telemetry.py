"""Telemetry: the event API in isolation, and sampling inside a real tree."""

from __future__ import annotations

import pytest
from support import wait_for

from osup_mp.client import ClientError
from osup_mp.components.telemetry import EventCounter, Telemetry


def test_execute_dispatches_by_prefix_and_detaches_failing_handlers() -> None:
    tele = Telemetry(period=10.0)
    seen: list = []
    tele.attach("agents", ("osup", "agent"), lambda e, m, md: seen.append((e, m, md)))
    tele.attach("all", (), EventCounter())

    def broken(e, m, md):
        raise ValueError("boom")

    tele.attach("broken", ("osup",), broken)
    tele.execute(("osup", "agent", "restart"), {"count": 1}, {"id": "main"})
    tele.execute(("osup", "vault", "save"), {"bytes": 10}, {})
    assert seen == [(("osup", "agent", "restart"), {"count": 1}, {"id": "main"})]
    assert "broken" not in tele.handlers  # detached after raising, as :telemetry does
    counter = tele.handlers["all"].fn
    assert isinstance(counter, EventCounter)
    assert counter.events["osup.vault.save"]["count"] == 1
    assert tele.detach("agents") and not tele.detach("agents")


def test_sampling_in_a_tree(make_tree) -> None:
    tree = make_tree().start("a:permanent")
    pids = wait_for(tree.running_pids)
    sample = tree.request("call", name="telemetry", request=["sample"])
    by_name = {p["name"]: p for p in sample["processes"]}
    assert by_name["a"]["pid"] == pids["a"]
    assert by_name["supervisor"]["pid"] == tree.status()["pid"]
    for proc in sample["processes"]:
        assert proc["rss_bytes"] > 0 and proc["threads"] >= 1 and proc["fds"] >= 3
    assert sample["host"]["mem_total_bytes"] > 0
    # other components emit events with a cast; the counter sees them
    attach = ["attach", "log", ["osup", "host"], "osup_mp.components.telemetry:log_event"]
    assert tree.request("call", name="telemetry", request=attach) is True
    bad = ["attach", "bad", ["x"], "no.such.module:fn"]
    with pytest.raises(ClientError, match="cannot attach"):
        tree.request("call", name="telemetry", request=bad)
    assert tree.running_pids() == pids  # a bad request does not crash the component
    events = wait_for(
        lambda: tree.request("call", name="telemetry", request=["events"]).get(
            "osup.process.sample"
        ),
        what="periodic samples",
    )
    assert events["count"] >= 2
