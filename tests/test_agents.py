"""Agents under supervision: crash, hang, bad frames, crash loops, shadows and their limits."""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from typing import Any

import psutil
import pytest
from support import SCRIPTED_AGENT, Tree, gone, wait_for

from osup_mp.client import Client, ClientError

FAST = {
    "o_supervisor": {"heartbeat_interval": 200, "heartbeat_timeout": 1000},
    "agent": {"backoff_base": 20, "backoff_cap": 200, "max_retries": 3, "ready_timeout": 10000},
    "watchdog": {"shadow_rss_mb": 120},
}


def _sections(**extra: dict) -> dict[str, dict]:
    """FAST with the scripted agent, and ``extra`` on top."""
    sections = {k: dict(v) for k, v in FAST.items()}
    sections["o_supervisor"].update(
        gerbil_executable=sys.executable, gerbil_main_script=str(SCRIPTED_AGENT)
    )
    for key, values in extra.items():
        sections.setdefault(key, {}).update(values)
    return sections


def scripted(make_tree, **extra: dict) -> Tree:
    return make_tree(**_sections(**extra))


# The trees the tests that only need one running share (see shared_tree). Tests kill their
# agent (and its manager) one after the other: each comes back at once, never after a
# crash-loop backoff, and never counts towards FATAL.
SHARED_POLICY = {
    "agent": {"startsecs": 0, "max_restarts": 1000, "max_seconds": 1},
    "supervisor": {"max_restarts": 1000, "max_seconds": 1},
}


@pytest.fixture
def shared_scripted(shared_tree) -> Tree:
    """A running tree of the scripted agent."""
    return shared_tree(**_sections(**SHARED_POLICY))


@pytest.fixture
def shared_reference(shared_tree) -> Tree:
    """A running tree of the reference agent."""
    sections = {k: dict(v) for k, v in FAST.items()}
    for key, values in SHARED_POLICY.items():
        sections.setdefault(key, {}).update(values)
    return shared_tree(**sections)


def _replaced(tree: Tree, old_pid: int) -> dict | None:
    agent = tree.running_agent()
    return agent if agent and agent["pid"] != old_pid else None


def test_killed_agent_is_replaced_and_serves(shared_reference) -> None:
    tree = shared_reference
    added = tree.agent_request({"op": "memory_add", "text": "kept across nothing yet"})
    assert "id" in added
    first = wait_for(tree.running_agent)
    manager = tree.pids()["agent:main"]
    os.kill(first["pid"], signal.SIGKILL)
    second = wait_for(lambda: _replaced(tree, first["pid"]), what="agent replaced")
    assert second["restarts"] == first["restarts"] + 1
    assert tree.agent_request({"op": "stats"})["role"] == "main"
    assert tree.pids()["agent:main"] == manager  # the manager itself survived
    assert "killed by SIGKILL" in tree.log_text


def test_hung_agent_is_replaced(shared_reference) -> None:
    tree = shared_reference
    first = wait_for(tree.running_agent)
    blocks = tree.agent_request({"op": "stats"})["blocks"]
    os.kill(first["pid"], signal.SIGSTOP)
    second = wait_for(lambda: _replaced(tree, first["pid"]), timeout=10, what="hung agent replaced")
    assert second["state"] == "RUNNING"
    assert "heartbeat timeout" in tree.log_text
    assert tree.agent_request({"op": "stats"})["blocks"] == blocks


@pytest.mark.parametrize(
    ("misbehaviour", "logged"),
    [
        ("garbage", "malformed frame"),
        ("oversized", "malformed frame"),
        ("nonmap", "malformed frame"),
        ("truncated", "exited with status 0 in the middle of a frame (10 bytes of it received)"),
    ],
)
def test_bad_frames_restart_the_agent_not_the_manager(
    shared_scripted, misbehaviour, logged
) -> None:
    tree = shared_scripted
    first = wait_for(tree.running_agent)
    manager = tree.pids()["agent:main"]
    with pytest.raises(ClientError):
        tree.agent_request({"do": misbehaviour})
    wait_for(lambda: _replaced(tree, first["pid"]), what="agent replaced after a bad frame")
    assert tree.agent_request({"echo": 1}) == {"echo": 1}
    assert tree.pids()["agent:main"] == manager
    assert logged in tree.log_text


def test_crash_looping_agent_reaches_fatal(make_tree, tmp_path) -> None:
    flag = tmp_path / "exit-after-ready"
    wrapper = tmp_path / "agent.sh"
    # The agent runs normally until the flag exists; then every start exits after ready.
    wrapper.write_text(
        "#!/bin/sh\n"
        f'if [ -e "{flag}" ]; then export SCRIPTED_EXIT_AFTER=0; fi\n'
        f'exec "{sys.executable}" "{SCRIPTED_AGENT}" "$@"\n'
    )
    wrapper.chmod(0o755)
    tree = make_tree(
        **{**FAST, "o_supervisor": {**FAST["o_supervisor"], "gerbil_executable": str(wrapper)}}
    ).start()
    first = wait_for(tree.running_agent)
    flag.write_text("")
    os.kill(first["pid"], signal.SIGKILL)

    def fatal() -> dict | None:
        agent = tree.agents()["main"]
        return agent if agent["state"] == "FATAL" else None

    agent = wait_for(fatal, timeout=20, what="agent to become FATAL")
    assert "consecutive failed starts" in agent["fatal_reason"]
    assert agent["restarts"] >= 3
    assert "(failed while starting)" in tree.log_text and "FATAL" in tree.log_text
    with pytest.raises(ClientError, match="FATAL"):
        tree.agent_request({"op": "stats"})
    # An operator restart after fixing the cause brings it back.
    flag.unlink()
    out = tree.cli("agent-restart")
    assert out.returncode == 0 and "agent main restarting" in out.stdout, out.stderr
    wait_for(tree.running_agent, what="agent back after operator restart")


def test_shadow_over_rss_limit_is_killed_main_keeps_serving(shared_scripted) -> None:
    tree = shared_scripted
    restarts = tree.running_agent()["restarts"]
    hog = f"env SCRIPTED_HOG_MB=200 {sys.executable} {SCRIPTED_AGENT}"
    out = tree.cli("shadow", "start", "hog", "--command", hog)
    assert out.returncode == 0, out.stderr

    def killed() -> dict | None:
        agent = tree.agents().get("hog")
        return agent if agent and agent["state"] == "EXITED" else None

    agent = wait_for(killed, timeout=15, what="shadow killed by its RSS limit")
    assert agent["last_kill_reason"].startswith("killed: rss ")
    assert "> limit 120 MB" in agent["last_kill_reason"]
    assert tree.running_agent()["restarts"] == restarts  # main was not touched
    assert tree.agent_request({"echo": 2}) == {"echo": 2}
    listed = tree.cli("shadow", "list")
    assert "hog" in listed.stdout and "killed: rss" in listed.stdout
    assert tree.cli("shadow", "stop", "hog").returncode == 0
    assert "hog" not in tree.agents()


def test_cpu_placement_keeps_the_mirror_off_the_main_cpus(make_tree) -> None:
    """``[agent] main_cpus`` pins the main's manager, agent and standby; ``[watchdog]
    shadow_cpus`` the shadows' managers and agents and the splitter; the rest is unpinned."""
    host = sorted(os.sched_getaffinity(0))
    if len(host) < 2:
        pytest.skip("needs two CPUs")
    mine, theirs = host[0], host[1]
    tree = make_tree(
        o_supervisor=FAST["o_supervisor"],
        agent={**FAST["agent"], "main_cpus": [mine], "standby": True},
        watchdog={**FAST["watchdog"], "shadow_cpus": [theirs]},
    ).start()
    assert tree.cli("shadow", "start", "s1").returncode == 0
    standby = wait_for(
        lambda: (tree.agents()["main"]["standby"] or {}).get("pid"), what="the standby"
    )
    agents = tree.agents()
    components = {c["name"]: c["pid"] for c in tree.status()["components"]}
    placed = {
        "main manager": components["agent:main"], "main agent": agents["main"]["pid"],
        "standby": standby, "shadow manager": components["agent:s1"],
        "shadow agent": agents["s1"]["pid"], "splitter": components["splitter"],
        "wal": components["wal"],
    }  # fmt: skip
    cpus = {name: os.sched_getaffinity(pid) for name, pid in placed.items()}
    assert cpus == {
        "main manager": {mine}, "main agent": {mine}, "standby": {mine},
        "shadow manager": {theirs}, "shadow agent": {theirs}, "splitter": {theirs},
        "wal": set(host),
    }  # fmt: skip

    def shown() -> dict[str, Any] | None:  # status shows them too, once sampled
        cpus = {c["name"]: c["cpus"] for c in tree.status()["components"]}
        return cpus if cpus.get("agent:s1") else None

    assert {
        name: cpus
        for name, cpus in wait_for(shown, what="the shadow's manager sampled").items()
        if name in ("agent:main", "agent:s1", "splitter", "wal")
    } == {"agent:main": [mine], "agent:s1": [theirs], "splitter": [theirs], "wal": host}
    table = tree.cli("status").stdout
    assert "CPUS" in table and re.search(rf"agent:main .* {mine} ", table), table


def test_shadows_by_id(make_tree) -> None:
    osup = {**FAST["o_supervisor"], "max_concurrent_shadows": 2}
    tree = make_tree(**{**FAST, "o_supervisor": osup}).start()
    assert tree.cli("shadow", "start", "s1").returncode == 0
    again = tree.cli("shadow", "start", "s1")
    assert again.returncode == 1 and "already exists" in again.stderr
    assert tree.cli("shadow", "start", "s2").returncode == 0
    third = tree.cli("shadow", "start", "s3")  # max_concurrent_shadows = 2
    assert third.returncode == 1 and "max_concurrent_shadows (2)" in third.stderr
    agents = tree.agents()
    assert {agents["s1"]["role"], agents["s2"]["role"]} == {"shadow"}
    assert agents["s1"]["slot"] != agents["s2"]["slot"]
    # Shadows run on spare cycles: niced, with one thread for numerical libraries; so do
    # the processes that relay their work (their managers and the splitter), not the main's.
    shadow, main = psutil.Process(agents["s1"]["pid"]), psutil.Process(agents["main"]["pid"])
    ours = os.getpriority(os.PRIO_PROCESS, 0)
    assert (shadow.nice(), main.nice()) == (10, ours)
    pids = tree.pids()
    nice = {name: psutil.Process(pids[name]).nice() for name in ("agent:s1", "splitter")}
    assert nice == {"agent:s1": 10, "splitter": 10}
    assert psutil.Process(pids["agent:main"]).nice() == ours
    assert shadow.environ()["OPENBLAS_NUM_THREADS"] == "1"
    assert (
        tree.request("call", name="agent:s1", request=["request", {"op": "stats"}])["role"]
        == "shadow"
    )
    assert tree.cli("shadow", "stop", "s1").returncode == 0
    assert tree.cli("shadow", "start", "s3").returncode == 0
    bad = tree.cli("shadow", "stop", "nope")
    assert bad.returncode == 1 and "no shadow" in bad.stderr


def test_hot_reload_with_rollback(make_tree, tmp_path) -> None:
    tree = make_tree(**FAST).start()
    tree.agent_request({"op": "memory_add", "text": "alpha beta", "id": "a"})
    good = tmp_path / "good.py"
    good.write_text(
        "import numpy as np\nfrom osup_mp.agent.reference.memory_system import embed, DIM\n"
        "def search(matrix, query, k):\n"
        "    return [(i, 1.0) for i in range(min(k, matrix.shape[0]))]\n"
    )
    out = tree.cli("hot-reload", str(good))
    assert out.returncode == 0, out.stderr
    hits = tree.agent_request({"op": "memory_search", "query": "zzz", "k": 1})
    assert hits[0]["score"] == 1.0  # the new code answers
    broken = tmp_path / "broken.py"
    broken.write_text("def embed(text):\n    return None\n")
    out = tree.cli("hot-reload", str(broken))
    assert out.returncode == 1 and "rejected" in out.stderr
    # Code that imports but raises at run time is rolled back on first use.
    raising = tmp_path / "raising.py"
    raising.write_text(
        "from osup_mp.agent.reference.memory_system import embed, DIM\n"
        "CALLS = []\n"
        "def search(matrix, query, k):\n"
        "    if len(CALLS) > 0:\n"
        "        raise RuntimeError('new code fails in production')\n"
        "    CALLS.append(1)\n"
        "    return [(i, 0.5) for i in range(min(k, matrix.shape[0]))]\n"
    )
    assert tree.cli("hot-reload", str(raising)).returncode == 0
    tree.agent_request({"op": "memory_search", "query": "alpha", "k": 1})  # self-test used one
    hits = tree.agent_request({"op": "memory_search", "query": "alpha", "k": 1})
    assert hits[0]["score"] == 1.0  # rolled back to the previous (good) module
    wait_for(lambda: "rolled back" in tree.log_text, what="rollback logged")


def test_manager_crash_takes_its_agent_along(shared_reference) -> None:
    tree = shared_reference
    agent = wait_for(tree.running_agent)
    os.kill(tree.pids()["agent:main"], signal.SIGKILL)
    new = wait_for(lambda: _replaced(tree, agent["pid"]), what="new manager and agent")
    wait_for(lambda: gone(agent["pid"]), what="old agent gone")
    assert new["state"] == "RUNNING"


def test_sigkill_of_the_supervisor_takes_agents_along(make_tree, tag) -> None:
    from support import tagged_processes

    tree = make_tree(**FAST).start()
    wait_for(tree.running_agent)
    everything = [p.pid for p in tagged_processes(tag) if p.pid != tree.proc.pid]
    assert len(everything) >= 6  # components + the agent
    tree.proc.kill()
    tree.proc.wait(5)

    def all_gone() -> bool:
        return all(gone(p) for p in everything)

    wait_for(all_gone, timeout=2.0, what="every component and agent gone within 2 s")
    os.unlink("/dev/shm" + tree.cfg.o_supervisor.shared_memory_name)  # left by the SIGKILL


def test_requests_past_their_deadline_fail_and_late_answers_are_dropped(shared_scripted) -> None:
    tree = shared_scripted
    with tree.data_client(timeout=10.0) as client:
        started = time.monotonic()
        with pytest.raises(ClientError, match="did not answer in time"):
            client.request("request", data={"do": "sleep", "s": 0.6}, timeout=0.15)
        assert time.monotonic() - started < 0.5
        # A later request with an earlier deadline than the one in flight still fails on
        # time: the manager re-arms its single timer for the earliest deadline.
        slow = client.send("request", data={"do": "sleep", "s": 0.6}, timeout=5.0)
        quick = client.send("request", data={"echo": 1}, timeout=0.2)
        first, second = client.receive(), client.receive()
        assert (first["id"], first["ok"]) == (quick, False)
        assert "did not answer in time" in first["error"]
        assert (second["id"], second["ok"], second["data"]) == (slow, True, "slept")
        assert client.request("request", data={"echo": 2}) == {"echo": 2}
    assert "response to unknown id" in tree.log_text  # the late answers, logged and dropped


def test_client_coalesces_sends_and_delivers_them_all(shared_reference) -> None:
    tree = shared_reference
    blocks = tree.agent_request({"op": "stats"})["blocks"]
    path = tree.cfg.data_socket("main")
    with Client(path, timeout=10.0, batch_bytes=1 << 20) as client:
        ids = [client.send("request", data={"op": "stats"}) for _ in range(50)]
        assert client._out  # queued, not written: nothing was waited for yet
        answers = [client.receive() for _ in ids]  # the first wait writes them all
        assert [a["id"] for a in answers] == ids and all(a["ok"] for a in answers)
        client.send("request", data={"op": "memory_add", "text": "sent, never awaited"})
    # close() wrote the last one: the agent got it though nobody read the answer.
    wait_for(
        lambda: tree.agent_request({"op": "stats"})["blocks"] == blocks + 1, what="block added"
    )


@pytest.mark.parametrize("command", ["agent-restart", "stop"])
def test_a_stop_escalates_to_sigkill(make_tree, command: str) -> None:
    """Neither a restart nor the tree's stop waits for ever on an agent ignoring SIGTERM."""
    tree = scripted(make_tree, agent={"stop_timeout": 300}).start()
    agent = wait_for(tree.running_agent)
    assert tree.agent_request({"do": "ignore_term"}) == "ignoring"
    out = tree.cli(command)
    assert out.returncode == 0, out.stderr
    if command == "agent-restart":
        new = wait_for(lambda: _replaced(tree, agent["pid"]), 10, what="SIGKILL and restart")
        assert new["state"] == "RUNNING"
    else:
        wait_for(lambda: tree.proc is not None and tree.proc.poll() is not None, 15, what="stop")
    assert gone(agent["pid"])
    assert "did not stop within 300 ms of SIGTERM; sent SIGKILL" in tree.log_text


@pytest.mark.parametrize("setsid", [False, True], ids=["same-group", "setsid"])
@pytest.mark.parametrize("how", ["crash", "sigkill", "stop"])
def test_an_agents_children_die_with_it(request, setsid: bool, how: str) -> None:
    if how == "stop":
        tree = scripted(request.getfixturevalue("make_tree")).start()
    else:
        tree = request.getfixturevalue("shared_scripted")
    agent = wait_for(tree.running_agent)
    child = tree.agent_request({"do": "spawn", "setsid": setsid})
    assert isinstance(child, int) and not gone(child)
    if how == "crash":
        with pytest.raises(ClientError):
            tree.agent_request({"do": "crash"})
    elif how == "sigkill":
        os.kill(agent["pid"], signal.SIGKILL)
    else:
        tree.stop()
    if how != "stop":
        wait_for(lambda: _replaced(tree, agent["pid"]), what="agent replaced")
    wait_for(lambda: gone(child), timeout=5, what=f"the agent's child {child} gone")
    if how != "stop":
        assert f"left behind: pids {child}" in tree.log_text


def test_a_killed_managers_agent_and_its_children_die_too(shared_scripted) -> None:
    """The main agent is spawned without a pre-exec hook (the fast path); when its manager is
    SIGKILLed, the SDK's own parent-death signal takes the agent, and what the agent spawned
    in a session of its own re-parents to the supervisor, which kills it."""
    tree = shared_scripted
    agent = wait_for(tree.running_agent)
    child = tree.agent_request({"do": "spawn", "setsid": True})
    manager = tree.pids()["agent:main"]
    assert manager is not None
    os.kill(manager, signal.SIGKILL)
    wait_for(lambda: gone(agent["pid"]), timeout=5, what="the agent gone with its manager")
    wait_for(lambda: gone(child), timeout=5, what=f"the agent's child {child} gone")
    wait_for(lambda: _replaced(tree, agent["pid"]), what="a new manager and agent")
    strays = re.search(r"agent:main left \d+ process\(es\) behind: killed pids (.*)", tree.log_text)
    assert strays is not None and str(child) in strays.group(1).split(", ")
