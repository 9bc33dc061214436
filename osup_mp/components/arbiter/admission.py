"""Whether an experiment may start: every refusal says why, naming the config key.

The one decision: everything that can be checked without the tree (evolution enabled, a
module name, code that compiles, ratio and duration) is checked before any shadow is asked
for, so a bad request costs nothing and leaves nothing behind. The code is only compiled
here, never run: it runs in the candidate shadow, under that shadow's limits.
"""

from __future__ import annotations

from typing import Any

from osup_mp.components.messages import ExperimentStart
from osup_mp.config import Config
from osup_mp.runtime.calls import CallError

ARMS = 2  # shadows per experiment: candidate and control


def check(cfg: Config, request: ExperimentStart) -> tuple[float, float]:
    """The experiment's ratio and duration (s); :class:`CallError` when it may not start."""
    o = cfg.o_supervisor
    if not o.evolution_enabled:
        raise CallError(f"evolution is disabled: {where(cfg, 'o_supervisor', 'evolution_enabled')}")
    if not request.target.isidentifier():
        raise CallError(f"target {request.target!r} is not a module name")
    try:
        compile(request.code, f"<candidate {request.target}>", "exec")
    except SyntaxError as exc:
        raise CallError(f"the code does not compile: {exc.msg} (line {exc.lineno})") from None
    except ValueError as exc:  # NUL bytes, say
        raise CallError(f"the code does not compile: {exc}") from None
    ratio = cfg.evolution.mirror_ratio if request.ratio is None else request.ratio
    if not 0 < ratio <= 1:
        raise CallError(f"ratio must be in (0, 1], not {ratio}")
    duration = o.shadow_test_duration / 1000 if request.duration is None else request.duration
    if duration <= 0:
        raise CallError(f"duration must be positive, not {duration}")
    return float(ratio), float(duration)


def check_room(cfg: Config, count: dict[str, Any]) -> None:
    """:class:`CallError` unless ``count`` (the tree's shadows) leaves room for the arms."""
    if count["running"] + ARMS > count["max"]:
        raise CallError(
            f"{count['running']} shadows run and an experiment needs {ARMS} more: "
            + where(cfg, "o_supervisor", "max_concurrent_shadows")
        )


def where(cfg: Config, section: str, key: str) -> str:
    """``[section] key = value (set in ...)``, for a refusal an operator can act on."""
    value = getattr(getattr(cfg, section), key)
    shown = str(value).lower() if isinstance(value, bool) else value
    source = cfg.overridden.get(f"{section}.{key}") or cfg.source or "the embedded defaults"
    return f"[{section}] {key} = {shown} (set in {source})"
