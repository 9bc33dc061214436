"""``osup-mp demo``: a two-minute tour on a private tree that leaves nothing behind.

It starts a tree in a temporary directory (its own segment name, so it never meets a tree
already running), loads memories, drives searches, SIGKILLs the main agent and shows it
serving again with its state intact (its hot standby promoted), then runs the faster and
the wrong hypotheses of ``examples/hypotheses`` as experiments and prints their explained
verdicts. The one
decision: the tour drives the tree only through the commands and sockets an operator
uses (``start --daemon``, the control and data-plane sockets, ``traffic``, ``stop``), so
what it shows is what a user gets.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from osup_mp.cli.common import fail

HYPOTHESES = Path("examples") / "hypotheses"
SEARCHES = 64  # distinct queries the traffic cycles through


@click.command("demo")
@click.option("--blocks", type=click.IntRange(min=100), default=50_000, show_default=True,
              help="Memories loaded (the room to speed search up grows with them).")  # fmt: skip
@click.option("--examples", "examples_dir", type=click.Path(file_okay=False, path_type=Path),
              default=HYPOTHESES, show_default=True, help="Where the hypotheses are.")  # fmt: skip
@click.option("--rate", type=click.IntRange(min=10), default=100, show_default=True,
              help="Searches per second driven during the experiments.")  # fmt: skip
def command(blocks: int, examples_dir: Path, rate: int) -> None:
    """Start a private tree, load it, kill its agent, run two experiments, stop."""
    faster, wrong = examples_dir / "faster_search.py", examples_dir / "wrong_search.py"
    for path in (faster, wrong):
        if not path.is_file():
            fail(f"{path} not found: run the demo from the root of a clone, or give --examples", 2)
    started = time.monotonic()
    # SIGTERM unwinds like Ctrl-C, so the tree is stopped and its directory removed.
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    with _tree() as tree:
        summary = [("tree up", f"{tree.up_s:.1f} s")]
        summary.append(("memories loaded", _load(tree, blocks)))
        summary.append(("SIGKILL of the main agent", _kill_and_recover(tree)))
        with _traffic(tree, rate):
            for path in (faster, wrong):
                summary.append((f"experiment {path.name}", _experiment(tree, path)))
    summary.append(("left running", tree.leftovers()))
    click.echo(f"\nosup-mp demo: done in {time.monotonic() - started:.0f} s")
    for what, result in summary:
        click.echo(f"  {what:<36} {result}")
    if summary[-1][1].startswith("LEFT BEHIND"):
        sys.exit(1)


class _Tree:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.config = directory / "config.toml"
        self.config.write_text(
            "[o_supervisor]\n"
            f'shared_memory_name = "/osup_demo_{os.getpid()}"\n'
            "shared_memory_size = 67108864\n"
            "evolution_enabled = true\n"
            "max_concurrent_shadows = 4\n"
            '[logger]\nlevel = "warning"\n'
            "[evolution]\nmirror_ratio = 1.0\nrollback_watch = 5000\n"
        )
        from osup_mp.config import load_config

        self.cfg = load_config(self.config, "dev")
        self.up_s = 0.0
        self.pids_at_stop: set[int] = set()

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "osup_mp", "--config", str(self.config), *args]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if check and done.returncode != 0:
            raise click.ClickException(f"osup-mp {args[0]} failed: {done.stderr.strip()}")
        return done

    def pids(self) -> set[int]:
        """The tree's processes now: the supervisor, its components and the agents."""
        status = self.control("status")
        children = [*status["components"], *status.get("agents", [])]
        return {status["pid"], *(c["pid"] for c in children if c.get("pid"))}

    def leftovers(self) -> str:
        """What the stopped tree left behind, looked at, not assumed."""
        import posix_ipc

        from osup_mp.lowlevel.proc import pid_alive

        deadline = time.monotonic() + 10
        alive = {pid for pid in self.pids_at_stop if pid_alive(pid)}
        while alive and time.monotonic() < deadline:
            time.sleep(0.05)
            alive = {pid for pid in alive if pid_alive(pid)}
        found = [f"process {pid}" for pid in sorted(alive)]
        try:
            posix_ipc.SharedMemory(self.cfg.o_supervisor.shared_memory_name).close_fd()
            found.append(f"segment {self.cfg.o_supervisor.shared_memory_name}")
        except posix_ipc.ExistentialError:
            pass
        if self.dir.exists():
            found.append(f"directory {self.dir}")
        if found:
            return "LEFT BEHIND: " + ", ".join(found)
        return "nothing (tree stopped, directory and segment removed)"

    def control(self, command: str, **args: Any) -> Any:
        from osup_mp.client import Client

        with Client.for_config(self.cfg, timeout=60.0) as client:
            return client.request(command, **args)

    def data(self) -> Any:
        from osup_mp.client import Client

        return Client(
            self.cfg.data_socket("main"), timeout=30.0, max_frame=self.cfg.agent.max_frame
        )


@contextlib.contextmanager
def _tree() -> Iterator[_Tree]:
    directory = Path(tempfile.mkdtemp(prefix="osup-demo-"))
    tree = _Tree(directory)
    try:
        click.echo(f"starting a tree in {directory} ...")
        began = time.monotonic()
        tree.cli("start", "--daemon")
        tree.up_s = time.monotonic() - began
        yield tree
    finally:
        click.echo("stopping the tree ...")
        with contextlib.suppress(Exception):  # the processes to check for afterwards
            tree.pids_at_stop = tree.pids()
        tree.cli("stop", check=False)
        shutil.rmtree(directory, ignore_errors=True)


def _load(tree: _Tree, blocks: int) -> str:
    click.echo(f"loading {blocks:,} memories through the data plane ...")
    began = time.monotonic()
    with tree.data() as client:
        window = 256
        for first in range(0, blocks, window):
            ids = [
                client.send("request", data={"op": "memory_add", "id": f"m{i}", "text": _text(i)})
                for i in range(first, min(blocks, first + window))
            ]
            for _ in ids:
                answer = client.receive()
                if not answer.get("ok"):
                    raise click.ClickException(f"memory_add failed: {answer.get('error')}")
    seconds = time.monotonic() - began
    return f"{blocks:,} in {seconds:.1f} s ({blocks / seconds:,.0f} adds/s)"


def _text(i: int) -> str:
    topics = ("garden", "kitchen", "garage", "invoice", "meeting", "travel", "recipe", "bug")
    return f"note {i} about the {topics[i % len(topics)]} and item {i % 977}"


def _query(i: int) -> dict[str, Any]:
    return {"op": "memory_search", "query": _text(i * 37)[5:], "k": 5}


def _kill_and_recover(tree: _Tree) -> str:
    with tree.data() as client:
        before = [client.request("request", data=_query(i)) for i in range(8)]
    deadline = time.monotonic() + 60
    while not _failover_ready(_main_status(tree), tree.cfg.agent.startsecs):
        if time.monotonic() > deadline:
            raise click.ClickException("the main agent's standby did not catch up within 60 s")
        time.sleep(0.05)  # the standby is still restoring or catching up
    pid = _main_status(tree)["pid"]
    click.echo(f"kill -9 {pid} (the main agent) ...")
    killed = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    while True:  # the manager answers once the new agent has restored
        try:
            with tree.data() as client:
                after = [client.request("request", data=_query(i)) for i in range(8)]
            break
        except Exception:
            if time.monotonic() - killed > 60:
                raise click.ClickException("the main agent did not come back within 60 s") from None
            time.sleep(0.01)
    took = (time.monotonic() - killed) * 1000
    intact = "identical" if after == before else "DIFFERENT"
    how = "its standby promoted" if _main_status(tree)["promotions"] else "restarted, restored"
    return f"serving again in {took:.0f} ms ({how}); search answers {intact}"


def _main_status(tree: _Tree) -> dict[str, Any]:
    agents: list[dict[str, Any]] = tree.control("status")["agents"]
    return next(a for a in agents if a["id"] == "main")


def _failover_ready(main: dict[str, Any], startsecs: float) -> bool:
    """The main has been up ``startsecs`` (a death before that is a failed start, restarted
    with a backoff, never failed over) and its standby, if any, has applied everything it
    was given."""
    standby = main.get("standby")
    following = standby is None or (standby["state"] == "RUNNING" and standby["lag"] == 0)
    return following and (main["uptime_s"] or 0.0) >= startsecs


@contextlib.contextmanager
def _traffic(tree: _Tree, rate: int) -> Iterator[None]:
    requests = tree.dir / "searches.jsonl"
    import json

    requests.write_text("".join(json.dumps(_query(i)) + "\n" for i in range(SEARCHES)))
    cmd = [sys.executable, "-m", "osup_mp", "--config", str(tree.config), "traffic",
           "--file", str(requests), "--rate", str(rate), "--duration", "3600"]  # fmt: skip
    click.echo(f"driving {rate} searches/s in the background ...")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _experiment(tree: _Tree, path: Path) -> str:
    from osup_mp.cli.experiment import FINAL, _render

    click.echo(f"\nexperiment: {path} as memory_system ...")
    began = time.monotonic()
    record = tree.control(
        "experiment_start", code=path.read_text(), target="memory_system", duration=60.0,
        reason=f"osup-mp demo: {path.name}",
    )  # fmt: skip
    while record["state"] not in FINAL:
        time.sleep(0.5)
        record = tree.control("experiment_show", id=record["id"])
    _render(record)
    return f"{record['verdict']} ({record['rule']}) in {time.monotonic() - began:.0f} s"
