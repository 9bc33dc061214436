"""Integration tests of the root supervisor: strategies, restart types, intensity, death."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
from support import Tree, gone, tagged_processes, wait_for

from osup_mp.client import Client
from osup_mp.runtime.supervisor import Strategy


def _kill(pid: int | None) -> None:
    assert pid is not None
    os.kill(pid, signal.SIGKILL)


def _replaced(tree: Tree, before: dict[str, int], names: set[str]) -> dict[str, int] | None:
    """Pids once exactly ``names`` have new pids and every component runs again."""
    now = tree.running_pids()
    if now is None or any(now[n] == before[n] for n in names):
        return None
    return now


# A tree of two components the tests that only need one running share (see shared_tree);
# they restart its components one after the other, never too often for it.
SHARED_AB = ("a:permanent", "b:permanent")
SHARED_POLICY = {"max_restarts": 1000, "max_seconds": 1}


def _restarts(tree: Tree) -> dict[str, int]:
    return {c["name"]: c["restarts"] for c in tree.status()["components"]}


def test_one_for_one_kill_each_component(shared_tree) -> None:
    tree = shared_tree(*SHARED_AB, supervisor=SHARED_POLICY)
    restarts = _restarts(tree)
    for victim in ("telemetry", "a", "b"):
        before = wait_for(tree.running_pids)
        _kill(before[victim])
        after = wait_for(lambda: _replaced(tree, before, {victim}), what=f"{victim} replaced")
        assert after[victim] != before[victim]
        for other in set(before) - {victim}:
            assert after[other] == before[other], f"{other} was restarted with {victim}"
    now = _restarts(tree)
    assert {name: now[name] - restarts[name] for name in now} == {"telemetry": 1, "a": 1, "b": 1}


@pytest.mark.parametrize(
    ("strategy", "victim", "restarted"),
    [
        (Strategy.ONE_FOR_ALL, "b", {"telemetry", "a", "b", "c"}),
        (Strategy.REST_FOR_ONE, "b", {"b", "c"}),
        (Strategy.REST_FOR_ONE, "c", {"c"}),
    ],
)
def test_strategies_restart_the_right_siblings(shared_tree, strategy, victim, restarted) -> None:
    tree = shared_tree(
        "a:permanent",
        "b:permanent",
        "c:permanent",
        supervisor={"strategy": strategy.value, **SHARED_POLICY},
    )
    before = wait_for(tree.running_pids)
    _kill(before[victim])
    after = wait_for(lambda: _replaced(tree, before, restarted), what="siblings restarted")
    for name in before:
        assert (after[name] != before[name]) == (name in restarted), name
    # The tree answers calls on every restarted component again.
    for name in restarted - {"telemetry"}:
        assert tree.request("call", name=name, request=["pid"]) == after[name]


def test_restart_types(make_tree) -> None:
    tree = make_tree().start("perm:permanent", "trans:transient", "temp:temporary", "t2:transient")
    before = wait_for(tree.running_pids)
    # transient + normal exit: not restarted, stays listed as stopped
    assert tree.request("call", name="trans", request=["exit"]) == "bye"
    wait_for(lambda: tree.pids()["trans"] is None, what="trans stopped")
    # transient + abnormal exit: restarted
    _kill(before["t2"])
    wait_for(lambda: (tree.pids()["t2"] or before["t2"]) != before["t2"], what="t2 restarted")
    # temporary: never restarted, removed from the tree
    _kill(before["temp"])
    wait_for(lambda: "temp" not in tree.pids(), what="temp removed")
    # permanent + normal exit: restarted anyway
    assert tree.request("call", name="perm", request=["exit"]) == "bye"
    wait_for(lambda: (tree.pids()["perm"] or before["perm"]) != before["perm"], what="perm back")
    states = {c["name"]: c for c in tree.status()["components"]}
    assert states["trans"]["state"] == "stopped"
    assert states["trans"]["last_exit"] == "exited with status 0"


def test_intensity_exceeded_escalates(make_tree) -> None:
    tree = make_tree(supervisor={"max_restarts": 2, "max_seconds": 30})
    tree.start("fragile:permanent", "other:permanent")
    for _ in range(3):
        pids = wait_for(tree.running_pids)
        _kill(pids["fragile"])
        if _ == 2:
            break
        wait_for(lambda p=pids: _replaced(tree, p, {"fragile"}), what="fragile back")
    assert tree.wait_exit() != 0
    log = tree.log_text
    assert "restart intensity exceeded: fragile" in log
    assert not tree.cfg.control_socket.exists()
    assert not tree.cfg.pidfile.exists()


def test_crash_in_handler_fails_the_call_and_restarts(shared_tree) -> None:
    tree = shared_tree(*SHARED_AB, supervisor=SHARED_POLICY)
    before = wait_for(tree.running_pids)
    with pytest.raises(Exception, match="crashed"):
        tree.request("call", name="a", request=["crash"])
    after = wait_for(lambda: _replaced(tree, before, {"a"}), what="a replaced")
    assert tree.request("call", name="a", request=["echo", 42]) == 42
    assert after["a"] != before["a"]


def test_components_call_each_other_directly(shared_tree) -> None:
    tree = shared_tree(*SHARED_AB, supervisor=SHARED_POLICY)
    pids = wait_for(tree.running_pids)
    assert tree.request("call", name="a", request=["peer_call", "b", ("pid",)]) == pids["b"]
    # The callee restarts: the caller reconnects on its next call.
    _kill(pids["b"])
    new = wait_for(lambda: _replaced(tree, pids, {"b"}), what="b replaced")
    assert tree.request("call", name="a", request=["peer_call", "b", ("pid",)]) == new["b"]
    assert tree.request("call", name="a", request=["later"]) == "later"


def test_a_connect_to_a_dead_unreaped_peer_waits_for_its_restart(make_tree) -> None:
    """A caller may see its pipe to a peer close (and ask for a new one) before the peer's
    exit reaches the supervisor: the supervisor must wait for the restart, not crash on the
    dead peer's channel."""
    tree = make_tree().start("a:permanent", "b:permanent")
    pids = wait_for(tree.running_pids)
    with Client.for_config(tree.cfg, timeout=20) as client:
        client.send("call", name="b", request=["deaf", 1.0])
        client.flush()
        wait_for(lambda: "deaf for 1s" in tree.log_text, what="b deaf")
        answer = tree.request("call", name="a", request=["peer_call", "b", ("pid",)])
    new = wait_for(lambda: _replaced(tree, pids, {"b"}), what="b replaced")
    assert answer == new["b"]
    assert tree.proc is not None and tree.proc.poll() is None


def test_sigterm_interrupts_a_blocking_call(make_tree) -> None:
    tree = make_tree().start("a:permanent", "b:permanent")
    pids = wait_for(tree.running_pids)
    with Client.for_config(tree.cfg, timeout=10) as client:
        # a calls b (5 s timeout), b never answers: a sits in a blocking call.
        client.send("call", name="a", request=["peer_call", "b", ["never"]])
        client.flush()
        wait_for(lambda: tree.request("call", name="b", request=["held"]) == 1, what="b holds")
        os.kill(pids["a"], signal.SIGTERM)
        t0 = time.monotonic()
        answer = client.receive()
    assert answer["ok"] is False and "shutting down" in answer["error"]
    wait_for(lambda: gone(pids["a"]), timeout=5.0, what="a to exit")
    assert time.monotonic() - t0 < 1.5  # not the call's 5 s, nor the 2 s SIGKILL fallback
    wait_for(lambda: _replaced(tree, pids, {"a"}), what="a restarted")
    assert "a: crashed" not in tree.log_text  # a clean stop, not a crash


def test_sigkill_parent_leaves_no_component(make_tree) -> None:
    tree = make_tree().start("a:permanent", "b:permanent")
    pids = list(wait_for(tree.running_pids).values())
    assert tree.proc is not None
    tree.proc.kill()
    tree.proc.wait(5)
    t0 = time.monotonic()

    def all_gone() -> bool:
        return all(gone(p) for p in pids)

    wait_for(all_gone, timeout=2.0, what="components to die with the parent")
    assert time.monotonic() - t0 < 2.0
    # The segment stays behind; the next start rebuilds it.
    assert os.path.exists("/dev/shm" + tree.cfg.o_supervisor.shared_memory_name)
    tree.start("a:permanent")
    assert "rebuilt stale shared memory" in tree.log_text


def _hold_tree_lock(tree: Tree, until: str) -> subprocess.Popen[bytes]:
    """A process holding the tree lock, as a component of a tree whose supervisor died holds
    it while it stops, until the tree's log says ``until`` (30 s at most)."""
    tree.cfg.o_supervisor.run_dir.mkdir(parents=True, exist_ok=True)
    code = (
        "import fcntl, pathlib, sys, time\n"
        "f = open(sys.argv[1], 'a')\n"
        "fcntl.flock(f, fcntl.LOCK_SH)\n"
        "print('held', flush=True)\n"
        "log, deadline = pathlib.Path(sys.argv[2]), time.monotonic() + 30\n"
        "while time.monotonic() < deadline:\n"
        "    if log.exists() and sys.argv[3] in log.read_text():\n"
        "        break\n"
        "    time.sleep(0.01)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(tree.cfg.tree_lock), str(tree.cfg.log_file), until],
        stdout=subprocess.PIPE,
    )
    assert holder.stdout is not None
    assert holder.stdout.readline() == b"held\n"
    return holder


def test_a_new_tree_waits_for_the_previous_trees_processes(make_tree) -> None:
    tree = make_tree()
    holder = _hold_tree_lock(tree, "still stopping")
    try:
        tree.start("a:permanent")
        assert holder.wait(5) == 0  # it was waited for, not killed
        log = tree.log_text
        assert f"still stopping (pids {holder.pid})" in log
        assert log.index("previous tree's processes are gone") < log.index("tree is up")
    finally:
        holder.kill()
        holder.wait()


def test_a_new_tree_kills_what_outlives_its_stop_time(make_tree) -> None:
    # The longest stop time is the supervisor's shutdown_timeout plus the agent's stop_timeout.
    tree = make_tree(supervisor={"shutdown_timeout": 300}, agent={"stop_timeout": 200})
    holder = _hold_tree_lock(tree, "never")
    try:
        tree.start("a:permanent")
        assert holder.wait(5) == -signal.SIGKILL
        assert f"pids {holder.pid} of a previous tree outlived their stop time" in tree.log_text
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_is_a_clean_stop(make_tree, sig) -> None:
    tree = make_tree().start("a:permanent")
    pids = list(wait_for(tree.running_pids).values())
    assert tree.proc is not None
    tree.proc.send_signal(sig)
    assert tree.wait_exit() == 0
    assert not any(psutil.pid_exists(p) for p in pids)
    assert not tree.cfg.control_socket.exists()
    assert not tree.cfg.pidfile.exists()


def test_failing_init_stops_start_with_reason(make_tree, tmp_path) -> None:
    flag = tmp_path / "refuse"
    flag.write_text("")
    tree = make_tree()
    import subprocess
    import sys

    from support import TREE_MAIN

    proc = subprocess.run(
        [sys.executable, str(TREE_MAIN), str(tree.config_path), f"bad:permanent:{flag}"],
        env=tree.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "bad: failed to start: RuntimeError: init refused" in proc.stderr
    assert not tree.cfg.pidfile.exists()


def test_each_process_names_itself(make_tree, tag) -> None:
    tree = make_tree().start()
    pids = wait_for(tree.running_pids)

    def title(pid: int) -> str:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0")[0].decode()

    assert tree.proc is not None
    assert title(tree.proc.pid) == "osup-mp: supervisor"
    for name, pid in pids.items():
        assert title(pid) == f"osup-mp: {name}"
    # The environment survives the new title: the leak check (and operators) still read it.
    assert len(tagged_processes(tag)) >= len(pids) + 1
