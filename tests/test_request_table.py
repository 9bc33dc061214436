"""RequestTable: ids, answers and deadlines of requests in flight to an agent (pure logic)."""

from __future__ import annotations

from typing import Any

import pytest

from osup_mp.components.agent.requests import RequestTable

pytestmark = pytest.mark.unit  # no process started


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def recorder() -> tuple[list[tuple[str, bool, Any]], Any]:
    seen: list[tuple[str, bool, Any]] = []

    def target(name: str) -> Any:
        return lambda ok, value: seen.append((name, ok, value))

    return seen, target


def test_ids_are_fresh_and_pop_returns_each_target_once() -> None:
    table = RequestTable(Clock())
    _seen, target = recorder()
    a, b = target("a"), target("b")
    id_a = table.add(a, 130.0)
    id_b = table.add(b, 105.0)
    assert id_a != id_b and len(table) == 2
    assert table.pop(id_b) is b
    assert table.pop(id_b) is None  # a late or duplicate answer finds nothing
    assert table.pop(id_a) is a
    assert table.pop(12345) is None and len(table) == 0


def test_expire_fails_only_what_is_late_and_says_when_the_next_is_due() -> None:
    clock = Clock()
    table = RequestTable(clock)
    seen, target = recorder()
    table.add(target("default-1"), 130.0)
    clock.now = 110.0
    table.add(target("default-2"), 140.0)
    table.add(target("own-short"), 115.0)  # earlier than both added before it
    table.add(target("own-long"), 170.0)
    assert table.expire("late") == 5.0
    assert seen == []

    clock.now = 115.0
    assert table.expire("late") == 15.0  # next: default-1 at 130
    assert seen == [("own-short", False, "late")]

    clock.now = 135.0
    assert table.expire("late") == 5.0  # next: default-2 at 140
    assert seen[-1] == ("default-1", False, "late")

    clock.now = 200.0
    assert table.expire("late") is None
    assert {name for name, _ok, _v in seen} == {"own-short", "default-1", "default-2", "own-long"}
    assert len(table) == 0


def test_answered_requests_are_not_expired() -> None:
    clock = Clock()
    table = RequestTable(clock)
    seen, target = recorder()
    first = table.add(target("answered"), 101.0)
    table.add(target("pending"), 101.0)
    own = table.add(target("answered-own"), 100.5)
    table.pop(first)
    table.pop(own)
    clock.now += 2.0
    assert table.expire("late") is None
    assert seen == [("pending", False, "late")]


def test_fail_all_answers_everything_in_flight() -> None:
    table = RequestTable(Clock())
    seen, target = recorder()
    table.add(target("a"), 130.0)
    table.add(target("b"), 103.0)
    table.fail_all("agent exited")
    assert sorted(seen) == [("a", False, "agent exited"), ("b", False, "agent exited")]
    assert len(table) == 0 and table.expire("late") is None


def test_a_closed_connection_leaves_no_request_behind() -> None:
    from osup_mp.components.agent.requests import discard

    table = RequestTable(Clock())
    seen, target = recorder()
    gone, other = object(), object()
    ids = [table.add((gone, n), 130.0) for n in range(3)]  # type: ignore[arg-type]
    kept = table.add((other, 9), 130.0)  # type: ignore[arg-type]
    callback = table.add(target("cb"), 130.0)
    assert table.drop_connection(gone) == 3  # type: ignore[arg-type]
    assert len(table) == 2
    assert table.pop(ids[0]) is discard  # a late answer is recognised and dropped quietly
    assert table.pop(ids[0]) is None
    assert table.pop(kept) == (other, 9) and table.pop(callback) is not None
    assert seen == []


def test_unanswered_requests_keep_their_data_in_order_for_a_resend() -> None:
    table = RequestTable(Clock())
    _seen, target = recorder()
    first = table.add(target("a"), 130.0, {"op": "a"})
    second = table.add(target("b"), 130.0, {"op": "b"})
    third = table.add(target("c"), 130.0, {"op": "c"})
    table.pop(second)  # answered: not sent again
    assert table.unanswered() == [(first, {"op": "a"}), (third, {"op": "c"})]
