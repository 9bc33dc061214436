"""Every key of the configuration: embedded default, what it accepts, how it converts.

The defaults equal the shipped ``config.toml`` (a test checks it), so the tool runs with no
file; the ``[dev.*]`` / ``[prod.*]`` / ``[test.*]`` overlays have embedded defaults too.
"""

from __future__ import annotations

import copy
import math
import os
import re
from collections.abc import Callable
from typing import Any, Final, NamedTuple

from osup_mp.config.sections import Strategy

LOG_LEVELS = ("trace", "debug", "info", "success", "warning", "error", "critical")
MAX_FRAME_LIMIT: Final = 64 * 1024 * 1024
_LOG_FORMAT = "{time:YYYY-MM-DD HH:mm:ss.SSS} {extra[component]} [{level}] {message}"
_LEVEL_NAMES = {"warn": "warning"} | {level: level for level in LOG_LEVELS}
_SHM_NAME = re.compile(r"/[A-Za-z0-9_.-]{1,250}")
_HOOK_PATH = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")  # package.module:function


# ---------------------------------------------- schema: embedded defaults + checks
_Convert = Callable[[Any], Any]  # normalized value, or raises ValueError/KeyError


class _Field(NamedTuple):
    default: Any  # must equal the shipped config.toml
    expected: str  # completes "expected ..."
    convert: _Convert


def _when(ok: Callable[[Any], bool], convert: _Convert = lambda v: v) -> _Convert:
    def run(value: Any) -> Any:
        if not ok(value):
            raise ValueError
        return convert(value)

    return run


def _ints(lo: int, hi: float = math.inf) -> _Convert:
    return _when(lambda v: type(v) is int and lo <= v <= hi)  # bool is not an int


def _choice(*options: str) -> _Convert:
    return _when(lambda v: v in options)


_TEXT = _when(lambda v: isinstance(v, str) and v != "")
_ANY_TEXT = _when(lambda v: isinstance(v, str))
_BOOL = _when(lambda v: isinstance(v, bool))
_SHM = _when(lambda v: isinstance(v, str) and _SHM_NAME.fullmatch(v) is not None)
_STRATEGY = _when(lambda v: type(v) is str, Strategy)
_NUMBER = _when(lambda v: type(v) in (int, float) and 0 < v < math.inf, float)
_NONNEG_NUMBER = _when(lambda v: type(v) in (int, float) and 0 <= v < math.inf, float)
_LIST = _when(lambda v: type(v) in (list, tuple) and {*map(type, v)} <= {str}, tuple)
_FRACTION = _when(lambda v: type(v) in (int, float) and 0 < v < 1, float)
_HOOK = _when(lambda v: isinstance(v, str) and (v == "" or _HOOK_PATH.fullmatch(v) is not None))
_CPUS = _when(
    lambda v: type(v) in (list, tuple) and all(type(c) is int and c >= 0 for c in v),
    lambda v: _on_this_host(tuple(sorted(set(v)))),
)
_SHARE = _when(lambda v: type(v) in (int, float) and 0 < v <= 1, float)
_LEVEL = _when(lambda v: type(v) is str, lambda v: _LEVEL_NAMES[v.lower()])
_NONEMPTY, _PATH = "a non-empty string", "a non-empty path"
_MS, _NONNEG = "a positive integer (milliseconds)", "a non-negative integer"
_SHM_EXPECTED = "a shared-memory name matching ^/[A-Za-z0-9_.-]{1,250}$"
_FRAME_EXPECTED = f"an integer between 1024 and {MAX_FRAME_LIMIT} (bytes)"
_FRAME = _Field(1048576, _FRAME_EXPECTED, _ints(1024, MAX_FRAME_LIMIT))
_SHM_SIZE = _Field(1048576, "an integer >= 65536 (bytes)", _ints(65536))
_METADATA = _Field(["request_id", "module", "function"], "a list of strings", _LIST)


def _on_this_host(cpus: tuple[int, ...]) -> tuple[int, ...]:
    if not set(cpus) <= _HOST_CPUS:
        raise ValueError
    return cpus


def cpu_ranges(cpus: set[int]) -> str:
    """``{0, 1, 2, 5}`` as ``0-2,5`` (the kernel's cpulist format)."""
    ranges: list[str] = []
    for cpu in sorted(cpus):
        if ranges and cpu - 1 in cpus:
            start = ranges[-1].split("-")[0]
            ranges[-1] = f"{start}-{cpu}"
        else:
            ranges.append(str(cpu))
    return ",".join(ranges)


_HOST_CPUS = frozenset(os.sched_getaffinity(0))
_CPUS_EXPECTED = f"a list of CPU numbers this host has ({cpu_ranges(set(_HOST_CPUS))})"

_SCHEMA: Final[dict[str, dict[str, _Field]]] = {
    "o_supervisor": {
        "gerbil_executable": _Field("osup-mp-agent", _NONEMPTY, _TEXT),
        "gerbil_main_script": _Field("", "a string", _ANY_TEXT),
        "gerbil_home": _Field("/usr/local/gerbil", _PATH, _TEXT),
        "data_dir": _Field("data", _PATH, _TEXT),
        "checkpoint_dir": _Field("data/checkpoints", _PATH, _TEXT),
        "wal_dir": _Field("data/wal", _PATH, _TEXT),
        "log_dir": _Field("data/logs", _PATH, _TEXT),
        "run_dir": _Field("data/run", _PATH, _TEXT),
        "shared_memory_name": _Field("/o_shared_state", _SHM_EXPECTED, _SHM),
        "shared_memory_size": _SHM_SIZE,
        "heartbeat_interval": _Field(1000, _MS, _ints(1)),
        "heartbeat_timeout": _Field(5000, _MS, _ints(1)),
        "max_concurrent_shadows": _Field(10, _NONNEG, _ints(0)),
        "shadow_test_duration": _Field(300000, _MS, _ints(1)),
        "evolution_enabled": _Field(True, "a boolean (true or false)", _BOOL),
    },
    "logger": {
        "level": _Field("info", "one of " + ", ".join(LOG_LEVELS), _LEVEL),
        "format": _Field(_LOG_FORMAT, _NONEMPTY, _TEXT),
        "metadata": _METADATA,
        "rotation": _Field("10 MB", 'a non-empty string (e.g. "10 MB")', _TEXT),
        "retention": _Field(5, "an integer >= 1", _ints(1)),
    },
    "supervisor": {
        "strategy": _Field("one_for_one", "one of " + ", ".join(Strategy), _STRATEGY),
        "max_restarts": _Field(3, _NONNEG, _ints(0)),
        "max_seconds": _Field(5, "a positive number (seconds)", _NUMBER),
        "shutdown_timeout": _Field(5000, _MS, _ints(1)),
        "busy_poll_us": _Field(200, "an integer from 0 to 10000 (microseconds)", _ints(0, 10000)),
    },
    "telemetry": {"period": _Field(10000, _MS, _ints(1))},
    "control": {"max_frame": _FRAME},
    "agent": {
        "max_frame": _Field(MAX_FRAME_LIMIT, _FRAME_EXPECTED, _ints(1024, MAX_FRAME_LIMIT)),
        "ready_timeout": _Field(10000, _MS, _ints(1)),
        "request_timeout": _Field(30000, _MS, _ints(1)),
        "stop_timeout": _Field(3000, _MS, _ints(1)),
        "backoff_base": _Field(100, _MS, _ints(1)),
        "backoff_cap": _Field(10000, _MS, _ints(1)),
        "startsecs": _Field(1, "a non-negative number (seconds)", _NONNEG_NUMBER),
        "max_retries": _Field(5, _NONNEG, _ints(0)),
        "max_restarts": _Field(5, _NONNEG, _ints(0)),
        "max_seconds": _Field(10, "a positive number (seconds)", _NUMBER),
        "busy_poll_us": _Field(0, "an integer from 0 to 10000 (microseconds)", _ints(0, 10000)),
        "standby": _Field(True, "true or false", _BOOL),
        "standby_max_lag": _Field(100000, "a positive integer (WAL entries)", _ints(1)),
        "main_cpus": _Field([], _CPUS_EXPECTED, _CPUS),
    },
    "watchdog": {
        "shadow_rss_mb": _Field(512, "a positive integer (MiB)", _ints(1)),
        "shadow_cpu_percent": _Field(100, "a positive integer (% of one core)", _ints(1)),
        "shadow_cpu_window": _Field(10000, _MS, _ints(1)),
        "shadow_max_fds": _Field(256, "a positive integer", _ints(1)),
        "shadow_max_threads": _Field(64, "a positive integer", _ints(1)),
        "shadow_wall_time": _Field(600000, _MS, _ints(1)),
        "shadow_nice": _Field(10, "an integer from 0 to 19 (niceness)", _ints(0, 19)),
        "shadow_cpus": _Field([], _CPUS_EXPECTED, _CPUS),
    },
    "wal": {
        "fsync": _Field(
            "always", "one of always, everysec, no", _choice("always", "everysec", "no")
        ),
        "segment_entries": _Field(10000, "a positive integer", _ints(1)),
        "segment_bytes": _Field(67108864, "an integer >= 4096 (bytes)", _ints(4096)),
        "salvage": _Field("refuse", "one of refuse, truncate", _choice("refuse", "truncate")),
        "accept_gap": _Field(False, "true or false", _BOOL),
    },
    "health": {
        "history_size": _Field(720, "a positive integer (records per instance)", _ints(1)),
        "history_window": _Field(3600000, _MS, _ints(1)),
        "max_events": _Field(1000, "a positive integer", _ints(1)),
        "max_samples": _Field(10000, "a positive integer (per experiment)", _ints(1)),
    },
    "evolution": {
        "mirror_ratio": _Field(0.1, "a number in (0, 1]", _SHARE),
        "confidence": _Field(0.98, "a number in (0, 1)", _FRACTION),
        "min_samples": _Field(30, "a positive integer (per arm)", _ints(1)),
        "calibration": _Field(15000, "a non-negative integer (ms; 0 = off)", _ints(0)),
        "latency_margin": _Field(0.1, "a number in (0, 1) (relative)", _FRACTION),
        "min_improvement": _Field(0.05, "a number in (0, 1) (relative)", _FRACTION),
        "error_margin": _Field(0.01, "a number in (0, 1) (absolute)", _FRACTION),
        "mismatch_tolerance": _Field(0.005, "a number in (0, 1) (absolute)", _FRACTION),
        "memory_margin": _Field(0.25, "a positive number (relative)", _NUMBER),
        "capacity_margin": _Field(0.1, "a number in (0, 1) (absolute)", _FRACTION),
        "compare": _Field("", '"" or "package.module:function"', _HOOK),
        "history_size": _Field(100, "an integer >= 100", _ints(100)),
        "rollback_watch": _Field(30000, "a non-negative integer (ms; 0 = off)", _ints(0)),
        "rollback_margin": _Field(0.5, "a positive number (relative)", _NUMBER),
    },
    "vault": {
        "generations": _Field(3, "an integer >= 1", _ints(1)),
        "checkpoint_interval": _Field(300000, "a non-negative integer (ms; 0 = off)", _ints(0)),
        "checkpoint_wal_entries": _Field(10000, "a non-negative integer (0 = off)", _ints(0)),
    },
}
# "dev", the default environment, has no overlay: it runs the base values, so what the base
# section of config.toml says is what a plain ``osup-mp start`` does.
_DEFAULT_OVERLAYS: Final[dict[str, dict[str, dict[str, Any]]]] = {
    "prod": {
        "o_supervisor": {"evolution_enabled": True, "max_concurrent_shadows": 20},
        "logger": {"level": "info"},
    },
    "test": {
        "o_supervisor": {"evolution_enabled": False, "max_concurrent_shadows": 2},
        "agent": {"standby": False},
        "logger": {"level": "warning"},
    },
}


def default_document() -> dict[str, Any]:
    """A fresh copy of the embedded defaults, shaped like the shipped config.toml."""
    doc = {name: {k: f.default for k, f in keys.items()} for name, keys in _SCHEMA.items()}
    return copy.deepcopy(doc | _DEFAULT_OVERLAYS)
