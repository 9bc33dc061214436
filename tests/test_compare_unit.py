"""Compare hooks: loaded by path with a clear refusal, and the two shipped ones."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from osup_mp.evolution import compare

pytestmark = pytest.mark.unit

HITS = [{"id": "a", "score": 0.9}, {"id": "b", "score": 0.8}]


def test_a_hook_is_loaded_by_path_or_refused_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert compare.load("osup_mp.evolution.compare:same_ids") is compare.same_ids
    (tmp_path / "broken_hook.py").write_text("raise RuntimeError('no luck')\n")
    (tmp_path / "plain_hook.py").write_text("value = 3\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    refusals = {
        "no_colon": "is not of the form package.module:function",
        "no_such_module_here:f": "cannot import no_such_module_here: ModuleNotFoundError",
        "broken_hook:f": "cannot import broken_hook: RuntimeError: no luck",
        "plain_hook:value": "plain_hook has no function value",
    }
    for path, reason in refusals.items():
        with pytest.raises(ValueError, match=reason):
            compare.load(path)
    sys.modules.pop("plain_hook", None)


def test_same_ids_ignores_order_and_scores_but_not_other_hits() -> None:
    rescored = [{"id": "b", "score": 1.8}, {"id": "a", "score": 1.9}]
    assert compare.same_ids({}, HITS, rescored)
    assert not compare.same_ids({}, HITS, [{"id": "a", "score": 0.9}, {"id": "c", "score": 0.8}])
    assert not compare.same_ids({}, HITS, HITS[:1])
    assert compare.same_ids({}, {"n": 1}, {"n": 1}) and not compare.same_ids({}, 1, 2)


def test_ignoring_times_drops_time_keys_at_any_depth() -> None:
    main = {"stats": {"blocks": 3, "updated_at": 1.0}, "timestamp": 5, "items": [{"ts_at": 1}]}
    arm = {"stats": {"blocks": 3, "updated_at": 2.0}, "timestamp": 6, "items": [{"ts_at": 9}]}
    assert compare.ignoring_times({}, main, arm)
    assert not compare.ignoring_times({}, main, arm | {"stats": {"blocks": 4}})
    assert not compare.ignoring_times({}, {"attempt": 1}, {"attempt": 2})  # not a time key


def test_a_hook_that_raises_compares_exactly_and_is_counted() -> None:
    from osup_mp.components.messages import Mirrored
    from osup_mp.components.splitter import TrafficSplitter
    from osup_mp.wire import digest

    def fragile(request: object, main: object, arm: object) -> bool:
        raise KeyError("id")

    splitter = TrafficSplitter()
    splitter.hook = fragile
    copy = Mirrored({"op": "memory_search"}, True, digest(HITS), 1.0, 5, HITS)
    assert splitter._same(copy, digest(HITS), HITS)  # the same bytes: they agree
    assert not splitter._same(copy, digest(HITS[:1]), HITS[:1])
    assert splitter.hook_errors == 2
    splitter.hook = compare.same_ids
    assert splitter._same(copy, digest(HITS[::-1]), HITS[::-1]) and splitter.hook_errors == 2


def test_recall_90_counts_hits_as_good_as_the_mains_worst_ties_included() -> None:
    main = [{"id": i, "score": 1.0 - i / 100} for i in range(10)]  # worst 0.91
    tied = [*main[:9], {"id": 99, "score": 0.91}]  # another hit as good as the 10th
    assert compare.recall_90({}, main, tied)
    one_worse = [*main[:9], {"id": 98, "score": 0.5}]  # 9 of 10 good: recall 0.9
    assert compare.recall_90({}, main, one_worse)
    two_worse = [*main[:8], {"id": 98, "score": 0.5}, {"id": 97, "score": 0.4}]
    assert not compare.recall_90({}, main, two_worse)
    assert compare.recall_90({}, [], []) and not compare.recall_90({}, [], main)
    assert compare.recall_90({}, [{"id": 1}], [{"id": 1}])  # no scores: by ids
    assert not compare.recall_90({}, {"a": 1}, {"a": 2})  # not hits: exactly


@pytest.mark.unit
def test_recall_is_the_share_of_the_mains_hits_the_arm_matches() -> None:
    main = [{"id": i, "score": 1.0 - i / 10} for i in range(4)]  # worst 0.7
    assert compare.recall({}, main, main) == 1.0
    assert compare.recall({}, main, [*main[:3], {"id": 9, "score": 0.7}]) == 1.0  # a tie
    assert compare.recall({}, main, [*main[:2], {"id": 9, "score": 0.1}]) == 0.5
    assert compare.recall({}, [], []) == 1.0 and compare.recall({}, [], main) == 0.0
    assert compare.recall({}, [{"id": 1}, {"id": 2}], [{"id": 2}]) == 0.5  # by ids
    assert compare.recall({}, {"a": 1}, {"a": 1}) == 1.0
    assert compare.recall({}, {"a": 1}, {"a": 2}) == 0.0
