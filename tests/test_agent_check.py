"""``osup-mp agent-check`` end to end: real agents, real processes, assertions on the output.

The reference agent must pass every check; each agent in ``tests/support/agents/`` breaks one
rule and must fail the check named after it (and only the checks that depend on it). Every run
carries ``OSUP_TEST_TAG``, so the leak check (``support.leaks``) proves agent-check reaps its agent.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from support import AGENTS_DIR

from osup_mp.agent_check import CHECKS
from osup_mp.wire import pack

HEARTBEAT_MS = "200"
TIMEOUT_S = "1.5"  # per check
SILENT_TIMEOUT_S = "0.75"  # the silent agent waits out four checks; it starts in ~0.1 s


def _agent_check_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "osup_mp", "agent-check", *args]


def _run(tag: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _agent_check_cmd(*args),
        env=dict(os.environ, OSUP_TEST_TAG=tag),
        capture_output=True,
        text=True,
        timeout=60,
    )


def _check_agent(
    tag: str, script: str, *options: str, timeout: str = TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    return _run(
        tag,
        "--timeout",
        timeout,
        "--heartbeat-interval",
        HEARTBEAT_MS,
        *options,
        "--",
        sys.executable,
        str(AGENTS_DIR / script),
    )


def _lines(out: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """Check name -> its output line; asserts one line per check, in order, then the summary."""
    lines = out.stdout.splitlines()
    assert len(lines) == len(CHECKS) + 1, out.stdout + out.stderr
    by_check: dict[str, str] = {}
    for check, line in zip(CHECKS, lines, strict=False):
        assert line == f"PASS {check}" or line.startswith(f"FAIL {check}: "), line
        by_check[check] = line
    failed = sum(line.startswith("FAIL") for line in by_check.values())
    assert lines[-1] == f"{len(CHECKS) - failed} passed, {failed} failed"
    return by_check


def _failed(by_check: dict[str, str]) -> set[str]:
    return {check for check, line in by_check.items() if line.startswith("FAIL")}


def test_reference_agent_passes_every_check(tag: str) -> None:
    out = _run(
        tag,
        "--heartbeat-interval",
        HEARTBEAT_MS,
        "--",
        sys.executable,
        "-m",
        "osup_mp.agent.reference",
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.splitlines() == [*(f"PASS {c}" for c in CHECKS), "8 passed, 0 failed"]


def test_json_output_for_a_seed_style_agent_without_ready(tag: str) -> None:
    out = _check_agent(tag, "seed_style.py", "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    results = json.loads(out.stdout)
    assert [r["check"] for r in results] == list(CHECKS)
    assert all(r["ok"] is True and isinstance(r["detail"], str) for r in results), results
    details = {r["check"]: r["detail"] for r in results}
    assert details["starts"].startswith("heartbeat after")  # no ready: first heartbeat counts
    assert details["hot_reload"] == "reload rejected: no reloadable modules"
    assert details["shutdown"] == "exited with status 0"


def test_garbage_after_ready_fails_frames_with_its_position(tag: str) -> None:
    out = _check_agent(tag, "broken_garbage.py")
    assert out.returncode == 1
    by_check = _lines(out)
    offset = len(pack({"type": "ready", "role": "main"}))  # the garbage follows ready
    assert by_check["frames"].startswith(f"FAIL frames: frame #2 at byte {offset} of stdout: ")
    assert "exceeds max_frame" in by_check["frames"]
    assert "b'this is not a fr'" in by_check["frames"]
    # The garbage may arrive with ready (heartbeats cannot run) or a moment later (it fails).
    assert re.fullmatch(
        r"FAIL heartbeats: (cannot run: )?the agent's frame stream is broken \(see frames\)",
        by_check["heartbeats"],
    ), by_check["heartbeats"]
    assert _failed(by_check) == set(CHECKS) - {"starts", "shutdown"}


def test_agent_that_never_answers_requests_fails_requests(tag: str) -> None:
    out = _check_agent(tag, "broken_silent.py", timeout=SILENT_TIMEOUT_S)
    assert out.returncode == 1
    by_check = _lines(out)
    assert by_check["requests"].startswith(
        "FAIL requests: 20 of 20 requests unanswered (ids sent 1..20); missing ids [1, 2, 3"
    )
    assert "after checkpoint_ack: no response to process_request" in by_check["checkpoint"]
    assert _failed(by_check) == {"requests", "checkpoint", "hot_reload", "restore"}


def test_responses_with_wrong_ids_fail_requests(tag: str) -> None:
    out = _check_agent(tag, "broken_wrong_ids.py")
    assert out.returncode == 1
    by_check = _lines(out)
    line = by_check["requests"]
    assert line.startswith("FAIL requests: 20 of 20 requests unanswered"), line
    assert "missing ids [1, 2, 3" in line
    assert "responses with unknown ids [1001, 1002, 1003" in line
    assert _failed(by_check) == {"requests", "checkpoint", "hot_reload", "restore"}


def test_agent_without_heartbeats_fails_heartbeats(tag: str) -> None:
    out = _check_agent(tag, "broken_no_heartbeat.py")
    assert out.returncode == 1
    by_check = _lines(out)
    assert re.fullmatch(
        r"FAIL heartbeats: 0 of 3 heartbeats: none for \d+ ms after the start "
        r"\(limit 2\.5 x 200 ms = 500 ms\)",
        by_check["heartbeats"],
    ), by_check["heartbeats"]
    assert _failed(by_check) == {"heartbeats"}


def test_agent_exiting_on_hot_reload_fails_hot_reload(tag: str) -> None:
    out = _check_agent(tag, "broken_exit_on_reload.py")
    assert out.returncode == 1
    by_check = _lines(out)
    reason = (
        "agent exited with status 3 during hot_reload (last stderr line: cannot reload, giving up)"
    )
    assert by_check["hot_reload"] == f"FAIL hot_reload: {reason}"
    assert by_check["restore"] == f"FAIL restore: cannot run: {reason}"
    assert by_check["shutdown"] == f"FAIL shutdown: cannot run: {reason}"
    assert _failed(by_check) == {"hot_reload", "restore", "shutdown"}


def test_stdout_ending_inside_a_frame_fails_frames(tag: str) -> None:
    out = _check_agent(tag, "broken_truncated.py")
    assert out.returncode == 1
    by_check = _lines(out)
    frame = len(pack({"type": "heartbeat", "timestamp": 0}))  # what the agent cut in half
    assert re.fullmatch(
        rf"FAIL frames: stdout ended in the middle of a frame at byte \d+ "
        rf"\({frame // 2} of {frame} bytes\)",
        by_check["frames"],
    ), by_check["frames"]
    assert _failed(by_check) == {"frames"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--", "no-such-agent-executable"],
            "osup-mp: agent executable 'no-such-agent-executable' not found",
        ),
        (["--", "/dev/null"], "osup-mp: cannot start '/dev/null': [Errno 13] Permission denied"),
        ([], "Missing argument"),
    ],
)
def test_usage_errors_exit_2_without_traceback(tag: str, args: list[str], message: str) -> None:
    out = _run(tag, *args)
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stdout == ""
    assert message in out.stderr
    assert "Traceback" not in out.stderr
    if args:
        assert len(out.stderr.splitlines()) == 1, out.stderr
