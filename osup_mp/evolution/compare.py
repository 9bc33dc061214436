"""How two answers to one mirrored request are compared: exactly, or by a hook.

By default the splitter compares digests of the MessagePack encoding: equal bytes, equal
answers. Some answers differ where nobody cares (a timestamp, the order of equally good
hits, a score's last digits), and every such difference would count as a mismatch. As in
GitHub's Scientist, a *compare hook* says when two answers agree: ``[evolution] compare =
"package.module:function"``, a function ``(request, main_answer, arm_answer) -> bool``.
Three ship here, and one *score* hook, :func:`recall`, which says how far two answers agree
(a number in [0, 1]; ``evolve --score`` holds a variant's mean to a floor). The one
decision: a hook that raises is the hook's fault, not the arm's, so the answers are then
compared exactly and the failure counted and logged, never turned into a mismatch or an
error of the candidate.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from typing import Any

Compare = Callable[[Any, Any, Any], bool]
Score = Callable[[Any, Any, Any], float]  # how far the arm's answer agrees: 0 to 1

TIME_KEYS = re.compile(r"(timestamp|time|at|.+_(at|time|ts))", re.IGNORECASE)


def load(path: str) -> Callable[[Any, Any, Any], Any]:
    """The function ``path`` ("package.module:function") names; ValueError says why not."""
    module_name, _, name = path.partition(":")
    if not module_name or not name:
        raise ValueError(f"{path!r} is not of the form package.module:function")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any import error of a user's module: say which, and why
        raise ValueError(f"cannot import {module_name}: {type(exc).__name__}: {exc}") from exc
    hook = getattr(module, name, None)
    if not callable(hook):
        raise ValueError(f"{module_name} has no function {name}")
    return hook  # type: ignore[no-any-return]


def same_ids(request: Any, main: Any, arm: Any) -> bool:
    """Lists of hits agree when they name the same ``id``\\ s, in any order, whatever their
    scores (e.g. top-k searches where ties may come in either order); anything else
    compares exactly."""
    return bool(_ids(main) == _ids(arm))


def recall_90(request: Any, main: Any, arm: Any) -> bool:
    """Answers agree when :func:`recall` is at least 0.9."""
    return recall(request, main, arm) >= 0.9 - 1e-9


def recall(request: Any, main: Any, arm: Any) -> float:
    """Recall@k of the arm's hits against the main's: for scored hits, the share of the
    main's k that the arm matches by score (a hit scoring at least the main's worst counts,
    so that hits tied with the k-th count: an approximate search held to the exact one);
    for ids without scores, by ids; anything else is 1.0 when equal, else 0.0."""
    if _scored(main) and _scored(arm):
        if not main:
            return 1.0 if not arm else 0.0
        floor = min(float(hit["score"]) for hit in main) - 1e-6
        return min(1.0, sum(float(hit["score"]) >= floor for hit in arm) / len(main))
    wanted, got = _ids(main), _ids(arm)
    if not isinstance(wanted, list) or not isinstance(got, list):
        return 1.0 if wanted == got else 0.0
    return len(set(wanted) & set(got)) / len(wanted) if wanted else float(not got)


def _scored(answer: Any) -> bool:
    return isinstance(answer, list) and all(
        isinstance(hit, dict) and isinstance(hit.get("score"), int | float) for hit in answer
    )


def ignoring_times(request: Any, main: Any, arm: Any) -> bool:
    """Answers agree when they are equal once every map key that names a time
    (``timestamp``, ``time``, ``at``, ``*_at``, ``*_time``, ``*_ts``) is dropped, at any
    depth."""
    return bool(_timeless(main) == _timeless(arm))


def _ids(answer: Any) -> Any:
    if isinstance(answer, list) and all(isinstance(hit, dict) and "id" in hit for hit in answer):
        return sorted(repr(hit["id"]) for hit in answer)
    return answer


def _timeless(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: _timeless(v)
            for k, v in value.items()
            if not (isinstance(k, str) and TIME_KEYS.fullmatch(k))
        }
    if isinstance(value, list | tuple):
        return [_timeless(v) for v in value]
    return value
