"""The traffic splitter component: mirrors of the main agent's read-only requests, sent to
the arms of an experiment, timed and compared, off the main path.

The main agent's manager answers its caller first, then casts a copy (the request, the
main's outcome as a digest, its latency and the WAL position its answer reflects) to the
splitter; the main never waits for it. The splitter sends each copy to every arm of the
mirrors that drew it, concurrently, times the arm's answer in the arm's manager, compares
it with the main's and records a sample in the health monitor, keeping only counts here.
The one decision: an answer is compared only when the arm had applied exactly the writes
the main had when it answered; otherwise it is counted as stale, never as a mismatch. A slow
or dead arm loses copies (counted per arm, ``ARM_WINDOW`` in flight at most) and never slows
anything else.
"""

from __future__ import annotations

import json
import random
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from loguru import logger

from osup_mp.components.messages import (
    Mirrored,
    MirrorRequest,
    MirrorStart,
    MirrorStatus,
    MirrorStop,
    RecordSample,
    RecordSamples,
    SetMirror,
    TrafficRecord,
    TrafficTake,
)
from osup_mp.components.recording import ABANDONED, Recording
from osup_mp.evolution import compare
from osup_mp.evolution.compare import Compare
from osup_mp.lowlevel.proc import lower_priority, pin_cpus
from osup_mp.runtime.calls import CallError
from osup_mp.runtime.component import Caller, Component, on_call, on_cast, on_info
from osup_mp.wire import digest
from osup_mp.wire.frames import service_ms

ARM_WINDOW = 64  # copies in flight per arm; more are dropped, not queued
SAMPLE_DELAY = 0.05  # s a sample may wait to go to the health monitor with others
SAMPLE_BATCH = 256  # samples sent at once, whatever the delay
MAX_EXAMPLES = 5  # mismatching answers kept per mirror, to show what differs
EXAMPLE_CHARS = 400  # of each request / answer in an example
LATENCIES_KEPT = 2048  # per arm, for the percentiles in status
OUTCOMES = ("match", "mismatch", "stale", "error")


@dataclass(slots=True)
class Arm:
    name: str
    in_flight: int = 0
    sent: int = 0
    dropped: int = 0
    outcomes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCIES_KEPT))
    service: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCIES_KEPT))

    def figures(self) -> dict[str, Any]:
        return {
            "arm": self.name, "sent": self.sent, "dropped": self.dropped,
            "in_flight": self.in_flight, **self.outcomes,
            "latency_ms": _percentiles(self.latencies), "service_ms": _percentiles(self.service),
        }  # fmt: skip


@dataclass(slots=True)
class Mirror:
    id: str
    ratio: float
    arms: dict[str, Arm]
    copies: int = 0
    examples: list[dict[str, Any]] = field(default_factory=list)
    main_latencies: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCIES_KEPT))


@dataclass(frozen=True, slots=True)
class _FlushSamples:
    """Time to send the samples made since the first of them to the health monitor."""


@dataclass(frozen=True, slots=True)
class _CheckRecordings:
    """A recording's deadline, or time to look for recordings nobody takes from."""


class TrafficSplitter(Component):
    def __init__(self, hook_path: str = "", cpus: tuple[int, ...] = (), nice: int = 0) -> None:
        self.cpus = cpus  # [watchdog] shadow_cpus: the mirror's work stays off the main's CPUs
        self.nice = nice  # [watchdog] shadow_nice: and runs on the main's spare cycles
        self.mirrors: dict[str, Mirror] = {}
        self.hook_path = hook_path  # "" or "package.module:function" ([evolution] compare)
        self.hook: Compare | None = None
        self.comparison = "exact"  # how answers are compared, as status shows it
        self.hook_errors = 0
        self.samples: list[RecordSample] = []  # made, not yet sent to the health monitor
        self.recordings: dict[str, Recording] = {}
        self._recordings_timer: int | None = None  # one for all recordings

    def init(self) -> None:
        pin_cpus(self.cpus)
        lower_priority(self.nice)
        if self.hook_path:
            try:
                self.hook = compare.load(self.hook_path)
                self.comparison = self.hook_path
            except ValueError as exc:  # compared exactly, and said so in status and the log
                self.comparison = f"exact ([evolution] compare {self.hook_path!r}: {exc})"
                logger.error("splitter: answers compared exactly: {}", self.comparison)
        self._tell_main()  # a restarted splitter mirrors nothing until asked again

    @on_call(MirrorStart)
    def _start(self, request: MirrorStart, caller: Caller) -> dict[str, Any]:
        if request.id in self.mirrors:
            raise CallError(f"mirror {request.id!r} already runs")
        if not 0 < request.ratio <= 1:
            raise CallError(f"ratio must be in (0, 1], not {request.ratio}")
        if not request.arms or "main" in request.arms:
            raise CallError("a mirror needs one or more shadows as arms (not main)")
        arms = {name: Arm(name) for name in request.arms}
        self.mirrors[request.id] = Mirror(request.id, float(request.ratio), arms)
        self._tell_main()
        logger.info(
            "splitter: mirror {} to {} at {:.0%}", request.id, ", ".join(arms), request.ratio
        )
        return self._figures(self.mirrors[request.id])

    @on_call(MirrorStop)
    def _stop(self, request: MirrorStop, caller: Caller) -> dict[str, Any]:
        self._flush_samples()
        mirror = self.mirrors.pop(request.id, None)
        if mirror is None:
            raise CallError(
                f"no mirror {request.id!r} (running: {', '.join(self.mirrors) or 'none'})"
            )
        self._tell_main()
        return self._figures(mirror)

    @on_call(MirrorStatus)
    def _status(self, request: MirrorStatus, caller: Caller) -> list[dict[str, Any]]:
        self._flush_samples()  # the health monitor has every sample these figures count
        return [self._figures(m) for m in self.mirrors.values()]

    def _share(self) -> float:
        """The share of read-only requests the main copies here: the most any wants."""
        now = time.monotonic()
        shares = [r.share for r in self.recordings.values() if r.active(now)]
        return max([m.ratio for m in self.mirrors.values()] + shares, default=0.0)

    def _tell_main(self) -> None:
        self.peer("agent:main").cast(SetMirror(self._share()))

    @on_call(TrafficRecord)
    def _record_start(self, request: TrafficRecord, caller: Caller) -> dict[str, Any]:
        if request.id in self.recordings:
            raise CallError(f"recording {request.id!r} already runs")
        if not 0 < request.share <= 1 or request.count < 1 or request.seconds <= 0:
            raise CallError("a recording needs a share in (0, 1], a count and seconds above 0")
        now = time.monotonic()
        recording = Recording(
            request.id, float(request.share), request.count, now + request.seconds, now
        )
        self.recordings[request.id] = recording
        self._tell_main()
        self._check_recordings_later()
        logger.info(
            "splitter: recording {}: {:.0%} of read-only requests, {} at most, {:g} s at most",
            request.id, request.share, request.count, request.seconds,
        )  # fmt: skip
        return recording.figures(now)

    @on_call(TrafficTake)
    def _record_take(self, request: TrafficTake, caller: Caller) -> dict[str, Any]:
        recording = self.recordings.get(request.id)
        if recording is None:
            raise CallError(f"no recording {request.id!r} (it finished, or was abandoned)")
        now = time.monotonic()
        if request.stop and recording.active(now):
            recording.stopped = True
            self._tell_main()
        page, more = recording.take(now)
        if recording.finished(now):
            del self.recordings[request.id]
            self._tell_main()
        return recording.figures(now) | {"requests": page, "more": more}

    def _check_recordings(self) -> None:
        """Drop recordings nobody takes from; tell the main when one stops keeping."""
        now = time.monotonic()
        for recording in list(self.recordings.values()):
            if recording.abandoned(now):
                del self.recordings[recording.id]
                logger.warning(
                    "splitter: recording {} dropped: nothing taken for {:g} s ({} kept)",
                    recording.id, ABANDONED, recording.kept,
                )  # fmt: skip
        self._tell_main()
        self._check_recordings_later()

    def _check_recordings_later(self) -> None:
        """One timer for every recording: at the nearest deadline, else to look for those
        abandoned; none once there is no recording."""
        if self._recordings_timer is not None:
            self.cancel_timer(self._recordings_timer)
            self._recordings_timer = None
        if self.recordings:
            now = time.monotonic()
            left = [r.deadline - now for r in self.recordings.values() if r.active(now)]
            delay = max(0.01, min([*left, ABANDONED / 3]))
            self._recordings_timer = self.send_after(delay, _CheckRecordings())

    @on_cast(Mirrored)
    def _on_copy(self, copy: Mirrored) -> None:
        top = self._share()
        if self.recordings:
            self._offer(copy.data, top)
        for mirror in self.mirrors.values():
            if mirror.ratio < top and random.random() >= mirror.ratio / top:
                continue  # the main draws at the highest ratio; this mirror wants fewer
            mirror.copies += 1
            mirror.main_latencies.append(copy.latency_ms)
            answers: dict[str, tuple[str, Any]] = {}  # this copy's, per arm, for examples
            # Arms answer in any order: an example is kept once a mismatch and a match
            # (the main's answer, which the main path does not keep) are both in. They are
            # sent in a random order: on a busy host the order changes how the arms are
            # scheduled, so it must not be tied to one arm.
            arms = list(mirror.arms.values())
            random.shuffle(arms)
            for arm in arms:
                self._send(mirror, arm, copy, answers)

    def _offer(self, data: Any, top: float) -> None:
        now = time.monotonic()
        for recording in self.recordings.values():
            if recording.active(now):
                recording.offer(data, now, top)
                if not recording.active(now):  # its count is reached
                    self._tell_main()

    def _send(
        self, mirror: Mirror, arm: Arm, copy: Mirrored, answers: dict[str, tuple[str, Any]]
    ) -> None:
        if arm.in_flight >= ARM_WINDOW:
            arm.dropped += 1
            return
        arm.in_flight += 1
        arm.sent += 1

        def answered(ok: bool, value: Any) -> None:
            arm.in_flight -= 1
            if not ok:  # the arm's manager could not take it (not running, gone)
                self._record(mirror, arm, "error", 0.0, None, None)
                return
            answer = digest(value["value"]) if value["ok"] else None
            if copy.lsn is None or value["lsn"] != copy.lsn:
                outcome = "stale"
            elif not value["ok"]:
                outcome = "match" if not copy.ok else "error"
            else:
                same = copy.ok and self._same(copy, answer, value["value"])
                outcome = "match" if same else "mismatch"
            timing = service_ms(value["handled_ms"], value["waited_ms"])
            self._record(mirror, arm, outcome, value["latency_ms"], timing, answer)
            if outcome in ("match", "mismatch") and len(mirror.examples) < MAX_EXAMPLES:
                _example(mirror, copy, answers, arm.name, outcome, value["value"])

        try:
            self.peer(f"agent:{arm.name}").call_async(MirrorRequest(copy.data), answered, 30.0)
        except CallError as exc:
            answered(False, str(exc))

    def _same(self, copy: Mirrored, answer: str | None, value: Any) -> bool:
        """Do the main's and the arm's answers agree: by the hook, else by digest."""
        if self.hook is not None and copy.answer is not None:
            try:
                return bool(self.hook(copy.data, copy.answer, value))
            except Exception as exc:  # the hook's fault, not the arm's: compared exactly
                self.hook_errors += 1
                if self.hook_errors & (self.hook_errors - 1) == 0:  # 1st, 2nd, 4th, ...
                    logger.warning(
                        "splitter: compare hook {} raised {}: {} ({} times so far); "
                        "compared exactly", self.comparison, type(exc).__name__, exc,
                        self.hook_errors,
                    )  # fmt: skip
        return answer == copy.digest

    def _record(
        self,
        mirror: Mirror,
        arm: Arm,
        outcome: str,
        ms: float,
        timing: tuple[float, float] | None,
        digest: str | None,
    ) -> None:
        """``ms``: the arm's round trip as its manager timed it; ``timing``: the agent's
        service time and the waits for a CPU taken out of it (see ``service_ms``), which
        the sample keeps instead when the agent gives them."""
        arm.outcomes[outcome] += 1
        waited = None
        if outcome != "error":
            arm.latencies.append(ms)
            if timing is not None:
                ms, waited = timing
                arm.service.append(ms)
        sample = RecordSample(mirror.id, arm.name, ms, outcome == "error", digest, outcome, waited)
        self.samples.append(sample)
        if len(self.samples) >= SAMPLE_BATCH:
            self._flush_samples()
        elif len(self.samples) == 1:
            self.send_after(SAMPLE_DELAY, _FlushSamples())

    def _flush_samples(self) -> None:
        """Send the samples made since the last flush to the health monitor, as one cast."""
        if self.samples:
            batch, self.samples = tuple(self.samples), []
            self.peer("health").cast(RecordSamples(batch))

    @on_info(_FlushSamples)
    def _on_flush_samples(self, msg: _FlushSamples) -> None:
        self._flush_samples()

    @on_info(_CheckRecordings)
    def _on_check_recordings(self, msg: _CheckRecordings) -> None:
        self._recordings_timer = None
        self._check_recordings()

    def _figures(self, mirror: Mirror) -> dict[str, Any]:
        return {
            "id": mirror.id, "ratio": mirror.ratio, "copies": mirror.copies,
            "compare": self.comparison, "compare_errors": self.hook_errors,
            "main_latency_ms": _percentiles(mirror.main_latencies),
            "arms": [arm.figures() for arm in mirror.arms.values()],
            "examples": mirror.examples,
        }  # fmt: skip


def _example(
    mirror: Mirror,
    copy: Mirrored,
    answers: dict[str, tuple[str, Any]],
    arm: str,
    outcome: str,
    answer: Any,
) -> None:
    """Keep an example of a mismatch once this copy has both a mismatching answer and a
    matching one; ``answers`` holds the copy's earlier answers of either kind."""
    other = "match" if outcome == "mismatch" else "mismatch"
    pending = [(name, value) for name, (kind, value) in answers.items() if kind == other]
    if not pending:
        answers[arm] = (outcome, answer)
        return
    if outcome == "mismatch":
        wrong, expected = [(arm, answer)], pending[0][1]
    else:
        wrong, expected = pending, answer
    answers.clear()  # one example per copy
    for name, got in wrong:
        mirror.examples.append(
            {"arm": name, "request": _short(copy.data), "expected": _short(expected)}
            | {"got": _short(got)}
        )


def _short(value: Any) -> str:
    text = json.dumps(value, default=repr, sort_keys=True)
    return text if len(text) <= EXAMPLE_CHARS else text[: EXAMPLE_CHARS - 1] + "…"


def _percentiles(values: deque[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p99": None}
    ranked = sorted(values)
    return {
        "p50": ranked[len(ranked) // 2],
        "p99": ranked[min(len(ranked) - 1, int(len(ranked) * 0.99))],
    }
