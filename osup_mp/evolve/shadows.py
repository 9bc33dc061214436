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

import dataclasses
import statistics
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import psutil

from osup_mp.client import Client, ClientError
from osup_mp.config import Config
from osup_mp.evolution.compare import Compare, Score
from osup_mp.evolution.genetic.fitness import Figures
from osup_mp.wire import digest


@dataclass(frozen=True, slots=True)
class Workload:
    """The requests a variant answers, and the main's answers to them (the reference)."""

    requests: tuple[Any, ...]
    answers: tuple[Any, ...]


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
        compare: Compare | None = None,
        tolerance: float = 0.0,
        score: Score | None = None,
        min_score: float = 0.0,
        workers: int = 2,
        timeout: float = 30.0,
        prefix: str | None = None,
        cpu_seconds: float | None = None,
        wall_seconds: float | None = None,
    ) -> None:
        self.cfg = cfg
        self.target = target
        self.workload = workload
        self.compare = compare
        self.tolerance = tolerance
        self.score = score  # when set, it judges the answers (its mean, held to min_score)
        self.min_score = min_score
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
        latencies: list[float] = []
        scores: list[float] = []
        errors = mismatches = 0
        # One request first, not measured: what a variant builds on first use (an index, a
        # cache) is paid once, as it would be on the main, not by the first measured answer.
        requests = [self.workload.requests[0], *self.workload.requests]
        expected = [None, *self.workload.answers]
        for i, (request, reference) in enumerate(zip(requests, expected, strict=True)):
            answer = self._ask(client, shadow, request)
            if not answer["ok"]:
                # An error answer from a live agent is the variant's error; from a dead one
                # (a limit, a deadline, a crash) it ends the variant: no figure is kept.
                if _agent(client, shadow).get("state") != "RUNNING":
                    why = f"its agent died: {answer['value']}{_killed(client, shadow)}"
                    return Figures(failure=why)
                errors += i > 0
                continue
            if i == 0:
                continue
            handled = answer.get("handled_ms")  # the agent's own timing, else its manager's
            latencies.append(float(answer["latency_ms"] if handled is None else handled))
            if self.score is not None:
                scores.append(self._scored(request, reference, answer["value"]))
                mismatches += scores[-1] < 1.0
            elif not self._same(request, reference, answer["value"]):
                mismatches += 1
        n, measured = len(self.workload.requests), tuple(latencies)
        mean = statistics.fmean(scores) if scores else None
        figures = Figures(n, errors, mismatches, measured, score=mean)
        if mean is not None and mean < self.min_score:
            veto = f"mean score {mean:.3f} < {self.min_score:g} against the current code's answers"
            return dataclasses.replace(figures, failure=veto)
        if self.score is None and n and mismatches / n > self.tolerance:
            veto = f"{mismatches} of {n} answers differ from the current code's"
            return dataclasses.replace(figures, failure=veto)
        return dataclasses.replace(figures, memory_mb=_memory_mb(client, shadow))

    def _ask(self, client: Client, shadow: str, request: Any) -> dict[str, Any]:
        answer: dict[str, Any] = client.request(
            "call",
            name=f"agent:{shadow}",
            request=["mirror_request", request, self.timeout],
            timeout=self.timeout + 5,
        )
        return answer

    def _scored(self, request: Any, expected: Any, answer: Any) -> float:
        assert self.score is not None
        try:
            return min(1.0, max(0.0, float(self.score(request, expected, answer))))
        except Exception:  # a hook that raises on an answer: compared exactly
            return 1.0 if digest(expected) == digest(answer) else 0.0

    def _same(self, request: Any, expected: Any, answer: Any) -> bool:
        if self.compare is not None:
            try:
                return bool(self.compare(request, expected, answer))
            except Exception:  # a hook that raises on an answer: compared exactly
                pass
        return bool(digest(expected) == digest(answer))


def _agent(client: Client, shadow: str) -> dict[str, Any]:
    agents = client.request("status").get("agents") or []
    return next((a for a in agents if a["id"] == shadow), {})


def _memory_mb(client: Client, shadow: str) -> float:
    pid = _agent(client, shadow).get("pid")
    try:
        return float(psutil.Process(int(pid)).memory_info().rss) / 2**20 if pid else 0.0
    except psutil.Error:
        return 0.0


def _killed(client: Client, shadow: str) -> str:
    """Why the shadow's agent was killed, when a limit did it."""
    try:
        reason = _agent(client, shadow).get("last_kill_reason")
    except ClientError:
        return ""
    return f" ({reason})" if reason else ""
