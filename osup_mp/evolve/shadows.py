"""Evaluating variants in shadows of a running tree, through its control socket.

Each variant gets a shadow of its own (the watchdog's limits apply, as to any shadow, and a
CPU-time and a wall-clock deadline of its own; its process group is killed on a breach or
past a deadline), which restores the main's state, then runs the
variant's code as the target module and answers the workload's requests one by one. What
is kept is what was measured: each request's handling time as the agent measures it (an
agent that does not say: its manager's timing, from its stdin to its answer), after one
unmeasured warm-up request; the errors; the shadow's resident memory; and the answers,
compared with the main's through the compare hook: more mismatches than the tolerance
fail the variant.

The one decision: this runs in the ``evolve`` command's process and speaks to the tree only
as an operator does (shadow start, hot reload, a raw call, shadow stop), in threads that
each wait on their own connection, so up to ``workers`` shadows work at once.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from osup_mp.client import Client, ClientError
from osup_mp.config import Config
from osup_mp.evolution.genetic.fitness import Figures
from osup_mp.evolve.judge import Judge, VariantDied, Workload
from osup_mp.lowlevel.limits import rss_mb
from osup_mp.wire.frames import service_ms


def reference(cfg: Config, requests: Sequence[Any], timeout: float = 30.0) -> Workload:
    """Ask the main agent (the current code) each request: the answers variants must give."""
    path = cfg.data_socket("main")
    with Client(path, timeout=timeout, max_frame=cfg.agent.max_frame) as client:
        answers = [client.request("request", data=r, timeout=timeout) for r in requests]
    return Workload(tuple(requests), tuple(answers))


class ShadowEvaluator:
    def __init__(
        self,
        cfg: Config,
        target: str,
        workload: Workload,
        *,
        judge: Judge | None = None,
        workers: int = 2,
        timeout: float = 30.0,
        prefix: str | None = None,
        cpu_seconds: float | None = None,
        wall_seconds: float | None = None,
    ) -> None:
        self.cfg = cfg
        self.target = target
        self.workload = workload
        self.judge = judge or Judge()
        self.workers = max(1, workers)
        self.timeout = timeout
        # Each variant's shadow: its agent is killed past them (and not restarted).
        given = (("cpu_seconds", cpu_seconds), ("wall_seconds", wall_seconds))
        self.deadlines = {key: value for key, value in given if value is not None}
        self.prefix = prefix or f"evo{uuid.uuid4().hex[:6]}"  # names its shadows
        self.on_variant: Callable[[Figures], None] | None = None  # each result (a thread's)
        self._count = 0

    def stop_leftovers(self) -> list[str]:
        """Stop the shadows of this prefix still in the tree (an evaluator that was killed
        left them); their ids."""
        with Client.for_config(self.cfg, timeout=self.timeout + 90) as client:
            agents = client.request("status").get("agents") or []
            left = [a["id"] for a in agents if str(a["id"]).startswith(f"{self.prefix}-")]
            for shadow in left:
                try:
                    client.request("shadow_stop", id=shadow)
                except ClientError:
                    pass  # gone meanwhile
        return left

    def room(self) -> int:
        """How many more shadows the tree takes now (its standby counts as one)."""
        with Client.for_config(self.cfg, timeout=self.timeout) as client:
            agents = client.request("status").get("agents") or []
        shadows = sum(a["role"] != "main" for a in agents)
        standbys = sum(a.get("standby") is not None for a in agents)
        return int(self.cfg.o_supervisor.max_concurrent_shadows - shadows - standbys)

    def evaluate(self, codes: Sequence[str]) -> list[Figures]:
        """The figures of each code, in order (up to ``workers`` shadows at once)."""
        names = [f"{self.prefix}-{self._count + i}" for i in range(len(codes))]
        self._count += len(codes)
        with ThreadPoolExecutor(self.workers, thread_name_prefix="evolve") as pool:
            return list(pool.map(self._one, names, codes))

    def _one(self, shadow: str, code: str) -> Figures:
        figures = self._evaluate(shadow, code)
        if self.on_variant is not None:
            self.on_variant(figures)
        return figures

    def _evaluate(self, shadow: str, code: str) -> Figures:
        with Client.for_config(self.cfg, timeout=self.timeout + 90) as client:
            try:
                client.request("shadow_start", id=shadow, **self.deadlines)
            except ClientError as exc:
                return Figures(failure=f"its shadow did not start: {exc}")
            try:
                return self._measure(client, shadow, code)
            except ClientError as exc:
                return Figures(failure=f"{exc}{_killed(client, shadow)}")
            finally:
                try:
                    client.request("shadow_stop", id=shadow)
                except ClientError:
                    pass  # it is gone already (a limit killed it, and it was transient)

    def _measure(self, client: Client, shadow: str, code: str) -> Figures:
        loaded = client.request("hot_reload", code=code, module=self.target, id=shadow)
        if not loaded.get("ok"):
            return Figures(failure=f"its shadow refused the code: {loaded.get('error')}")

        def ask(request: Any) -> tuple[bool, Any, float]:
            answer = client.request(
                "call",
                name=f"agent:{shadow}",
                request=["mirror_request", request, self.timeout],
                timeout=self.timeout + 5,
            )
            # An error answer from a live agent is the variant's error; from a dead one (a
            # limit, a deadline, a crash) it ends the variant: no figure is kept.
            if not answer["ok"] and _agent(client, shadow).get("state") != "RUNNING":
                raise VariantDied(f"its agent died: {answer['value']}{_killed(client, shadow)}")
            # The agent's own timing, less its waits for a CPU; else its manager's
            timing = service_ms(answer.get("handled_ms"), answer.get("waited_ms"))
            ms = float(answer["latency_ms"]) if timing is None else timing[0]
            return bool(answer["ok"]), answer["value"], ms

        return self.judge.run(self.workload, ask, lambda: _memory_mb(client, shadow))


def _agent(client: Client, shadow: str) -> dict[str, Any]:
    agents = client.request("status").get("agents") or []
    return next((a for a in agents if a["id"] == shadow), {})


def _memory_mb(client: Client, shadow: str) -> float:
    pid = _agent(client, shadow).get("pid")
    return rss_mb(int(pid)) if pid else 0.0


def _killed(client: Client, shadow: str) -> str:
    """Why the shadow's agent was killed, when a limit did it."""
    try:
        reason = _agent(client, shadow).get("last_kill_reason")
    except ClientError:
        return ""
    return f" ({reason})" if reason else ""
