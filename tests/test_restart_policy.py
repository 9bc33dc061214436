"""Unit tests of the agent restart policy and the supervisor's timers (injected clocks)."""

from __future__ import annotations

import random

import pytest

from osup_mp.components.agent.restarts import RestartPolicy
from osup_mp.runtime.children import Child, ChildSpec, ChildState
from osup_mp.runtime.timers import Timers

pytestmark = pytest.mark.unit  # no process started


def policy(seed: int = 0, **overrides: float) -> RestartPolicy:
    values: dict[str, float] = {
        "startsecs": 1.0,
        "max_retries": 5,
        "max_restarts": 5,
        "max_seconds": 10.0,
        "backoff_base": 0.1,
        "backoff_cap": 10.0,
    }
    values.update(overrides)
    return RestartPolicy(
        startsecs=values["startsecs"],
        max_retries=int(values["max_retries"]),
        max_restarts=int(values["max_restarts"]),
        max_seconds=values["max_seconds"],
        backoff_base=values["backoff_base"],
        backoff_cap=values["backoff_cap"],
        rng=random.Random(seed),
    )


def test_an_agent_that_started_up_is_restarted_at_once() -> None:
    p = policy()
    now = 100.0
    for _ in range(5):  # 3 s apart, as an operator's kills: never a loop
        decision = p.after_failure(now, up_since=now - 3.0)
        assert decision.delay == 0.0 and not decision.fatal
        now += 3.0


def test_a_death_within_startsecs_is_a_failed_start_and_backs_off() -> None:
    p = policy()
    delays = [p.after_failure(10.0 + i * 20, up_since=10.0 + i * 20 - 0.5).delay for i in range(4)]
    # Exponential from the base: [0.05, 0.1], [0.1, 0.2], [0.2, 0.4], [0.4, 0.8].
    for n, delay in enumerate(delays):
        assert 0.1 * 2**n * 0.5 <= delay <= 0.1 * 2**n
    assert p.start_failures == 4


def test_never_ready_counts_as_a_failed_start_and_goes_fatal_after_max_retries() -> None:
    p = policy(max_retries=3)
    decisions = [p.after_failure(float(i * 100), up_since=None) for i in range(4)]
    assert [d.fatal for d in decisions] == [False, False, False, True]
    assert "4 consecutive failed starts" in decisions[-1].why


def test_a_run_that_lasted_startsecs_resets_the_failed_starts() -> None:
    p = policy(max_retries=2)
    p.after_failure(0.0, None)
    p.after_failure(50.0, None)
    assert p.after_failure(100.0, up_since=98.0).delay == 0.0  # up 2 s: it started
    assert p.start_failures == 0
    assert not p.after_failure(150.0, None).fatal  # counting from one again


def test_restarts_beyond_the_intensity_back_off_even_after_starting_up() -> None:
    p = policy(max_restarts=3, max_seconds=10.0, startsecs=0.0)
    delays = [p.after_failure(float(t), up_since=float(t) - 0.5).delay for t in range(6)]
    assert delays[:3] == [0.0, 0.0, 0.0]
    assert all(d > 0 for d in delays[3:])
    assert delays[5] > delays[3] * 0.5 * 2  # still exponential (jitter at most halves)
    # Once the window has slid past the burst, a started-up agent restarts at once again.
    assert p.after_failure(100.0, up_since=90.0).delay == 0.0


def test_backoff_is_capped_and_jittered_over_many_seeds() -> None:
    ratios = []
    for seed in range(500):
        p = policy(seed, backoff_base=0.1, backoff_cap=1.0, max_retries=100)
        delay = 0.0
        for i in range(20):
            delay = p.after_failure(i * 100.0, None).delay
        assert 0.5 <= delay <= 1.0  # the cap, times the jitter factor
        ratios.append(delay / 1.0)
    mean = sum(ratios) / len(ratios)
    assert 0.72 < mean < 0.78  # uniform on [0.5, 1]: mean 0.75
    assert len({round(r, 6) for r in ratios}) > 450  # jitter actually varies by seed


def test_operator_reset_forgets_the_history() -> None:
    p = policy(max_retries=1)
    p.after_failure(0.0, None)
    p.reset()
    assert not p.after_failure(1.0, None).fatal


def test_timers_fire_in_order_once_and_can_be_cancelled() -> None:
    timers = Timers()
    fired: list[str] = []
    timers.at(2.0, lambda: fired.append("b"))
    timers.at(1.0, lambda: fired.append("a"))
    cancelled = timers.at(1.5, lambda: fired.append("never"))
    cancelled.cancel()
    assert timers.timeout(0.0) == 1.0
    timers.run_due(1.0)
    assert fired == ["a"]
    assert timers.timeout(1.2) == pytest.approx(0.8)
    # A callback that schedules an already-due timer runs it in the same pass.
    timers.at(1.9, lambda: timers.at(0.0, lambda: fired.append("chained")))
    timers.run_due(5.0)
    assert fired == ["a", "chained", "b"]
    assert timers.timeout(5.0) is None and len(timers) == 0


def test_child_state_transitions_are_checked() -> None:
    child = Child(ChildSpec("x", lambda: None))  # type: ignore[arg-type,return-value]
    child.move(ChildState.STARTING)
    child.move(ChildState.RUNNING)
    with pytest.raises(RuntimeError, match="cannot go from running to starting"):
        child.move(ChildState.STARTING)
    fired: list[int] = []
    child.timer = Timers().at(1.0, lambda: fired.append(1))
    child.move(ChildState.STOPPING)
    assert child.timer is None  # a transition cancels the pending deadline
    child.move(ChildState.STOPPED)
    with pytest.raises(RuntimeError):
        child.move(ChildState.RUNNING)
