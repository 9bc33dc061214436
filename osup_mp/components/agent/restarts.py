"""When to restart a failed agent: at once, after a backoff, or never (FATAL).

Two rules, after supervisord and Erlang/OTP. An agent that became ready and stayed up
``startsecs`` was working: its death is news, not a loop, and it is restarted at once
(restart latency is then start-up time). Backoff — exponential, capped, with jitter so that
many agents do not restart in step — is for crash loops only: failures during start-up
(before ready, or within ``startsecs`` of it), and restarts beyond an intensity of
``max_restarts`` within ``max_seconds``. ``max_retries`` consecutive start-up failures make
the agent FATAL. The policy is pure (clock values in, decisions out) so each rule is tested
with an injected clock.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field

from osup_mp.config import AgentSection


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do after a failure: restart after ``delay`` seconds, or give up (``fatal``)."""

    delay: float = 0.0
    fatal: bool = False
    why: str = ""  # "started up and failed", "crash loop: ..." — for the log line


@dataclass(slots=True)
class RestartPolicy:
    startsecs: float  # seconds up after ready that make a run count as a success
    max_retries: int  # consecutive start-up failures before FATAL
    max_restarts: int  # restarts allowed within max_seconds before backoff applies
    max_seconds: float
    backoff_base: float  # seconds
    backoff_cap: float  # seconds
    rng: random.Random = field(default_factory=random.Random)
    start_failures: int = 0  # consecutive, since the last run that lasted startsecs
    restarts: deque[float] = field(default_factory=deque)  # times of recent restarts

    @classmethod
    def from_config(cls, a: AgentSection, rng: random.Random | None = None) -> RestartPolicy:
        return cls(
            startsecs=a.startsecs,
            max_retries=a.max_retries,
            max_restarts=a.max_restarts,
            max_seconds=a.max_seconds,
            backoff_base=a.backoff_base / 1000,
            backoff_cap=a.backoff_cap / 1000,
            rng=rng or random.Random(),
        )

    def reset(self) -> None:
        """An operator restart starts the count afresh."""
        self.start_failures = 0
        self.restarts.clear()

    def after_failure(self, now: float, up_since: float | None) -> Decision:
        """The agent failed at ``now``; it became ready at ``up_since`` (None: never did)."""
        started_up = up_since is not None and now - up_since >= self.startsecs
        self.start_failures = 0 if started_up else self.start_failures + 1
        if self.start_failures > self.max_retries:
            return Decision(fatal=True, why=f"{self.start_failures} consecutive failed starts")
        restarts = self.restarts
        restarts.append(now)
        while restarts and now - restarts[0] > self.max_seconds:
            restarts.popleft()
        excess = len(restarts) - self.max_restarts
        if excess > 0:
            why = f"crash loop: {len(restarts)} restarts within {self.max_seconds:g}s"
            return Decision(self._backoff(excess), why=why)
        if started_up:
            return Decision(0.0, why="failed after starting up")
        return Decision(self._backoff(self.start_failures), why="failed while starting")

    def _backoff(self, n: int) -> float:
        """The n-th delay of a loop (n >= 1): base, 2 base, 4 base, ... up to cap, times a
        random factor in [0.5, 1]."""
        delay: float = min(self.backoff_cap, self.backoff_base * 2.0 ** min(n - 1, 30))
        return delay * self.rng.uniform(0.5, 1.0)
