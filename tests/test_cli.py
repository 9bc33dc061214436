"""The osup-mp CLI end to end: start (foreground/daemon), status, stop, restart, config, logs."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import Tree, gone, tagged_processes, wait_for, write_config
from support.sockets import full_listener

from osup_mp.wire import FrameDecoder, pack


def _daemon_start(tree: Tree) -> int:
    out = tree.cli("start", "--daemon")
    assert out.returncode == 0, out.stderr
    assert "started (pid" in out.stdout
    return int(out.stdout.split("pid ")[1].split(")")[0])


def test_daemon_lifecycle(make_tree, tag) -> None:
    tree = make_tree()
    pid = _daemon_start(tree)
    assert tree.cfg.pidfile.read_text().strip() == str(pid)
    assert oct(tree.cfg.control_socket.stat().st_mode & 0o777) == "0o600"
    assert oct(tree.cfg.o_supervisor.run_dir.stat().st_mode & 0o777) == "0o700"

    again = tree.cli("start", "--daemon")
    assert again.returncode == 1
    assert f"already running (pid {pid}" in again.stderr

    status = tree.cli("status", "--json")
    assert status.returncode == 0, status.stderr
    data = json.loads(status.stdout)
    assert data["running"] is True and data["pid"] == pid
    by_name = {c["name"]: c for c in data["components"]}
    assert list(by_name) == [
        "telemetry",
        "health",
        "vault",
        "wal",
        "watchdog",
        "agent:main",
        "splitter",
        "arbiter",
    ]
    telemetry = by_name["telemetry"]
    assert set(telemetry) >= {
        "name",
        "pid",
        "state",
        "restarts",
        "uptime_s",
        "rss_bytes",
        "cpu_percent",
    }
    assert telemetry["name"] == "telemetry" and telemetry["state"] == "running"
    assert telemetry["rss_bytes"] > 1_000_000 and telemetry["cpu_percent"] is not None

    table = tree.cli("status")
    assert "telemetry" in table.stdout and "running" in table.stdout and "RSS" in table.stdout
    assert "CPUS" not in table.stdout  # nothing is pinned: no column for it

    old = telemetry["pid"]
    restarted = tree.cli("restart", "telemetry")
    assert restarted.returncode == 0, restarted.stderr
    assert gone(old)
    unknown = tree.cli("restart", "nope")
    assert unknown.returncode == 1 and "no such component 'nope'" in unknown.stderr

    tree_pids = [p.pid for p in tagged_processes(tag)]
    stopped = tree.cli("stop")
    assert stopped.returncode == 0, stopped.stderr
    # stop returns only when every process is gone, with its socket and pidfile
    assert not [p for p in tagged_processes(tag) if p.pid in tree_pids]
    assert not tree.cfg.control_socket.exists()
    assert not tree.cfg.pidfile.exists()

    status = tree.cli("status", "--json")
    assert status.returncode == 3
    assert json.loads(status.stdout) == {"running": False, "pid": None, "components": []}
    assert tree.cli("status").returncode == 3
    assert "stopped" in tree.cli("logs", "-n", "5").stdout


def test_foreground_start_refuses_second_start(shared_tree) -> None:
    tree = shared_tree()
    second = tree.cli("start")
    assert second.returncode == 1
    assert "already running" in second.stderr
    assert "Traceback" not in second.stderr


def test_stale_pidfile_and_socket_are_cleaned_up(make_tree) -> None:
    tree = make_tree().start()
    assert tree.proc is not None
    tree.proc.kill()  # SIGKILL: pidfile and socket stay behind
    tree.proc.wait()
    assert tree.cfg.pidfile.exists() and tree.cfg.control_socket.exists()
    assert tree.cli("status").returncode == 3
    pid = _daemon_start(tree)
    assert tree.cfg.pidfile.read_text().strip() == str(pid)
    assert "stale pidfile" in tree.log_text
    assert tree.cli("stop").returncode == 0


def test_daemon_reports_why_it_cannot_start(make_tree, tmp_path) -> None:
    tree = make_tree(o_supervisor={"run_dir": "/proc/forbidden"})
    out = tree.cli("start", "--daemon")
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
    assert out.stderr.startswith("osup-mp: ")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('[o_supervisor]\nheartbeat_timeout = "5s"\n', "o_supervisor.heartbeat_timeout: expected"),
        ("[o_supervisor]\nheartbeat_timout = 5000\n", "did you mean heartbeat_timeout"),
        ("[nonsense]\n", "nonsense"),
        ("[o_supervisor\n", "invalid TOML"),
        ('[supervisor]\nstrategy = "one_for_some"\n', "supervisor.strategy"),
        ('[dev.logger]\nlevel = "loud"\n', "dev.logger.level"),
    ],
)
def test_config_errors_are_one_line_exit_2(tmp_path, content, expected) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(content)
    tree = Tree.__new__(Tree)
    tree.config_path = path
    tree.env = dict(os.environ, OSUP_ENV="dev")
    for command in (["start"], ["status"], ["config"]):
        out = tree.cli(*command)
        assert out.returncode == 2, (command, out.stderr)
        assert out.stderr.count("\n") == 1, out.stderr
        assert str(path) in out.stderr and expected in out.stderr
        assert "Traceback" not in out.stderr


def test_config_command_prints_merged_config(make_tree) -> None:
    tree = make_tree(o_supervisor={"heartbeat_timeout": 7000})
    out = tree.cli("config", "--json")
    data = json.loads(out.stdout)
    assert data["o_supervisor"]["heartbeat_timeout"] == 7000
    assert data["env"] == "test"
    assert data["o_supervisor"]["run_dir"] == str(tree.config_path.parent / "data" / "run")
    toml = tree.cli("config").stdout
    assert "[o_supervisor]" in toml and "heartbeat_timeout = 7000" in toml
    bad_env = tree.cli("--env", "staging", "config")
    assert bad_env.returncode == 2 and "dev, prod, test" in bad_env.stderr


def _raw_request(tree: Tree, payload: bytes) -> list[dict]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    sock.connect(str(tree.cfg.control_socket))
    try:
        sock.sendall(payload)
    except (BrokenPipeError, ConnectionResetError):
        pass  # refused peers are answered and closed at once; the answer is still readable
    decoder = FrameDecoder()
    replies: list[dict] = []
    while not replies:
        data = sock.recv(65536)
        if not data:
            break
        replies += decoder.feed(data)
    sock.close()
    return replies


def test_control_socket_rejects_bad_input_and_survives(shared_tree) -> None:
    tree = shared_tree()
    (reply,) = _raw_request(tree, pack({"id": 1, "command": "fly", "args": {}}))
    assert reply["ok"] is False and "unknown command 'fly'" in reply["error"]
    (reply,) = _raw_request(tree, b"\x00\x00\x00\x03abc")
    assert reply["ok"] is False and "bad frame" in reply["error"]
    (reply,) = _raw_request(tree, b"\xff\xff\xff\xff")
    assert reply["ok"] is False and "bad frame" in reply["error"]
    (reply,) = _raw_request(tree, pack({"id": 2, "command": 7}))
    assert reply["ok"] is False
    # pipelined requests on one connection come back with their ids
    with_two = pack({"id": 10, "command": "ping"}) + pack({"id": 11, "command": "ping"})
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    sock.connect(str(tree.cfg.control_socket))
    sock.sendall(with_two)
    decoder, got = FrameDecoder(), []
    while len(got) < 2:
        got += decoder.feed(sock.recv(65536))
    sock.close()
    assert sorted(r["id"] for r in got) == [10, 11]
    assert tree.request("ping") == "pong"


def test_control_socket_refuses_other_uids(shared_tree) -> None:
    if os.getuid() != 0:
        pytest.skip("needs root to connect as another uid")
    tree = shared_tree()
    # Let "nobody" reach the socket file, so that only the peer-uid check can refuse it
    # (the modes are put back afterwards: the tree is shared).
    opened = [tree.cfg.control_socket]
    for parent in tree.cfg.control_socket.parents:
        if parent == Path("/tmp"):
            break
        opened.append(parent)
    modes = {path: path.stat().st_mode & 0o7777 for path in opened}
    try:
        os.chmod(tree.cfg.control_socket, 0o666)
        for parent in opened[1:]:
            os.chmod(parent, modes[parent] | 0o011)
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child becomes "nobody" and asks for status
            try:
                os.setuid(65534)
                replies = _raw_request(tree, pack({"id": 1, "command": "status", "args": {}}))
                os.write(write_fd, repr(replies).encode())
            finally:
                os._exit(0)
        os.close(write_fd)
        os.waitpid(pid, 0)
        with os.fdopen(read_fd) as pipe:
            answer = pipe.read()
    finally:
        for path, mode in modes.items():
            os.chmod(path, mode)
    assert "permission denied" in answer and "running" not in answer
    wait_for(lambda: "refused connection" in tree.log_text, what="refusal logged")


def test_stop_waits_for_slow_components(make_tree) -> None:
    tree = make_tree()
    _daemon_start(tree)
    t0 = time.monotonic()
    assert tree.cli("stop", "--timeout", "30").returncode == 0
    assert time.monotonic() - t0 < 30
    again = tree.cli("stop")
    assert again.returncode == 0 and again.stdout == ""
    assert again.stderr.strip() == "osup-mp: not running"


def test_sigterm_to_daemon_is_stop(make_tree, tag) -> None:
    tree = make_tree()
    pid = _daemon_start(tree)
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not tagged_processes(tag), what="tree gone")
    assert not tree.cfg.pidfile.exists()


def test_logs_follow_prints_new_lines(make_tree) -> None:
    tree = make_tree(logger={"level": "info"})
    _daemon_start(tree)
    follower = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "osup_mp",
            "--config",
            str(tree.config_path),
            "logs",
            "-f",
            "-n",
            "1",
        ],
        env=tree.env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        first = follower.stdout.readline()
        assert first  # the last line of history
        assert tree.cli("restart", "telemetry").returncode == 0
        seen = ""
        while "restart of telemetry requested" not in seen:
            seen = follower.stdout.readline()
            assert seen, "logs -f ended early"
    finally:
        follower.terminate()
        follower.wait(10)
        follower.stdout.close()
    assert tree.cli("stop").returncode == 0


def test_help_imports_only_click_and_the_command_table() -> None:
    """``osup-mp --help`` must start fast: it imports no command module, and no command
    module imports the tree, numpy, rich or even the config at import time (they load
    inside the command that needs them)."""
    heavy = (
        "numpy",
        "rich",
        "loguru",
        "psutil",
        "msgpack",
        "ctypes",
        "osup_mp.app",
        "osup_mp.config",
        "osup_mp.client",
        "osup_mp.runtime",
        "osup_mp.storage",
        "osup_mp.components",
        "osup_mp.agent_check",
    )
    probe = (
        "import importlib, sys\n"
        "from osup_mp import cli\n"
        "try:\n"
        "    cli.main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted(m for m in sys.modules if m.startswith('osup_mp')))\n"
        "for where, _help in cli.main_module.COMMANDS.values():\n"
        "    importlib.import_module('osup_mp.cli.' + where.partition(':')[0])\n"
        f"print([m for m in {heavy!r} if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[-2] == "['osup_mp', 'osup_mp.cli', 'osup_mp.cli.main']"
    assert lines[-1] == "[]"


def test_usage_errors_are_one_line_with_exit_2(tmp_path) -> None:
    cases = [
        (["shadow", "start", "bad id"], "invalid value for 'shadow_id'"),
        (["logs", "-n", "-5"], "-5 is not in the range x>=0"),
        (["request", "{}", "--timeout", "-1"], "-1.0 is not in the range x>0"),
        (["no-such-command"], "no such command 'no-such-command'"),
        (["status", "--env", "nope"], 'expected one of dev, prod, test, got "nope"'),
    ]
    for args, reason in cases:
        out = subprocess.run(
            [sys.executable, "-m", "osup_mp", *args],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
        assert out.returncode == 2, (args, out.stderr)
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("osup-mp: "), (args, out.stderr)
        assert reason in lines[0].lower(), (args, lines[0])
        assert out.stdout == ""


def test_config_and_env_are_accepted_after_the_subcommand(tmp_path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[supervisor]\nmax_restarts = 7\n[prod.supervisor]\nmax_restarts = 9\n")
    for args in (
        ["--config", str(config), "--env", "prod", "config", "--json"],
        ["config", "--json", "--config", str(config), "--env", "prod"],
        ["--env", "dev", "config", "--json", "--env", "prod", "--config", str(config)],
    ):
        out = subprocess.run(
            [sys.executable, "-m", "osup_mp", *args], capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["supervisor"]["max_restarts"] == 9, args


@pytest.mark.parametrize("level", ["debug", "info"])
def test_a_foreground_start_that_fails_ends_with_one_line(make_tree, level: str) -> None:
    """An agent that cannot be spawned: the log on stderr has no traceback (the log file has
    it), the last line says why, the exit status is 1, and no socket file is left behind."""
    tree = make_tree(
        o_supervisor={"gerbil_executable": "/nonexistent/agent"}, logger={"level": level}
    )
    out = tree.cli("start")
    assert out.returncode == 1
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("osup-mp: could not start: agent:main: failed to start: ")
    assert "/nonexistent/agent" in last
    assert "Traceback" not in out.stderr
    run_dir = tree.cfg.o_supervisor.run_dir
    assert not list(run_dir.glob("*.sock")), list(run_dir.iterdir())
    assert not tree.cfg.pidfile.exists()
    if level == "debug":
        assert "Traceback" in tree.log_text  # the file keeps it, for whoever debugs


def test_inspect_watch_prints_plain_frames_into_a_pipe(shared_tree) -> None:
    tree = shared_tree()
    cmd = [sys.executable, "-m", "osup_mp", "--config", str(tree.config_path)]
    watch = subprocess.Popen(
        [*cmd, "inspect", "shm", "--watch", "--interval", "0.1"],
        env={**tree.env, "PYTHONFAULTHANDLER": "1"},  # SIGABRT: where it was stuck
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        # Ctrl-C reaches it as a terminal's foreground job, even when the tests run in a
        # background job (whose children start with SIGINT ignored).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        assert watch.stdout is not None
        frames = [watch.stdout.readline() for _ in range(40)]
        watch.send_signal(signal.SIGINT)
        try:
            watch.wait(10)
        except subprocess.TimeoutExpired:
            watch.send_signal(signal.SIGABRT)
            _, err = watch.communicate(timeout=10)
            pytest.fail(f"Ctrl-C did not stop the watch within 10 s:\n{err.decode()}")
    finally:
        if watch.poll() is None:
            watch.kill()
        watch.communicate()
    text = b"".join(frames).decode()
    assert text.count("\n--- ") + text.startswith("--- ") >= 2, text
    assert "\x1b[" not in text  # no cursor movement or colour codes
    assert watch.returncode == 0


def test_cli_reports_a_full_backlog_as_a_connection_failure(tmp_path: Path, tag: str) -> None:
    tree = Tree(write_config(tmp_path, tag), tag)
    path = tree.cfg.data_socket("main")
    path.parent.mkdir(parents=True, exist_ok=True)
    listener, queued = full_listener(path)
    try:
        done = tree.cli("request", "--timeout", "0.2", '{"op": "stats"}', timeout=30)
    finally:
        for s in queued:
            s.close()
        listener.close()
    assert done.returncode == 1
    assert "backlog stayed full" in done.stderr and "agent answered" not in done.stderr
    assert "Traceback" not in done.stderr


def test_a_bug_in_a_command_is_one_line_unless_debugging(tmp_path) -> None:
    """An exception no command handles (a bug) is one line; OSUP_DEBUG=1 shows the
    traceback."""
    probe = (
        "import sys, click\n"
        "from osup_mp import cli\n"
        "@cli.cli.command('boom')\n"
        "def boom():\n"
        "    raise RuntimeError('a bug')\n"
        "cli.main(sys.argv[1:])\n"
    )
    for debug, expect_traceback in (("", False), ("1", True)):
        out = subprocess.run(
            [sys.executable, "-c", probe, "boom"],
            capture_output=True,
            text=True,
            timeout=60,
            env=dict(os.environ, OSUP_DEBUG=debug),
        )
        assert out.returncode == 1
        assert ("Traceback" in out.stderr) is expect_traceback
        if not expect_traceback:
            assert out.stderr.strip() == (
                "osup-mp: unexpected error: RuntimeError: a bug "
                "(run again with OSUP_DEBUG=1 for the traceback)"
            )


def test_status_loads_one_command_module() -> None:
    """``status`` imports its own command module, not the thirteen others, nor the tree; its
    configuration not psutil (which only the watchdog's limits need)."""
    probe = (
        "import sys\n"
        "from osup_mp import cli\n"
        "try:\n"
        "    cli.main(['status', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted(m for m in sys.modules if m.startswith('osup_mp.cli.') and "
        "m not in ('osup_mp.cli.main', 'osup_mp.cli.common')))\n"
        "from osup_mp.config import load_config\n"
        "load_config(None, 'test')  # what the command loads before it asks the tree\n"
        "print([m for m in ('numpy', 'rich', 'psutil', 'osup_mp.app') if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    lines = out.stdout.strip().splitlines()
    assert lines[-2:] == ["['osup_mp.cli.status']", "[]"], out.stdout + out.stderr


@pytest.mark.unit
def test_every_command_and_option_says_what_it_is_for() -> None:
    """Help is whole: every command and every option of every command has its text."""
    import click

    from osup_mp.cli.main import cli

    ctx = click.Context(cli)
    missing = []
    todo = [(name, cli.get_command(ctx, name)) for name in cli.list_commands(ctx)]
    while todo:
        name, command = todo.pop()
        assert command is not None, name
        if not (command.help or command.short_help):
            missing.append(name)
        for param in command.params:
            if isinstance(param, click.Option) and not param.help:
                missing.append(f"{name} {param.opts[0]}")
        if isinstance(command, click.Group):
            todo += [(f"{name} {sub}", c) for sub, c in command.commands.items()]
    assert not missing, f"without help: {missing}"
