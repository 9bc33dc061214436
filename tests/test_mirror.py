"""Mirrors: the main's read-only requests copied to shadows, answers compared with the
main's; writes never mirrored; a wrong shadow shows mismatches; the main path unaffected."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from support import wait_for

from osup_mp.agent.reference import memory_system

OSUP = {"max_concurrent_shadows": 2, "heartbeat_interval": 200, "heartbeat_timeout": 2000}


def _status(tree: Any) -> list[dict[str, Any]]:
    done = tree.cli("mirror", "status", "--json")
    assert done.returncode == 0, done.stderr
    mirrors: list[dict[str, Any]] = json.loads(done.stdout)
    return mirrors


def _load(tree: Any, reads: int, writes: int) -> None:
    with tree.data_client() as client:
        ids = []
        for i in range(max(reads, writes)):
            if i < writes:
                block = {"op": "memory_add", "id": f"w{i}", "text": f"written {i}"}
                ids.append(client.send("request", data=block))
            if i < reads:
                query = {"op": "memory_search", "query": f"seed {i % 7}", "k": 3}
                ids.append(client.send("request", data=query))
        for _ in ids:
            assert client.receive()["ok"]


def test_mirrored_reads_match_and_a_wrong_shadow_mismatches(make_tree, tmp_path: Path) -> None:
    tree = make_tree(o_supervisor=OSUP).start()
    with tree.data_client() as client:
        for i in range(40):
            block = {"op": "memory_add", "id": f"s{i}", "text": f"seed {i % 7}"}
            client.request("request", data=block)
    assert tree.cli("shadow", "start", "s1").returncode == 0
    bad = tree.cli("mirror", "start", "--to", "nope")
    assert bad.returncode == 1 and "no shadow 'nope'" in bad.stderr
    started = tree.cli("mirror", "start", "--to", "s1", "--ratio", "1", "--id", "m1")
    assert started.returncode == 0 and "mirror m1 started" in started.stdout
    wait_for(lambda: tree.agents()["main"]["mirror_ratio"] == 1.0, what="the main to mirror")

    _load(tree, reads=150, writes=30)  # writes are never mirrored: only the searches are

    def settled() -> dict[str, Any] | None:
        arm = _status(tree)[0]["arms"][0]
        return arm if arm["sent"] + arm["dropped"] == 150 and not arm["in_flight"] else None

    first = arm = wait_for(settled, what="every search copied and answered")
    assert arm["error"] == 0 and arm["mismatch"] == 0
    assert arm["match"] + arm["stale"] == arm["sent"] and arm["match"] > 0
    assert arm["latency_ms"]["p50"] > 0
    # the agent's own handling, waits for a CPU out: inside every round trip its manager timed
    assert 0 < arm["service_ms"]["p50"] <= arm["latency_ms"]["p50"]

    # The shadow's search now scores every hit 1 higher: same state, other answers.
    source = Path(memory_system.__file__).read_text()
    wrong = source.replace("float(scores[i])) for i in top]", "float(scores[i]) + 1) for i in top]")
    assert wrong != source
    (tmp_path / "wrong.py").write_text(wrong)
    assert tree.cli("hot-reload", str(tmp_path / "wrong.py"), "--id", "s1").returncode == 0
    _load(tree, reads=60, writes=0)
    arm = wait_for(
        lambda: (
            (a := _status(tree)[0]["arms"][0])["sent"] + a["dropped"] == 210
            and not a["in_flight"]
            and a
        ),
        what="the second round answered",
    )
    sent, stale = arm["sent"] - first["sent"], arm["stale"] - first["stale"]
    assert arm["match"] == first["match"] and arm["mismatch"] == sent - stale > 0, arm

    samples = tree.request("call", name="health", request=["samples", "m1"])
    assert {s["outcome"] for s in samples} >= {"match", "mismatch"}
    stopped = tree.cli("mirror", "stop", "m1", "--json")
    assert stopped.returncode == 0 and json.loads(stopped.stdout)["copies"] == 210
    assert _status(tree) == []
    wait_for(lambda: tree.agents()["main"]["mirror_ratio"] == 0.0, what="the main to stop")
    assert tree.agent_request({"op": "stats"})["blocks"] == 70


def _rescored(tmp_path: Path) -> Path:
    """The shipped search, every score 1 higher: the same hits, other answers."""
    source = Path(memory_system.__file__).read_text()
    wrong = source.replace("float(scores[i])) for i in top]", "float(scores[i]) + 1) for i in top]")
    assert wrong != source
    (tmp_path / "rescored.py").write_text(wrong)
    return tmp_path / "rescored.py"


def _mirror_searches(tree: Any, tmp_path: Path, searches: int) -> dict[str, Any]:
    """Seed 40 blocks, mirror ``searches`` to a rescored shadow; the mirror's figures."""
    with tree.data_client() as client:
        for i in range(40):
            client.request("request", data={"op": "memory_add", "id": f"s{i}", "text": f"seed {i}"})
    assert tree.cli("shadow", "start", "s1").returncode == 0
    assert tree.cli("hot-reload", str(_rescored(tmp_path)), "--id", "s1").returncode == 0
    assert tree.cli("mirror", "start", "--to", "s1", "--ratio", "1", "--id", "m1").returncode == 0
    wait_for(lambda: tree.agents()["main"]["mirror_ratio"] == 1.0, what="the main to mirror")
    _load(tree, reads=searches, writes=0)

    def settled() -> dict[str, Any] | None:
        mirror = _status(tree)[0]
        arm = mirror["arms"][0]
        return mirror if arm["sent"] + arm["dropped"] == searches and not arm["in_flight"] else None

    return wait_for(settled, what="every search copied and answered")


def test_a_compare_hook_says_when_answers_agree(make_tree, tmp_path: Path) -> None:
    hook = "osup_mp.evolution.compare:same_ids"
    tree = make_tree(o_supervisor=OSUP, evolution={"compare": hook}).start()
    mirror = _mirror_searches(tree, tmp_path, 60)
    arm = mirror["arms"][0]
    assert (mirror["compare"], mirror["compare_errors"]) == (hook, 0)
    assert arm["mismatch"] == 0 and arm["match"] > 0, arm  # other scores, the same ids


def test_a_hook_that_cannot_load_leaves_exact_comparison_and_says_so(
    make_tree, tmp_path: Path
) -> None:
    hook = "osup_mp.evolution.compare:no_such_function"
    tree = make_tree(o_supervisor=OSUP, evolution={"compare": hook}).start()
    mirror = _mirror_searches(tree, tmp_path, 30)
    assert mirror["compare"].startswith("exact ([evolution] compare")
    assert "has no function no_such_function" in mirror["compare"]
    arm = mirror["arms"][0]
    assert arm["mismatch"] > 0 and arm["mismatch"] + arm["stale"] == arm["sent"], arm
    assert "answers compared exactly" in tree.log_text
