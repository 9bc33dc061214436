"""The supervisor's loop never blocks: slow starts, hung inits and stubborn stops are steps of
the loop, so commands and the deaths of other children are served meanwhile."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import psutil
import pytest
from support import TREE_MAIN, Tree, wait_for

from osup_mp.client import Client, ClientError

STATUS_BOUND_S = 0.050


def _worst_status_s(tree: Tree, times: int = 5) -> float:
    worst = 0.0
    with Client.for_config(tree.cfg, timeout=10) as client:
        for _ in range(times):
            t0 = time.perf_counter()
            client.request("status")
            worst = max(worst, time.perf_counter() - t0)
    return worst


def _state(tree: Tree, name: str) -> str | None:
    return next((c["state"] for c in tree.status()["components"] if c["name"] == name), None)


def _replaced_running(tree: Tree, name: str, old_pid: int) -> int | None:
    for c in tree.status()["components"]:
        if c["name"] == name and c["state"] == "running" and c["pid"] not in (None, old_pid):
            return int(c["pid"])
    return None


def _kill_and_time_restart(tree: Tree, name: str) -> float:
    pid = tree.pids()[name]
    assert pid is not None
    t0 = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: _replaced_running(tree, name, pid), 5, interval=0.005, what=f"{name} back")
    return time.monotonic() - t0


def test_a_component_hanging_in_init_blocks_nothing(make_tree) -> None:
    # A child hung in init cannot act on SIGTERM: the stop below SIGKILLs it after its
    # shutdown timeout.
    hung = "hung:permanent:init_delay=3600,start_timeout=600,shutdown_timeout=0.5"
    tree = make_tree().start("a:permanent", hung, until="starting")
    wait_for(lambda: _state(tree, "hung") == "starting", what="hung to be starting")
    status = tree.status()
    assert status["state"] == "starting"
    uptimes = {c["name"]: c["uptime_s"] for c in status["components"]}
    assert uptimes["hung"] is None and uptimes["a"] is not None  # up once ready, not before
    assert _worst_status_s(tree) < STATUS_BOUND_S
    # Another child's death is served at once, not after the hung start.
    assert _kill_and_time_restart(tree, "a") < 2.0
    assert _state(tree, "hung") == "starting"
    assert "tree is up" not in tree.log_text  # ordered start: not up until the last is ready
    # A stop while a child still starts is a stop, not a wait for the start.
    assert tree.proc is not None
    t0 = time.monotonic()
    tree.proc.send_signal(signal.SIGTERM)
    assert tree.wait_exit() == 0
    assert time.monotonic() - t0 < 10.0


def test_a_slow_start_is_timed_out_by_the_loop(make_tree) -> None:
    tree = make_tree()
    slow = "slow:permanent:init_delay=60,start_timeout=0.3,shutdown_timeout=0.5"
    proc = subprocess.run(
        [sys.executable, str(TREE_MAIN), str(tree.config_path), slow],
        env=tree.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "slow: failed to start: not ready after 0.3s" in proc.stderr
    assert not tree.cfg.pidfile.exists()


def test_ordered_start_and_reverse_stop(make_tree) -> None:
    tree = make_tree().start("a:permanent", "b:permanent:init_delay=0.5", "c:permanent")
    wait_for(tree.running_pids, what="every component running")
    tree.stop()
    log = tree.log_text
    started = [log.index(f"started {n} (") for n in ("telemetry", "a", "b", "c")]
    stopped = [log.index(f"stopped {n} (") for n in ("c", "b", "a", "telemetry")]
    assert started == sorted(started) and stopped == sorted(stopped)
    assert started[-1] < log.index("tree is up")


def test_a_child_ignoring_sigterm_delays_only_itself(make_tree) -> None:
    stubborn_s = 1.0  # its shutdown timeout
    stubborn = f"stubborn:permanent:ignore_term,shutdown_timeout={stubborn_s:g}"
    tree = make_tree().start("a:permanent", stubborn)
    before = wait_for(tree.running_pids, what="every component running")
    # The operator restart of the stubborn child waits out its shutdown timeout...
    answer: dict[str, Any] = {}

    def restart() -> None:
        with Client.for_config(tree.cfg, timeout=30) as client:
            answer["value"] = client.request("restart", name="stubborn")

    thread = threading.Thread(target=restart)
    t0 = time.monotonic()
    thread.start()
    try:
        wait_for(lambda: _state(tree, "stubborn") == "stopping", what="stubborn stopping")
        # ...while everything else is served.
        assert _worst_status_s(tree) < STATUS_BOUND_S
        assert _kill_and_time_restart(tree, "a") < 1.0
        assert _state(tree, "stubborn") == "stopping"  # all of it while stubborn stopped
    finally:
        thread.join(30)
    assert stubborn_s - 0.1 < time.monotonic() - t0 < 10.0
    assert answer["value"]["pid"] != before["stubborn"]
    assert f"stubborn did not stop within {stubborn_s:g}s: SIGKILL" in tree.log_text
    # The tree's own stop: the stubborn child costs its own timeout, the others their own stop.
    assert tree.proc is not None
    t0 = time.monotonic()
    tree.proc.send_signal(signal.SIGTERM)
    assert tree.wait_exit() == 0
    assert time.monotonic() - t0 < stubborn_s + 3.0


def test_shadows_start_in_parallel(make_tree, tmp_path) -> None:
    tree = make_tree(o_supervisor={"max_concurrent_shadows": 2}).start()
    wait_for(tree.running_agent, what="main agent")
    reference = [sys.executable, "-m", "osup_mp.agent.reference"]
    # The slow shadow's start-up lasts until the test lets it go on (the flag file).
    go = tmp_path / "go"
    wait_for_go = f'while [ ! -e "{go}" ]; do sleep 0.01; done; exec "$@"'
    slow_command = ["/bin/sh", "-c", wait_for_go, "sh", *reference]
    answers: dict[str, Any] = {}

    def start_slow() -> None:
        with Client.for_config(tree.cfg, timeout=60) as client:
            try:
                answers["slow"] = client.request("shadow_start", id="slow", command=slow_command)
            except ClientError as exc:
                answers["slow"] = exc

    thread = threading.Thread(target=start_slow)
    thread.start()
    try:
        wait_for(lambda: _state(tree, "agent:slow") == "starting", what="slow shadow starting")
        assert _worst_status_s(tree) < STATUS_BOUND_S
        t0 = time.monotonic()
        fast = tree.request("shadow_start", id="fast")
        assert fast["id"] == "fast"
        assert time.monotonic() - t0 < 4.0
        assert _state(tree, "agent:slow") == "starting"  # the fast one did not wait for it
    finally:
        go.touch()
        thread.join(60)
    assert answers["slow"]["id"] == "slow", answers
    assert {a["id"] for a in tree.status()["agents"]} == {"main", "slow", "fast"}


def test_a_bug_in_the_loop_takes_no_child_with_it_alive() -> None:
    """An exception escaping the supervisor's loop (a bug) kills the children before it
    propagates: nothing outlives the tree, and the process does not hang at exit."""
    from support.components import Echo

    from osup_mp.runtime.supervisor import ChildSpec, Supervisor

    sup = Supervisor([ChildSpec("a", Echo, shutdown_timeout=2.0)])
    pids: list[int] = []

    def bug() -> None:
        child = sup.child("a")
        if child is not None and child.state.value == "running":
            pids.append(child.pid or 0)
            raise RuntimeError("a bug in a loop hook")

    sup.after_events.append(bug)
    with pytest.raises(RuntimeError, match="a bug in a loop hook"):
        sup.run()
    assert pids and pids[0] > 0
    wait_for(lambda: not psutil.pid_exists(pids[0]), 5, what="the child killed")


def test_a_restarting_peer_holds_up_no_caller(make_tree, tmp_path) -> None:
    """A cast or an asynchronous call to a peer that is restarting waits in their channel,
    not in the caller: the caller serves on meanwhile, and the peer gets both once it is up
    (a blocking connect held the caller until the peer's start ended, 10 s at most)."""
    hold = tmp_path / "hold"
    tree = make_tree().start("a:permanent", f"b:permanent:hold={hold}")
    pids = wait_for(tree.running_pids)
    assert tree.request("call", name="a", request=["peer_call", "b", ["pid"]]) == pids["b"]
    hold.touch()  # b's next start waits until the test removes the file
    os.kill(pids["b"], signal.SIGKILL)
    wait_for(lambda: _state(tree, "b") == "starting", what="b restarting")
    with Client.for_config(tree.cfg, timeout=20) as client:
        client.send("call", name="a", request=["peer_call_async", "b", ["pid"]])
        client.flush()
        t0 = time.monotonic()
        assert tree.request("call", name="a", request=["peer_cast", "b", ["hello"]]) == "cast"
        assert tree.request("call", name="a", request=["pid"]) == pids["a"]
        assert time.monotonic() - t0 < 1.0
        assert _state(tree, "b") == "starting"
        hold.unlink()
        answer = client.receive()
    new = wait_for(lambda: _replaced_running(tree, "b", pids["b"]), what="b back")
    assert answer["ok"] and answer["data"] == new, answer
    wait_for(lambda: "b: unexpected cast ['hello']" in tree.log_text, what="the cast delivered")
    assert tree.pids()["a"] == pids["a"]  # never restarted


def test_a_peer_that_does_not_read_costs_the_caller_no_wake_ups(make_tree, tmp_path) -> None:
    """What does not fit a peer's socket waits in the caller until the socket has room:
    the caller's loop sleeps meanwhile (it used to retry every millisecond), and nothing
    is lost once the peer reads."""
    hold = tmp_path / "hold"
    tree = make_tree().start("a:permanent", f"b:permanent:hold={hold}")
    pids = wait_for(tree.running_pids)
    hold.touch()
    os.kill(pids["b"], signal.SIGKILL)
    wait_for(lambda: _state(tree, "b") == "starting", what="b restarting")
    big = ["echo", "x" * 400_000]  # two of them are more than a socket buffer holds
    with Client.for_config(tree.cfg, timeout=20) as client:
        for _ in range(2):
            client.send("call", name="a", request=["peer_call_async", "b", big])
        client.flush()
        assert tree.request("call", name="a", request=["pid"]) == pids["a"]  # a serves on
        caller = psutil.Process(pids["a"])
        before = caller.num_ctx_switches().voluntary  # one per sleep of its loop
        time.sleep(1.0)  # a measuring window, not a wait for a condition
        wake_ups = caller.num_ctx_switches().voluntary - before
        assert wake_ups < 50, f"a woke {wake_ups} times in 1 s, waiting for b"
        hold.unlink()
        answers = [client.receive() for _ in range(2)]
    assert all(a["ok"] and a["data"] == big[1] for a in answers), [a["ok"] for a in answers]
    assert tree.pids()["a"] == pids["a"]


def test_a_request_larger_than_a_socket_buffer_goes_through_at_once(make_tree) -> None:
    """The supervisor writes what a child's full socket does not take as soon as it has
    room: it used to wait for the loop's next event, which in a quiet tree may not come
    before the caller's timeout."""
    tree = make_tree().start("a:permanent")
    wait_for(tree.running_pids)
    big = "x" * 1_000_000
    t0 = time.monotonic()
    assert tree.request("call", name="a", request=["echo", big], timeout=20) == big
    assert time.monotonic() - t0 < 2.0
