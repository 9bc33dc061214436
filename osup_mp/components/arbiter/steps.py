"""The course of every running experiment, as asynchronous steps.

An experiment asks the tree for two shadows, loads the main's current code into both, has
the splitter mirror a share of the main's read-only requests to them, measures the pair's
own difference for ``[evolution] calibration`` while both run the same code, loads the
proposed code into the candidate, and from then on every second reads the new samples from
the health monitor and asks :func:`osup_mp.evolution.decide` for a verdict. A promoted
candidate's code is hot-loaded into the main and watched: a crash of the main, the agent
rolling the code back, or the main's own metrics worse than before the promotion, within
``rollback_watch``, reverts it. The one decision: every step is an asynchronous call
answered into the one loop, so the arbiter keeps judging every experiment, answering the
CLI and watching promotions while shadows start and code loads. The component
(:mod:`.component`) serves the requests that start, stop and show experiments, on top of
these steps.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

from loguru import logger

from osup_mp.components.arbiter import readings
from osup_mp.components.arbiter.experiment import OUTCOME_OF, ROLES, Experiment, ExpState, Outcome
from osup_mp.components.arbiter.history import History, interrupted
from osup_mp.components.messages import (
    AgentStatus,
    EvolutionResult,
    Execute,
    ExperimentSamples,
    ExperimentStart,
    HotReload,
    LoadedCode,
    MetricsHistory,
    MirrorStart,
    MirrorStatus,
    MirrorStop,
    Revert,
    StartShadow,
    StopShadow,
)
from osup_mp.config import Config
from osup_mp.evolution import Decision, Sample, Settings, decide, fixed, watch
from osup_mp.evolution.evidence import MIN_BATCHES
from osup_mp.runtime.calls import CallError
from osup_mp.runtime.component import Component

TICK = 1.0  # s between looks at each experiment's evidence
BASELINE_S = 60.0  # of the main's metrics before a promotion, to watch it against
START_TIMEOUT = 60.0  # s for an arm's shadow to start and restore


def _ignore(ok: bool, value: Any) -> None:
    pass


class ExperimentSteps(Component):
    """The arbiter's running experiments and the steps of each; see the module docstring."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        e = cfg.evolution
        self.settings = Settings(
            alpha=1 - e.confidence,
            min_samples=e.min_samples,
            latency_margin=e.latency_margin,
            min_improvement=e.min_improvement,
            error_margin=e.error_margin,
            mismatch_tolerance=e.mismatch_tolerance,
            memory_margin=e.memory_margin,
            capacity_margin=e.capacity_margin,
        )
        self.history = History(cfg.o_supervisor.data_dir / "evolution", e.history_size)
        self.running: dict[str, Experiment] = {}
        self.next_number = 1

    # -- starting: shadows, code, mirror -----------------------------------------------------

    def _start(self, request: ExperimentStart, ratio: float, duration: float) -> Experiment:
        exp = Experiment(
            f"e{self.next_number}", request.target, request.code, ratio, duration,
            request.reason, request.origin, request.proposal, self.settings,
        )  # fmt: skip
        self.next_number += 1
        self.running[exp.id] = exp
        fixed.preload()  # ready by the first verdict's explanation, off this loop
        self._save_in_flight()
        logger.info(
            "arbiter: experiment {} for {} ({}): candidate {}, control {}, {:.0%} of traffic",
            exp.id, exp.target, exp.origin, exp.arms["candidate"], exp.arms["control"], exp.ratio,
        )  # fmt: skip
        for role, shadow in exp.arms.items():
            answer = functools.partial(self._arm_started, exp, role)
            self.parent.call_async(StartShadow(shadow), answer, START_TIMEOUT)
        return exp

    def _arm_started(self, exp: Experiment, role: str, ok: bool, value: Any) -> None:
        if exp.state is not ExpState.STARTING:
            if ok:  # decided while this arm started: it was not there yet to be stopped
                self.parent.call_async(StopShadow(exp.arms[role]), _ignore, 60.0)
            return
        if not ok:
            self._finish(
                exp, Outcome.INCONCLUSIVE, "arm_failed", f"the {role} shadow did not start: {value}"
            )
            return
        exp.up.add(role)
        if len(exp.up) == len(ROLES):
            exp.move(ExpState.LOADING)
            self.peer("agent:main").call_async(
                LoadedCode(), functools.partial(self._load, exp), 10.0
            )

    def _load(self, exp: Experiment, ok: bool, main_code: Any) -> None:
        if exp.state is not ExpState.LOADING:
            return
        if not ok:
            why = f"the main agent's code could not be read: {main_code}"
            self._finish(exp, Outcome.INCONCLUSIVE, "arm_failed", why)
            return
        loads = [(role, module, source) for role in ROLES for module, source in main_code.items()]
        if not loads:  # the main runs the code it started with: nothing to load
            self._mirror(exp)
            return
        pending = [len(loads)]
        for role, module, source in loads:
            answer = functools.partial(self._loaded, exp, role, module, pending)
            self._hot_reload(f"agent:{exp.arms[role]}", source, module, answer)

    def _hot_reload(
        self, manager: str, source: str, module: str, then: Callable[[str | None], None]
    ) -> None:
        """Load ``source`` as ``module`` into the agent of ``manager``; ``then(error)``, with
        None once it loaded."""

        def answered(ok: bool, value: Any) -> None:
            then(value if not ok else None if value.get("ok") else value.get("error"))

        try:
            self.peer(manager).call_async(HotReload(source, module), answered, 30.0)
        except CallError as exc:
            answered(False, str(exc))

    def _loaded(
        self, exp: Experiment, role: str, module: str, pending: list[int], error: str | None
    ) -> None:
        if exp.state is not ExpState.LOADING:
            return
        if error is not None:
            why = f"the {role} could not load the main's {module}: {error}"
            self._finish(exp, Outcome.INCONCLUSIVE, "arm_failed", why)
            return
        pending[0] -= 1
        if pending[0] == 0:
            self._mirror(exp)

    def _mirror(self, exp: Experiment) -> None:
        mirror = MirrorStart(exp.id, list(exp.arms.values()), exp.ratio)
        self.peer("splitter").call_async(mirror, functools.partial(self._mirroring, exp), 10.0)

    def _mirroring(self, exp: Experiment, ok: bool, value: Any) -> None:
        if exp.state is not ExpState.LOADING:
            return
        if not ok:
            self._finish(exp, Outcome.INCONCLUSIVE, "arm_failed", f"mirroring failed: {value}")
            return
        exp.move(ExpState.CALIBRATING)
        exp.calibrating_since, exp.mirrored_at = time.monotonic(), time.time()
        exp.mirror = value
        if not self.cfg.evolution.calibration:  # off: the pair's own difference counts as none
            self._switch(exp)

    def _switch(self, exp: Experiment) -> None:
        """The pair's own difference is measured: the proposed code goes into the candidate."""
        exp.move(ExpState.SWITCHING)
        candidate = f"agent:{exp.arms['candidate']}"
        self._hot_reload(candidate, exp.code, exp.target, functools.partial(self._switched, exp))

    def _switched(self, exp: Experiment, error: str | None) -> None:
        if exp.state is not ExpState.SWITCHING:
            return
        if error is not None:
            why = f"the candidate code failed to load into {exp.target}: {error}"
            self._finish(exp, Outcome.REJECTED, "load_failed", why)
            return
        if exp.starved:
            self._finish(exp, Outcome.INCONCLUSIVE, "not_enough_data", exp.starved)
            return
        exp.move(ExpState.RUNNING)
        exp.running_since, exp.straddled = time.monotonic(), True

    # -- judging -----------------------------------------------------------------------------

    def _look(self, exp: Experiment) -> None:
        """One look: new samples, the mirror's figures, the arms' and main's health."""
        if exp.state is ExpState.WATCHING:
            since = MetricsHistory("main", self.cfg.evolution.rollback_watch / 1000 + 10)
            calls = [("agent:main", AgentStatus()), ("agent:main", LoadedCode()), ("health", since)]
            self.gather(calls, functools.partial(self._watch, exp), TICK * 5)
        elif exp.state in (ExpState.CALIBRATING, ExpState.RUNNING):
            calls = [
                ("health", ExperimentSamples(exp.id, after=exp.seq)),
                ("splitter", MirrorStatus()),
            ] + [(f"agent:{exp.arms[role]}", AgentStatus()) for role in ROLES]
            self.gather(calls, functools.partial(self._judge, exp), TICK * 5)

    def _judge(self, exp: Experiment, results: list[tuple[bool, Any]]) -> None:
        if exp.state not in (ExpState.CALIBRATING, ExpState.RUNNING):
            return
        (ok, samples), (_, mirrors), *arms = results
        if ok:
            self._take(exp, samples)
        for figures in mirrors if isinstance(mirrors, list) else ():
            if figures.get("id") == exp.id:
                readings.take_mirror(exp, figures)
        for role, (ok, status) in zip(ROLES, arms, strict=True):
            died = readings.died(status) if ok else f"its manager is gone ({status})"
            if died is None:
                continue
            if exp.state is ExpState.CALIBRATING:  # on the main's code: not the candidate's fault
                why = f"the {role} died before the candidate's code was loaded: {died}"
                self._finish(exp, Outcome.INCONCLUSIVE, "arm_failed", why)
            elif role == "candidate":
                self._finish(exp, Outcome.REJECTED, "candidate_died", f"the candidate died: {died}")
            else:
                self._finish(exp, Outcome.INCONCLUSIVE, "control_died", f"the control died: {died}")
            return
        if exp.state is ExpState.CALIBRATING:
            self._calibrated_yet(exp)
            return
        cand_rss, ctrl_rss = (readings.resident(status) if ok else None for ok, status in arms)
        if cand_rss is not None and ctrl_rss is not None:
            exp.evidence.add_memory(cand_rss, ctrl_rss)
        final = exp.elapsed(time.monotonic()) >= exp.duration
        verdict = decide(exp.evidence, self.settings, final=final)
        if verdict.decision is not Decision.CONTINUE:
            self._finish(exp, OUTCOME_OF[verdict.decision], verdict.rule, verdict.reason)

    def _take(self, exp: Experiment, samples: list[dict[str, Any]]) -> None:
        """One look's new samples: into the calibration while both arms run the main's
        code, into the evidence once the candidate runs its own; dropped when they
        straddle the switch."""
        calibrating = exp.state is ExpState.CALIBRATING
        looks: dict[str, list[float]] = {role: [] for role in ROLES}
        for s in samples:
            exp.seq = max(exp.seq, s["seq"])
            role = exp.role_of(s["arm"])
            if role is None or exp.straddled:
                continue
            outcome = "error" if s["error"] else s["outcome"]
            latency, waited = float(s["latency_ms"]), s["waited_ms"]
            if not calibrating:
                exp.evidence.add(Sample(role, latency, bool(s["error"]), outcome, waited))
            elif outcome != "error":
                looks[role].append(latency)
        if calibrating:
            for role, latencies in looks.items():
                exp.evidence.calibrate(role, latencies)
        elif not exp.straddled:
            exp.evidence.close_batch()  # a look: what came since the last one is a batch
        exp.straddled = False

    def _calibrated_yet(self, exp: Experiment) -> None:
        """Switch to the proposed code once the pair's own difference is measured; give up
        when the experiment's window passed on top of the calibration's without enough
        traffic for it."""
        elapsed = time.monotonic() - (exp.calibrating_since or 0.0)
        looks, calibration = exp.evidence.calibration.n, self.cfg.evolution.calibration / 1000
        if elapsed >= calibration and looks >= MIN_BATCHES:
            self._switch(exp)
        elif elapsed >= calibration + exp.duration:
            # Still loaded, to tell a proposal whether its code would run at all
            exp.starved = (
                f"too little traffic to measure the arms' own difference: {looks} looks "
                f"with both arms answering in {elapsed:.0f} s, {MIN_BATCHES} needed"
            )
            self._switch(exp)

    def _finish(self, exp: Experiment, outcome: Outcome, rule: str, why: str) -> None:
        """The verdict: stop the mirror and the arms; promote or conclude."""
        exp.decide(outcome, rule, why, decide(exp.evidence, self.settings, final=True))
        logger.info("arbiter: experiment {} {} ({}): {}", exp.id, outcome, rule, why)
        self.peer("splitter").call_async(MirrorStop(exp.id), _ignore, 10.0)
        self.peer("health").call_async(ExperimentSamples(exp.id, forget=True), _ignore, 10.0)
        for shadow in exp.arms.values():
            self.parent.call_async(StopShadow(shadow), _ignore, 60.0)
        if outcome is not Outcome.PROMOTED:
            self._conclude(exp)
            return
        exp.move(ExpState.PROMOTING)
        promoted = functools.partial(self._promoted, exp)
        self._hot_reload("agent:main", exp.code, exp.target, promoted)

    def _promoted(self, exp: Experiment, error: str | None) -> None:
        if error is not None:
            why = f"{exp.explanation}; but the main agent refused the code: {error}"
            exp.decide(Outcome.REJECTED, "promotion_failed", why)
            self._conclude(exp)
            return
        exp.promoted_at = time.time()
        watch = self.cfg.evolution.rollback_watch / 1000
        if not watch:
            self._conclude(exp)
            return
        exp.move(ExpState.WATCHING)
        exp.watch_until = time.monotonic() + watch
        exp.main_generation = None
        self._save_in_flight()
        before = MetricsHistory("main", BASELINE_S)  # the main's figures to watch against
        self.peer("health").call_async(before, functools.partial(self._baseline, exp), 10.0)

    def _watch(self, exp: Experiment, results: list[tuple[bool, Any]]) -> None:
        if exp.state is not ExpState.WATCHING:
            return
        why, revert = readings.rollback_reason(exp, results, self.cfg.evolution)
        if why is not None:
            if revert:
                self.peer("agent:main").call_async(Revert(exp.target), _ignore, 30.0)
            exp.decide(Outcome.ROLLED_BACK, "rollback", why)
            logger.warning("arbiter: experiment {} rolled back: {}", exp.id, why)
            self._conclude(exp)
        elif time.monotonic() >= exp.watch_until:
            self._conclude(exp)

    def _baseline(self, exp: Experiment, ok: bool, records: Any) -> None:
        if ok:
            exp.baseline = watch.before_promotion(records, exp.mirrored_at, exp.promoted_at or 0.0)

    def _conclude(self, exp: Experiment) -> None:
        if exp.state is not ExpState.DECIDED:
            exp.move(ExpState.DECIDED)
        self.running.pop(exp.id, None)
        self._save_in_flight()
        self.history.add(exp.record(code=True))
        assert exp.outcome is not None
        self.peer("telemetry").cast(
            Execute(
                ("osup", "evolution", "verdict"),
                {"samples": sum(c["n"] for c in exp.evidence.counts().values())},
                {"id": exp.id, "verdict": exp.outcome.value, "rule": exp.rule},
            )
        )
        if exp.origin != "cli":
            result = EvolutionResult(
                exp.proposal,
                exp.outcome is Outcome.PROMOTED,
                exp.outcome.value,
                exp.explanation,
                exp.id,
            )
            self.peer(f"agent:{exp.origin}").cast(result)

    # -- helpers -----------------------------------------------------------------------------

    def _save_in_flight(self) -> None:
        self.history.set_in_flight([exp.record() for exp in self.running.values()])

    def _close_interrupted(self, entry: dict[str, Any]) -> None:
        """An experiment in flight when the arbiter last stopped: stop what it left running
        and record how it ended."""
        arms = entry.get("arms")
        for shadow in arms.values() if isinstance(arms, dict) else ():
            self.parent.call_async(StopShadow(str(shadow)), _ignore, 60.0)
        self.peer("splitter").call_async(MirrorStop(str(entry.get("id"))), _ignore, 10.0)
        record = interrupted(entry)
        self.history.add(record)
        logger.warning(
            "arbiter: experiment {} was interrupted: {}", record["id"], record["verdict"]
        )
