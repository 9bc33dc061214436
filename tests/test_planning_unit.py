"""The two drivers of a restore plan: blocking calls, and calls answered through the loop
(here: replies handed over by the test, in order), on scripted plans and on the real one."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest

from osup_mp.components.agent.planning import PlanInFlight, Steps, run_now
from osup_mp.runtime.calls import CallError

pytestmark = pytest.mark.unit


class Peers:
    """Peers that answer ``answers[request]``: at once (``call``) or when :meth:`deliver`
    is called (``call_async``). An answer that is an exception is an error reply."""

    def __init__(self, answers: dict[str, Any], reachable: bool = True) -> None:
        self.answers = answers
        self.reachable = reachable
        self.asked: list[tuple[str, str, float]] = []
        self.waiting: list[tuple[Callable[[bool, Any], None], Any]] = []

    def peer(self, name: str) -> Peers._Ref:
        return Peers._Ref(self, name)

    def deliver(self) -> None:
        callback, answer = self.waiting.pop(0)
        if isinstance(answer, Exception):
            callback(False, str(answer))
        else:
            callback(True, answer)

    class _Ref:
        def __init__(self, peers: Peers, name: str) -> None:
            self.peers, self.name = peers, name

        def _answer(self, request: str, timeout: float) -> Any:
            if not self.peers.reachable:
                raise CallError(f"{self.name}: not running")
            self.peers.asked.append((self.name, request, timeout))
            return self.peers.answers[request]

        def call(self, request: str, timeout: float) -> Any:
            answer = self._answer(request, timeout)
            if isinstance(answer, Exception):
                raise CallError(f"{self.name}: {answer}")
            return answer

        def call_async(self, request: str, callback: Any, timeout: float) -> None:
            self.peers.waiting.append((callback, self._answer(request, timeout)))


def two_calls(log: list[str]) -> Steps:
    try:
        first = yield ("vault", "checkpoint", 30.0)
        second = yield ("wal", "tail", 60.0)
    except BaseException as exc:
        log.append(f"cleaned up after {type(exc).__name__}")
        raise
    return {"checkpoint": first, "tail": second}


def run_async(peers: Peers, steps: Steps) -> tuple[list[Any], PlanInFlight]:
    results: list[Any] = []
    plan = PlanInFlight(steps, peers, lambda restore, error: results.append((restore, error)))
    plan.start()
    return results, plan


def test_both_drivers_make_the_same_calls_and_give_the_same_plan() -> None:
    answers = {"checkpoint": {"lsn": 3}, "tail": [4, 5]}
    now = Peers(answers)
    assert run_now(two_calls([]), now) == {"checkpoint": {"lsn": 3}, "tail": [4, 5]}
    later = Peers(answers)
    results, _plan = run_async(later, two_calls([]))
    assert results == [] and len(later.waiting) == 1  # one call at a time, in order
    later.deliver()
    assert results == [] and len(later.waiting) == 1
    later.deliver()
    assert results == [({"checkpoint": {"lsn": 3}, "tail": [4, 5]}, None)]
    assert later.asked == now.asked == [("vault", "checkpoint", 30.0), ("wal", "tail", 60.0)]


def test_an_error_reply_is_thrown_into_the_plan_and_ends_it() -> None:
    answers = {"checkpoint": None, "tail": RuntimeError("segment 3 is corrupt")}
    log: list[str] = []
    with pytest.raises(CallError, match="wal: segment 3 is corrupt"):
        run_now(two_calls(log), Peers(answers))
    peers = Peers(answers)
    results, _plan = run_async(peers, two_calls(log))
    peers.deliver()
    peers.deliver()
    ((restore, error),) = results
    assert restore is None and isinstance(error, CallError)
    assert str(error) == "wal: segment 3 is corrupt"
    assert log == ["cleaned up after CallError"] * 2


def test_a_peer_that_is_not_running_fails_the_plan_at_once() -> None:
    results, _plan = run_async(Peers({}, reachable=False), two_calls([]))
    ((restore, error),) = results
    assert restore is None and str(error) == "vault: not running"


def test_a_plan_with_nothing_to_ask_is_done_before_start_returns() -> None:
    def nothing() -> Steps:
        return None
        yield ("vault", "never", 1.0)  # a generator all the same

    results, _plan = run_async(Peers({}), nothing())
    assert results == [(None, None)]


def test_a_cancelled_plan_cleans_up_and_a_late_reply_closes_its_descriptors() -> None:
    log: list[str] = []
    peers = Peers({"checkpoint": None})
    results, plan = run_async(peers, two_calls(log))
    plan.cancel()
    assert log == ["cleaned up after GeneratorExit"]
    r, w = os.pipe()
    callback, _answer = peers.waiting.pop()
    callback(True, ({"spans": []}, [r]))  # a reply that came with a descriptor, too late
    with pytest.raises(OSError):
        os.fstat(r)  # closed
    os.close(w)
    assert results == []  # and nobody was told
