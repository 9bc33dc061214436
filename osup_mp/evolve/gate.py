"""The gate a variant passes before it costs a shadow: its code compiles, imports, and the
agent's own self-test of the module accepts it, in a keeper process of its own.

The one decision: variant code never runs in the caller. A keeper (this module run as
``python -m osup_mp.evolve.gate``, in a session of its own) becomes a subreaper and forks
the test into a child with CPU-time and address-space rlimits; it waits for the child with
a wall-clock deadline, then kills and reaps every process the variant left, forked or
daemonised. A variant that loops, allocates without bound, forks or raises fails the gate
with the reason; nothing of it outlives :func:`gate`.
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import signal
import sys
import time
import types
from dataclasses import asdict, dataclass
from typing import Any

from osup_mp.lowlevel.proc import ask_in_session, become_subreaper, kill_descendants, readable

_ANSWER_BYTES = 4096  # the longest error a gate reports


@dataclass(frozen=True, slots=True)
class Limits:
    """What one gate may use: wall-clock seconds, CPU seconds, address space in MiB."""

    wall_s: float = 10.0
    cpu_s: int = 5
    memory_mb: int = 2048


@dataclass(frozen=True, slots=True)
class GateResult:
    ok: bool
    error: str | None  # why it failed
    seconds: float


def gate(
    code: str, module: str, validator: str | None = None, limits: Limits = Limits()
) -> GateResult:
    """Test ``code`` as module ``module``; ``validator`` (``package.module:Class``) names an
    SDK agent class whose ``validate_module(module, loaded)`` is the self-test."""
    request = {"code": code, "module": module, "validator": validator, "limits": asdict(limits)}
    started = time.monotonic()
    keeper = [sys.executable, "-m", "osup_mp.evolve.gate"]
    answer, why = ask_in_session(keeper, json.dumps(request).encode(), limits.wall_s + 10)
    if answer is None:
        return GateResult(False, f"the gate keeper {why}", _since(started))
    return GateResult(answer["error"] is None, answer["error"], _since(started))


def _since(started: float) -> float:
    return time.monotonic() - started


# -- the keeper ------------------------------------------------------------------------------


def _keeper(request: dict[str, Any]) -> str | None:
    """Run the test in a limited child; the error, or None when it passed."""
    limits = Limits(**request["limits"])
    become_subreaper()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: limits, then the variant's code
        os.close(r)
        failure = _child(request, limits)
        os.write(w, json.dumps(failure and failure[: _ANSWER_BYTES // 2]).encode())
        os._exit(0)
    os.close(w)
    pidfd = os.pidfd_open(pid)
    timed_out = not readable(pidfd, limits.wall_s)
    if timed_out:
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    os.set_blocking(r, False)  # a grandchild may hold the write end open
    try:
        data = os.read(r, _ANSWER_BYTES)
    except BlockingIOError:
        data = b""
    kill_descendants()  # everything the variant forked or daemonised
    if timed_out:
        return f"still running after {limits.wall_s:g} s (wall clock): killed"
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig == signal.SIGXCPU:
            return f"used more than {limits.cpu_s} s of CPU: killed"
        return f"killed by {signal.Signals(sig).name}"
    try:
        reported: str | None = json.loads(data)
    except ValueError:
        return f"exited with status {os.waitstatus_to_exitcode(status)} before reporting"
    return reported


def _child(request: dict[str, Any], limits: Limits) -> str | None:
    memory = limits.memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s + 1))
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    name = request["module"]
    try:
        module = types.ModuleType(name)
        module.__file__ = f"<variant {name}>"
        exec(compile(request["code"], module.__file__, "exec"), module.__dict__)
        if request["validator"]:
            _validator(request["validator"]).validate_module(name, module)
    except MemoryError:
        return f"used more than {limits.memory_mb} MiB of address space"
    except BaseException as exc:  # the variant's own: SystemExit and the rest
        return f"{type(exc).__name__}: {exc}"
    return None


def _validator(path: str) -> Any:
    from osup_mp.agent.sdk import AgentOptions

    module_name, _, class_name = path.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(AgentOptions())


if __name__ == "__main__":
    print(json.dumps({"error": _keeper(json.load(sys.stdin))}))
