"""The gate before a variant costs a shadow: hostile or broken code fails it, with the reason,
and leaves no process behind; good code passes, self-test included."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from support import tagged_processes

from osup_mp.agent.reference import memory_system
from osup_mp.evolve.gate import Limits, gate

REFERENCE = "osup_mp.agent.reference.agent:MemoryAgent"
SHIPPED = Path(memory_system.__file__).read_text()
FAST = Limits(wall_s=3.0, cpu_s=2, memory_mb=512)
# The CPU limit must be what stops a busy loop even when the machine is loaded (the loop then
# gets less than a whole CPU): a wall clock far beyond it.
CPU_BOUND = Limits(wall_s=30.0, cpu_s=1, memory_mb=512)


@pytest.fixture(autouse=True)
def tagged(tag: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every process a gate starts carries the test's tag: the leak check finds survivors."""
    monkeypatch.setenv("OSUP_TEST_TAG", tag)


def test_the_shipped_module_passes_with_the_agent_self_test() -> None:
    result = gate(SHIPPED, "memory_system", REFERENCE)
    assert result.ok and result.error is None, result.error


@pytest.mark.parametrize(
    ("code", "error"),
    [
        ("def embed(:\n", "SyntaxError"),
        ("raise RuntimeError('no')\n", "RuntimeError: no"),
        ("import sys\nsys.exit(3)\n", "SystemExit: 3"),
        ("import no_such_module_here\n", "ModuleNotFoundError"),
    ],
)
def test_broken_code_fails_with_its_reason(code: str, error: str) -> None:
    result = gate(code, "memory_system", None, FAST)
    assert not result.ok and error in str(result.error)


def test_code_the_self_test_refuses_fails() -> None:
    wrong = SHIPPED.replace("def embed(", "def embed_renamed(")
    result = gate(wrong, "memory_system", REFERENCE)
    assert not result.ok and "embed" in str(result.error)


def test_a_loop_is_stopped_by_the_cpu_limit(tag: str) -> None:
    result = gate("while True:\n    pass\n", "m", None, CPU_BOUND)
    assert not result.ok and "s of CPU" in str(result.error)
    assert result.seconds < CPU_BOUND.wall_s
    assert not tagged_processes(tag)


def test_a_sleeper_is_stopped_by_the_wall_clock(tag: str) -> None:
    result = gate("import time\ntime.sleep(60)\n", "m", None, FAST)
    assert not result.ok and "wall clock" in str(result.error)
    assert not tagged_processes(tag)


def test_unbounded_allocation_is_stopped_by_the_memory_limit(tag: str) -> None:
    hog = "blocks = []\nwhile True:\n    blocks.append(bytearray(1 << 24))\n"
    result = gate(hog, "m", None, FAST)
    assert not result.ok and "MiB of address space" in str(result.error)


def test_forked_and_daemonised_children_are_killed(tag: str) -> None:
    code = (
        "import os, time\n"
        "if os.fork() == 0:\n"  # a child, then a grandchild in a session of its own
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        time.sleep(60)\n"
        "    os._exit(0)\n"
        "time.sleep(0.2)\n"
    )
    result = gate(code, "m", None, FAST)
    assert result.ok, result.error  # the code itself is fine; what it left is not kept
    assert not tagged_processes(tag), os.getpid()


def test_the_evolve_example_passes_the_gate() -> None:
    example = Path(__file__).resolve().parents[1] / "examples" / "evolve" / "memory_system.py"
    result = gate(example.read_text(), "memory_system", REFERENCE)
    assert result.ok, result.error
