"""One shadow experiment: its life as checked states, its evidence, and the record it leaves.

An experiment starts two shadows (the *candidate*, to run the proposed code, and the
*control*, running the main's current code), loads the main's code into both, mirrors a
share of the main's read-only requests to them, measures their own difference while both
run the same code, loads the proposed code into the candidate, is judged until decided,
and, when promoted, is watched for a rollback. The one decision: the record
(:meth:`Experiment.record`) is the whole public shape — what ``experiment show --json``
prints and what the history keeps — so the CLI, the history and the agent's
``evolution_result`` all say the same thing.
"""

from __future__ import annotations

import enum
import hashlib
import time
from dataclasses import dataclass, field
from typing import Any

from osup_mp.evolution import Decision, Evidence, Settings, Verdict
from osup_mp.evolution.watch import Figures


class ExpState(enum.StrEnum):
    STARTING = "starting"  # the arms' shadows are starting
    LOADING = "loading"  # the main's code is being loaded into the arms
    CALIBRATING = "calibrating"  # both on the main's code, mirrored: their own difference
    SWITCHING = "switching"  # the proposed code is being loaded into the candidate
    RUNNING = "running"  # mirrored traffic is being judged
    PROMOTING = "promoting"  # the candidate's code is being loaded into the main
    WATCHING = "watching"  # promoted; a crash of the main now rolls it back
    DECIDED = "decided"  # final: the verdict stands


_NEXT: dict[ExpState, frozenset[ExpState]] = {
    ExpState.STARTING: frozenset({ExpState.LOADING, ExpState.DECIDED}),
    ExpState.LOADING: frozenset({ExpState.CALIBRATING, ExpState.DECIDED}),
    ExpState.CALIBRATING: frozenset({ExpState.SWITCHING, ExpState.DECIDED}),
    ExpState.SWITCHING: frozenset({ExpState.RUNNING, ExpState.DECIDED}),
    ExpState.RUNNING: frozenset({ExpState.PROMOTING, ExpState.DECIDED}),
    ExpState.PROMOTING: frozenset({ExpState.WATCHING, ExpState.DECIDED}),
    ExpState.WATCHING: frozenset({ExpState.DECIDED}),
    ExpState.DECIDED: frozenset(),
}


class Outcome(enum.StrEnum):
    """The verdict as the history and the CLI name it."""

    PROMOTED = "promoted"
    REJECTED = "rejected"
    INCONCLUSIVE = "inconclusive"
    ROLLED_BACK = "rolled_back"


OUTCOME_OF = {
    Decision.PROMOTE: Outcome.PROMOTED,
    Decision.REJECT: Outcome.REJECTED,
    Decision.INCONCLUSIVE: Outcome.INCONCLUSIVE,
}

ROLES = ("candidate", "control")


@dataclass(slots=True)
class Experiment:
    id: str
    target: str
    code: str
    ratio: float
    duration: float  # s of the candidate's code mirrored before undecided is inconclusive
    reason: str = ""  # the hypothesis' reason, as given
    origin: str = "cli"  # who asked: "cli" or an agent id
    proposal: Any = None  # the agent's evolution_intent id
    settings: Settings = field(default_factory=Settings)
    state: ExpState = ExpState.STARTING
    outcome: Outcome | None = None
    rule: str | None = None
    explanation: str = ""
    verdict: Verdict | None = None
    started_at: float = field(default_factory=time.time)
    calibrating_since: float | None = None  # monotonic, when mirroring began
    mirrored_at: float | None = None  # the same, as a wall-clock time (metrics windows')
    running_since: float | None = None  # monotonic, when the judged traffic began
    straddled: bool = False  # the samples of the next look straddle the switch: dropped
    starved: str = ""  # why the calibration gave up (too little traffic), if it did
    decided_at: float | None = None
    promoted_at: float | None = None
    seq: int = 0  # the newest health sample read
    mirror: dict[str, Any] = field(default_factory=dict)  # the splitter's figures, last seen
    up: set[str] = field(default_factory=set)  # roles whose shadow is ready
    watch_until: float = 0.0  # monotonic end of the rollback watch
    main_generation: int | None = None  # the main agent's, when the watch began
    baseline: Figures | None = None  # the main's metrics before the promotion
    evidence: Evidence = field(init=False)

    def __post_init__(self) -> None:
        self.evidence = Evidence(self.settings)

    @property
    def arms(self) -> dict[str, str]:
        """Role -> shadow id."""
        return {role: f"{self.id}-{role[:4]}" for role in ROLES}

    def role_of(self, shadow: str) -> str | None:
        return next((role for role, name in self.arms.items() if name == shadow), None)

    def move(self, new: ExpState) -> None:
        if new not in _NEXT[self.state]:
            raise RuntimeError(f"experiment {self.id}: {self.state} -> {new} is not a transition")
        self.state = new

    def decide(
        self, outcome: Outcome, rule: str, explanation: str, verdict: Verdict | None = None
    ) -> None:
        """Fix the verdict (``verdict``: the evidence, kept when None); the experiment may
        still promote and be watched."""
        self.outcome, self.rule, self.explanation = outcome, rule, explanation
        self.verdict = verdict or self.verdict
        if self.decided_at is None:
            self.decided_at = time.time()

    def elapsed(self, now: float) -> float:
        """Seconds of mirrored traffic so far."""
        return 0.0 if self.running_since is None else now - self.running_since

    def record(self, *, code: bool = False) -> dict[str, Any]:
        """The public shape (docs/operations.md, "Experiment records")."""
        verdict = self.verdict.to_dict() if self.verdict is not None else None
        out: dict[str, Any] = {
            "id": self.id,
            "state": self.state.value,
            "verdict": None if self.outcome is None else self.outcome.value,
            "rule": self.rule,
            "reason": self.explanation,
            "target": self.target,
            "hypothesis": self.reason,
            "origin": self.origin,
            "code_sha256": hashlib.sha256(self.code.encode()).hexdigest(),
            "code_lines": self.code.count("\n") + 1,
            "ratio": self.ratio,
            "duration_s": self.duration,
            "started_at": self.started_at,
            "decided_at": self.decided_at,
            "promoted_at": self.promoted_at,
            "arms": self.arms,
            "samples": self.evidence.counts(),
            "calibration": self.evidence.calibrated(),
            "metrics": verdict["metrics"] if verdict else [],
            "mismatches": verdict["mismatches"] if verdict else None,
            "mirror": self.mirror,
        }
        if code:
            out["code"] = self.code
        return out
