"""Unit tests of the adaptive busy-poll window (osup_mp.lowlevel.spin)."""

from __future__ import annotations

from typing import Any

import pytest

from osup_mp.lowlevel import spin
from osup_mp.lowlevel.spin import Spinner

pytestmark = pytest.mark.unit  # no process started


class FakeClock:
    """A monotonic_ns that moves only when a test moves it."""

    def __init__(self) -> None:
        self.now = 0

    def monotonic_ns(self) -> int:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(spin, "time", fake)
    monkeypatch.setattr(spin.os, "sched_yield", lambda: None)
    return fake


def blocking(clock: FakeClock, waited_us: int, value: Any = "event") -> Any:
    def block(_timeout: float | None) -> Any:
        clock.now += waited_us * 1000
        return value

    return block


def waiter(poll: Any, block: Any) -> Any:
    """The one callable a Spinner waits with: ``poll()`` for a zero timeout, else ``block``."""
    return lambda timeout: poll() if timeout == 0 else block(timeout)


def test_window_grows_while_events_come_within_the_maximum(clock: FakeClock) -> None:
    s = Spinner(100)
    assert s.window_ns == 0

    def never() -> None:
        clock.now += 1000  # each empty poll takes 1 us

    windows = []
    for _ in range(6):
        s.wait(waiter(never, blocking(clock, 1)), 1.0)  # missed by the poll, but 1 us after it
        windows.append(s.window_ns // 1000)
    assert windows == [5, 10, 20, 40, 80, 100]
    # At the maximum, an event that a full window missed means polling is not paying.
    s.wait(waiter(never, blocking(clock, 1)), 1.0)
    assert s.window_ns == 50_000


def test_poll_hit_returns_without_blocking(clock: FakeClock) -> None:
    s = Spinner(100)
    s.window_ns = 50_000
    blocked = []
    polls = iter([None, None, "ready"])
    found = s.wait(waiter(lambda: next(polls), blocked.append), 1.0)
    assert found == "ready"
    assert blocked == []
    assert s.window_ns == 100_000  # a hit doubles the window, capped at the maximum


def test_slow_events_shrink_the_window_to_nothing(clock: FakeClock) -> None:
    s = Spinner(100)
    s.window_ns = 100_000

    def poll() -> None:
        clock.now += 1000  # each empty poll takes 1 us

    windows = []
    while s.window_ns:
        s.wait(waiter(poll, blocking(clock, 5000)), 1.0)  # the event took 5 ms: polling was waste
        windows.append(s.window_ns // 1000)
        assert len(windows) < 10
    assert windows[:3] == [50, 25, 12]
    assert windows[-1] == 0
    # Once at zero an idle loop never polls: the next wait blocks at once.
    polled = []
    s.wait(waiter(lambda: polled.append(1), blocking(clock, 5000)), 1.0)
    assert polled == []


def test_zero_maximum_or_zero_timeout_never_polls(clock: FakeClock) -> None:
    polled: list[int] = []

    def poll() -> None:
        polled.append(1)

    off = Spinner(0)
    for _ in range(5):
        off.wait(waiter(poll, blocking(clock, 1)), 1.0)
    assert off.window_ns == 0
    assert polled == []
    on = Spinner(100)
    on.window_ns = 100_000
    timeouts: list[float | None] = []

    def timer(timeout: float | None) -> str:
        timeouts.append(timeout)
        return "timer"

    assert on.wait(timer, 0) == "timer"
    assert timeouts == [0]  # one look, no polling loop before it


def test_configure_sets_the_default_for_new_spinners() -> None:
    before = spin.max_us()
    try:
        spin.configure(0)
        assert Spinner().wait(waiter(lambda: "x", lambda t: "blocked"), 1.0) == "blocked"
        spin.configure(250)
        assert spin.max_us() == 250
    finally:
        spin.configure(before)
