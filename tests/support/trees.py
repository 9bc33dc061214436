"""Trees under test: an isolated config per tree, and the tree process with helpers to talk
to it (control socket, data plane, status) and to stop it even when a test fails."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import pytest

from osup_mp.client import Client, ClientError
from osup_mp.config import Config, load_config
from osup_mp.lowlevel.pidfile import running_pid
from support.polling import wait_for

SUPPORT_DIR = Path(__file__).resolve().parent
TESTS_DIR = SUPPORT_DIR.parent
TREE_MAIN = SUPPORT_DIR / "tree_main.py"
FAULTY_TREE = SUPPORT_DIR / "faulty_tree.py"
AGENTS_DIR = SUPPORT_DIR / "agents"
SCRIPTED_AGENT = AGENTS_DIR / "scripted.py"


def write_config(directory: Path, tag: str, **sections: dict[str, Any]) -> Path:
    """A config file for one isolated tree: own data dir, own segment name."""
    values: dict[str, dict[str, Any]] = {
        "o_supervisor": {"shared_memory_name": f"/osup_test_{tag}"},
        "telemetry": {"period": 1000},
        "supervisor": {"shutdown_timeout": 3000},
        # As the embedded [test.agent] overlay: tests of the restart path measure that path;
        # the standby tests turn it on.
        "agent": {"standby": False},
    }
    for section, items in sections.items():
        values.setdefault(section, {}).update(items)
    lines = []
    for section, items in values.items():
        lines.append(f"[{section}]")
        for key, value in items.items():
            lines.append(f"{key} = {_toml(value)}")
    path = directory / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)


class Tree:
    """A tree under test, run as its own process (foreground ``osup-mp start`` or tree_main)."""

    def __init__(self, config_path: Path, tag: str) -> None:
        self.config_path = config_path
        self.cfg: Config = load_config(config_path, "test")
        self.env = dict(os.environ, OSUP_TEST_TAG=tag, OSUP_ENV="test")
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_offset = 0  # log_text starts here (a shared tree: where the test began)
        self.stderr_tail: deque[bytes] = deque(maxlen=200)  # the tree's newest stderr lines
        self._drain = threading.Thread()

    def cli(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "osup_mp", "--config", str(self.config_path), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def start(
        self, *children: str, command: list[str] | None = None, until: str = "running"
    ) -> Tree:
        """Start in the foreground: the shipped tree, test components (NAME:RESTART), or
        ``command`` (run with this tree's config path appended after its first element).
        Returns once the tree's state is ``until``: "running" (every child started) or
        "starting" (the control socket answers)."""
        if command:
            cmd = [sys.executable, command[0], str(self.config_path), *command[1:]]
        elif children:
            cmd = [sys.executable, str(TREE_MAIN), str(self.config_path), *children]
        else:
            cmd = [sys.executable, "-m", "osup_mp", "--config", str(self.config_path), "start"]
        self.proc = subprocess.Popen(
            cmd, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        # Drained all along: a tree that logs more than a pipe holds would block on stderr.
        self._drain = threading.Thread(target=self._read_stderr, args=(self.proc,), daemon=True)
        self._drain.start()
        wait_for(lambda: self.is_up(until), 30, what="tree to come up")
        return self

    def _read_stderr(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stderr is not None
        for line in iter(proc.stderr.readline, b""):
            self.stderr_tail.append(line)

    def is_up(self, until: str = "running") -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            self._drain.join(5)  # the tree is gone: its stderr ends
            pytest.fail(f"tree exited with {self.proc.returncode}: {self.stderr_text[-2000:]}")
        try:
            state = self.status()["state"]
        except ClientError:
            return False
        return until == "starting" or state == until

    def request(self, command: str, /, **args: Any) -> Any:
        with Client.for_config(self.cfg, timeout=10) as client:
            return client.request(command, **args)

    def status(self) -> dict[str, Any]:
        data: dict[str, Any] = self.request("status")
        return data

    def agents(self) -> dict[str, dict[str, Any]]:
        return {a["id"]: a for a in self.status().get("agents", [])}

    def data_client(self, timeout: float = 10.0) -> Client:
        """A client of the main agent's data-plane socket."""
        path = self.cfg.data_socket("main")
        return Client(path, timeout=timeout, max_frame=self.cfg.agent.max_frame)

    def agent_request(self, data: Any, timeout: float = 10.0) -> Any:
        with self.data_client(timeout) as client:
            return client.request("request", data=data, timeout=timeout)

    def running_agent(self, instance_id: str = "main") -> dict[str, Any] | None:
        """The agent's status once it is RUNNING, else None."""
        agent = self.agents().get(instance_id)
        return agent if agent and agent["state"] == "RUNNING" else None

    def pids(self) -> dict[str, int | None]:
        return {c["name"]: c["pid"] for c in self.status()["components"]}

    def running_pids(self) -> dict[str, int] | None:
        """Component pids when every component is running, else None."""
        comps = self.status()["components"]
        if all(c["state"] == "running" for c in comps):
            return {c["name"]: c["pid"] for c in comps}
        return None

    def wait_exit(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        daemon = running_pid(self.cfg.pidfile)
        if daemon and (self.proc is None or daemon != self.proc.pid):
            os.kill(daemon, signal.SIGTERM)
            wait_for(lambda: running_pid(self.cfg.pidfile) is None, 30, what="daemon to stop")
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc is not None:
            self._drain.join(5)  # it ends with the tree's stderr

    def settled(self, timeout: float = 10.0) -> bool:
        """Whether the tree runs as it did once started, within ``timeout``: every component
        running, the main agent (if the tree has one) RUNNING and no other agent (what a
        shared tree must be before its next test)."""
        deadline = time.monotonic() + timeout
        while self.proc is not None and self.proc.poll() is None:
            try:
                status = self.status()
                agents = {a["id"]: a["state"] for a in status.get("agents", [])}
                components = {c["name"]: c["state"] for c in status["components"]}
                main = {"main": "RUNNING"} if "agent:main" in components else {}
                if (status["state"], set(components.values()), agents) == (
                    "running",
                    {"running"},
                    main,
                ):
                    return True
            except ClientError:
                pass
            if time.monotonic() > deadline:
                break
            time.sleep(0.01)
        return False

    def log_size(self) -> int:
        path = self.cfg.log_file
        return path.stat().st_size if path.exists() else 0

    @property
    def stderr_text(self) -> str:
        """The tree's newest stderr lines (see :attr:`stderr_tail`)."""
        return b"".join(self.stderr_tail).decode(errors="replace")

    @property
    def log_text(self) -> str:
        """The log (of a shared tree: since the test began)."""
        path = self.cfg.log_file
        if not path.exists():
            return ""
        with path.open("rb") as f:
            f.seek(self.log_offset)
            return f.read().decode(errors="replace")
