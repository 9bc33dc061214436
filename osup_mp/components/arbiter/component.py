"""The evolution arbiter component: runs shadow experiments and promotes or rejects code.

It serves the requests: an experiment started (from ``osup-mp experiment start`` or an
agent's ``evolution_intent``), stopped, listed and shown, running or from the history; and
every second it takes a look at each running one. The experiments' course is the layer
below (:mod:`.steps`). The one decision: a start is checked before any shadow is asked for
(:mod:`.admission`), and the one check that needs the tree, room for two more shadows, is
an asynchronous call like every step, so a request never holds up the loop.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from osup_mp.components.arbiter import admission
from osup_mp.components.arbiter.experiment import ExpState, Outcome
from osup_mp.components.arbiter.steps import TICK, ExperimentSteps
from osup_mp.components.messages import (
    ExperimentHistory,
    ExperimentList,
    ExperimentShow,
    ExperimentStart,
    ExperimentStop,
    Propose,
    ShadowCount,
)
from osup_mp.runtime.calls import CallError
from osup_mp.runtime.component import NOREPLY, Caller, on_call, on_info


@dataclass(frozen=True, slots=True)
class _Tick:
    """Time to look at every running experiment's evidence."""


class EvolutionArbiter(ExperimentSteps):
    """The messages the arbiter serves, and its look every second; see the module docstring."""

    def init(self) -> None:
        self.history.load()
        numbers = [int(i[1:]) for i in self.history.records if i[1:].isdigit()]
        for entry in self.history.in_flight():
            self._close_interrupted(entry)
            if str(entry.get("id", ""))[1:].isdigit():
                numbers.append(int(entry["id"][1:]))
        self.next_number = max(numbers, default=0) + 1
        self.history.set_in_flight([])
        self.send_after(TICK, _Tick())

    @on_info(_Tick)
    def _on_tick(self, msg: _Tick) -> None:
        for exp in list(self.running.values()):
            self._look(exp)
        self.send_after(TICK, _Tick())

    # -- requests ----------------------------------------------------------------------------

    @on_call(ExperimentStart)
    def _on_start(self, request: ExperimentStart, caller: Caller) -> Any:
        ratio, duration = admission.check(self.cfg, request)

        def counted(ok: bool, count: Any) -> None:
            try:
                if not ok:
                    raise CallError(f"cannot count the tree's shadows: {count}")
                admission.check_room(self.cfg, count)
            except CallError as exc:
                self.reply_error(caller, str(exc))
                return
            self.reply(caller, self._start(request, ratio, duration).record())

        self.parent.call_async(ShadowCount(), counted, 5.0)
        return NOREPLY

    @on_call(Propose)
    def _on_propose(self, request: Propose, caller: Caller) -> Any:
        start = ExperimentStart(
            request.code,
            request.target,
            reason=request.reason,
            origin=request.instance_id,
            proposal=request.proposal,
        )
        return self._on_start(start, caller)

    @on_call(ExperimentStop)
    def _on_stop(self, request: ExperimentStop, caller: Caller) -> dict[str, Any]:
        exp = self.running.get(request.id)
        if exp is None:
            running = ", ".join(self.running) or "none"
            raise CallError(f"no running experiment {request.id!r} (running: {running})")
        if exp.state is ExpState.PROMOTING:
            raise CallError(f"experiment {exp.id} is being promoted; stop it once it is watched")
        if exp.state is ExpState.WATCHING:
            self._conclude(exp)  # the promotion stands; only the watch ends
        else:
            elapsed = exp.elapsed(time.monotonic())
            why = f"stopped by the operator after {elapsed:.0f} s of mirrored traffic"
            self._finish(exp, Outcome.INCONCLUSIVE, "stopped", why)
        return exp.record()

    @on_call(ExperimentList)
    def _on_list(self, request: ExperimentList, caller: Caller) -> list[dict[str, Any]]:
        decided = [_public(r) for r in self.history.newest(20)]
        return [exp.record() for exp in self.running.values()] + decided

    @on_call(ExperimentShow)
    def _on_show(self, request: ExperimentShow, caller: Caller) -> dict[str, Any]:
        exp = self.running.get(request.id)
        if exp is not None:
            return exp.record()
        record = self.history.records.get(request.id)
        if record is None:
            raise CallError(f"no experiment {request.id!r} (osup-mp experiment list)")
        return _public(record)

    @on_call(ExperimentHistory)
    def _on_history(self, request: ExperimentHistory, caller: Caller) -> list[dict[str, Any]]:
        return [_public(r) for r in self.history.newest(request.n)]


def _public(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != "code"}
