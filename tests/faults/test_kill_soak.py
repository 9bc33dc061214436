"""Fault matrix: random SIGKILLs under pipelined write load lose and duplicate nothing.

A writer pipelines ``memory_add`` requests with client-chosen ids (so a retry of an
unanswered request is idempotent) and retries each until it is acknowledged. Meanwhile the
agent, its manager, the WAL, the vault or the supervisor itself is SIGKILLed at seeded
random points (a killed supervisor is started again on the same directories). At the end,
and again after a whole-tree restart from disk, the agent must hold exactly the acknowledged
blocks: none lost, none twice. CI runs 20 kills; ``OSUP_SOAK=1`` (``just soak``) runs 200.
"""

from __future__ import annotations

import collections
import os
import random
import signal
import time
from typing import Any

import pytest
from support import Tree, wait_for

from osup_mp.client import Client, ClientError

pytestmark = [
    pytest.mark.faults,
    pytest.mark.timeout(1800 if os.environ.get("OSUP_SOAK") == "1" else 300),
]

SOAK = os.environ.get("OSUP_SOAK") == "1"
KILLS = 200 if SOAK else 20
ACKS_BETWEEN_KILLS = 60
TARGETS = ("agent", "agent:main", "wal", "vault", "supervisor")
FAST = {
    "o_supervisor": {"heartbeat_interval": 200, "heartbeat_timeout": 2000},
    "agent": {"backoff_base": 20, "backoff_cap": 200, "max_retries": 1000},
    "supervisor": {"max_restarts": 1000, "max_seconds": 1},
    "vault": {"checkpoint_wal_entries": 400},
    "wal": {"segment_entries": 500},
}


class Writer:
    """Pipelined, retried, idempotent writes: ``model`` holds what was acknowledged."""

    def __init__(self, tree: Tree, window: int = 32) -> None:
        self.tree = tree
        self.window = window
        self.client: Client | None = None
        self.model: dict[str, str] = {}
        self.retries = 0

    def _connect(self) -> Client:
        def attempt() -> Client | None:
            try:
                client = Client(self.tree.cfg.data_socket("main"), timeout=20)
            except (ClientError, OSError):
                return None
            return client

        try:
            client: Client = wait_for(attempt, 60, interval=0.02, what="data plane back")
        except pytest.fail.Exception:
            # The report carries the tree's log (support.plugin); its exit and stderr, here.
            tree = self.tree
            code = None if tree.proc is None else tree.proc.poll()
            pytest.fail(
                f"the data plane was not back within 60 s (tree exit status {code}); "
                f"its stderr ends:\n{tree.stderr_text[-3000:]}"
            )
        return client

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    def run(self, ops: list[tuple[str, str]], on_ack: Any) -> None:
        pending = collections.deque(ops)
        in_flight: dict[int, tuple[str, str]] = {}
        while pending or in_flight:
            try:
                if self.client is None:
                    self.client = self._connect()
                while len(in_flight) < self.window and pending:
                    key, text = pending[0]
                    data = {"op": "memory_add", "id": key, "text": text}
                    in_flight[self.client.send("request", data=data, timeout=15)] = (key, text)
                    pending.popleft()  # only once it is sent: a failed send keeps it queued
                reply = self.client.receive()
            except (ClientError, OSError):
                # The connection went with a killed process: nothing in flight is known to be
                # applied or not, so all of it is sent again (same ids: idempotent).
                self.retries += len(in_flight)
                pending.extendleft(reversed(list(in_flight.values())))
                in_flight.clear()
                self.close()
                continue
            op = in_flight.pop(reply["id"])
            if reply["ok"]:
                self.model[op[0]] = op[1]
                on_ack(len(self.model))
            else:
                self.retries += 1
                pending.appendleft(op)
                if "not RUNNING" in str(reply.get("error")):
                    time.sleep(0.01)  # the agent is restarting; its manager answers at once

    def check(self) -> None:
        """The agent holds exactly the acknowledged blocks, each once, with its text."""
        client = self._connect()
        try:
            stats = client.request("request", data={"op": "stats"})
            assert stats["blocks"] == len(self.model), (stats["blocks"], len(self.model))
            ids = list(self.model)
            for start in range(0, len(ids), 256):
                chunk = ids[start : start + 256]
                sent = {
                    client.send("request", data={"op": "memory_get", "id": i}): i for i in chunk
                }
                for _ in chunk:
                    reply = client.receive()
                    key = sent[reply["id"]]
                    assert reply["ok"], f"acknowledged block {key} lost: {reply.get('error')}"
                    assert reply["data"]["text"] == self.model[key]
        finally:
            client.close()


def _kill(tree: Tree, target: str) -> None:
    if target == "supervisor":
        assert tree.proc is not None
        tree.proc.kill()
        tree.proc.wait(10)
        tree.start()  # the same directories: the stale segment and pidfile are recovered
        return
    if target == "agent":
        agent = wait_for(tree.running_agent, 60, what="agent running")
        os.kill(int(agent["pid"]), signal.SIGKILL)
        return
    pid = wait_for(lambda: tree.pids().get(target), 60, what=f"{target} running")
    try:
        os.kill(int(pid), signal.SIGKILL)
    except ProcessLookupError:  # it died a moment ago and is not reaped yet: kill its successor
        new = wait_for(lambda: tree.pids().get(target) not in (None, pid) and tree.pids()[target])
        os.kill(int(new), signal.SIGKILL)


@pytest.mark.parametrize("standby", [False, True], ids=["restarts", "standby"])
def test_random_kills_lose_and_duplicate_nothing(make_tree, standby: bool) -> None:
    """With a standby, a killed agent is replaced by promotion; without, by a restart."""
    seed = int(os.environ.get("OSUP_SOAK_SEED", "20261202"))
    rng = random.Random(seed)
    tree = make_tree(**{**FAST, "agent": {**FAST["agent"], "standby": standby}}).start()
    writer = Writer(tree)
    schedule = [rng.choice(TARGETS) for _ in range(KILLS)]
    kills: collections.Counter[str] = collections.Counter()
    started = time.monotonic()

    def on_ack(acked: int) -> None:
        if schedule and acked >= (len(kills_done) + 1) * ACKS_BETWEEN_KILLS:
            target = schedule.pop()
            _kill(tree, target)
            kills[target] += 1
            kills_done.append(target)

    kills_done: list[str] = []
    ops = [(f"k{i}", f"text {i} {rng.random()}") for i in range(ACKS_BETWEEN_KILLS * (KILLS + 2))]
    try:
        writer.run(ops, on_ack)
        assert sum(kills.values()) == KILLS
        assert len(writer.model) == len(ops)  # every write was acknowledged in the end
        writer.check()
        tree.stop()  # and once more, from disk alone
        writer.close()
        tree.start()
        writer.check()
    finally:
        writer.close()
    print(
        f"\nkill soak (seed {seed}, standby {standby}): {KILLS} kills {dict(kills)}, "
        f"{len(writer.model)} writes "
        f"acknowledged, {writer.retries} resent, 0 lost, 0 duplicated, "
        f"{time.monotonic() - started:.1f}s"
    )
