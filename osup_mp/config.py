"""Configuration for osup-mp: TOML file + environment overlay -> frozen dataclasses.

Sections mirror the seed's Elixir config (``[o_supervisor]`` is its application
env); ``[dev.*]`` / ``[prod.*]`` / ``[test.*]`` overlays (its dev/prod/test.exs)
are selected by ``--env`` / ``OSUP_ENV``.  Design decisions:

* Embedded defaults mirror the shipped ``config.toml`` (a test checks it), so the
  tool runs with no file.  Merge order: defaults <- file sections <- the file's
  ``[<env>.*]`` overlay <- ``overrides`` <- GERBIL_EXECUTABLE / GERBIL_HOME.
* Strict validation: unknown tables/keys are errors ("did you mean ..."), types
  are exact (a bool is not an int), every overlay is checked.  A ``ConfigError``
  is one line: file, dotted key the bad value came from (``dev.logger.level``
  for an overlay), what was expected and what was found.
* Relative paths resolve against the config file's directory (cwd without one),
  so two trees with two configs run side by side.
"""

from __future__ import annotations

import copy
import difflib
import enum
import json
import math
import os
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Final, NamedTuple

ENVIRONMENTS: Final[tuple[str, ...]] = ("dev", "prod", "test")
DEFAULT_ENV: Final = "dev"
LOG_LEVELS = ("trace", "debug", "info", "success", "warning", "error", "critical")
MAX_FRAME_LIMIT: Final = 64 * 1024 * 1024
_LOG_FORMAT = "{time:YYYY-MM-DD HH:mm:ss.SSS} {extra[component]} [{level}] {message}"
_LEVEL_NAMES = {"warn": "warning"} | {level: level for level in LOG_LEVELS}
_SHM_NAME = re.compile(r"/[A-Za-z0-9_.-]{1,250}")
_ENV_VARS = {"GERBIL_EXECUTABLE": "gerbil_executable", "GERBIL_HOME": "gerbil_home"}


class Strategy(str, enum.Enum):  # noqa: UP042 - plain str mixin: str()/format() keep "Strategy.X"
    """Supervisor restart strategy (OTP semantics)."""

    ONE_FOR_ONE = "one_for_one"
    ONE_FOR_ALL = "one_for_all"
    REST_FOR_ONE = "rest_for_one"


class ConfigError(Exception):
    """A configuration problem; ``str()`` is one line ``file: key: detail``."""

    def __init__(self, file: str, key: str, expected: str, detail: str = "") -> None:
        self.file, self.key, self.expected = file, key, expected
        self.detail = detail or f"expected {expected}"
        text = ": ".join(part for part in (file, key, self.detail) if part)
        super().__init__(text.replace("\r", "\\r").replace("\n", "\\n"))

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.file, self.key, self.expected, self.detail))


def _bad(file: str, key: str, expected: str, value: object) -> ConfigError:
    return ConfigError(file, key, expected, f"expected {expected}, got {_fmt(value)}")


@dataclass(frozen=True, slots=True)
class OSupervisorSection:
    gerbil_executable: str
    gerbil_main_script: str
    gerbil_home: Path
    data_dir: Path
    checkpoint_dir: Path
    wal_dir: Path
    log_dir: Path
    run_dir: Path
    shared_memory_name: str
    shared_memory_size: int
    heartbeat_interval: int
    heartbeat_timeout: int
    max_concurrent_shadows: int
    shadow_test_duration: int
    evolution_enabled: bool


@dataclass(frozen=True, slots=True)
class LoggerSection:
    level: str
    format: str
    metadata: tuple[str, ...]
    rotation: str
    retention: int


@dataclass(frozen=True, slots=True)
class SupervisorSection:
    strategy: Strategy
    max_restarts: int
    max_seconds: float
    shutdown_timeout: int
    busy_poll_us: int


@dataclass(frozen=True, slots=True)
class TelemetrySection:
    period: int


@dataclass(frozen=True, slots=True)
class ControlSection:
    max_frame: int


@dataclass(frozen=True, slots=True)
class AgentSection:
    """How agent managers run agents (times in ms)."""

    max_frame: int
    ready_timeout: int
    request_timeout: int
    stop_timeout: int
    backoff_base: int
    backoff_cap: int
    backoff_reset: int
    max_retries: int
    busy_poll_us: int


@dataclass(frozen=True, slots=True)
class WatchdogSection:
    """Per-shadow resource limits the watchdog enforces (times in ms)."""

    shadow_rss_mb: int
    shadow_cpu_percent: int
    shadow_cpu_window: int
    shadow_max_fds: int
    shadow_max_threads: int
    shadow_wall_time: int


@dataclass(frozen=True, slots=True)
class WALSection:
    """The write-ahead log: fsync policy (Redis-style), segment size, recovery mode."""

    fsync: str
    segment_entries: int
    segment_bytes: int
    salvage: str


@dataclass(frozen=True, slots=True)
class VaultSection:
    """Checkpoints: generations kept and the supervisor-requested cadence (ms; 0 = off)."""

    generations: int
    checkpoint_interval: int
    checkpoint_wal_entries: int


@dataclass(frozen=True, slots=True)
class Config:
    o_supervisor: OSupervisorSection
    logger: LoggerSection
    supervisor: SupervisorSection
    telemetry: TelemetrySection
    control: ControlSection
    agent: AgentSection
    watchdog: WatchdogSection
    wal: WALSection
    vault: VaultSection
    env: str
    source: Path | None
    base_dir: Path

    @property
    def pidfile(self) -> Path:
        return self.o_supervisor.run_dir / "osup-mp.pid"

    @property
    def control_socket(self) -> Path:
        return self.o_supervisor.run_dir / "control.sock"

    def data_socket(self, instance_id: str) -> Path:
        """The data-plane socket the manager of agent ``instance_id`` serves requests on."""
        return self.o_supervisor.run_dir / f"agent-{instance_id}.sock"

    @property
    def log_file(self) -> Path:
        return self.o_supervisor.log_dir / "osup-mp.log"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-friendly dict (paths as str, enums as values, tuples as lists)."""
        out: dict[str, Any] = {
            "env": self.env,
            "source": None if self.source is None else str(self.source),
            "base_dir": str(self.base_dir),
        }
        for name in _SECTION_TYPES:
            sec = getattr(self, name)
            out[name] = {f.name: _plain(getattr(sec, f.name)) for f in fields(sec)}
        return out


def _plain(value: object) -> object:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    return list(value) if isinstance(value, tuple) else value


_SECTION_TYPES: Final[dict[str, Any]] = {
    "o_supervisor": OSupervisorSection,
    "logger": LoggerSection,
    "supervisor": SupervisorSection,
    "telemetry": TelemetrySection,
    "control": ControlSection,
    "agent": AgentSection,
    "watchdog": WatchdogSection,
    "wal": WALSection,
    "vault": VaultSection,
}


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
_LIST = _when(lambda v: type(v) in (list, tuple) and {*map(type, v)} <= {str}, tuple)
_LEVEL = _when(lambda v: type(v) is str, lambda v: _LEVEL_NAMES[v.lower()])
_NONEMPTY, _PATH = "a non-empty string", "a non-empty path"
_MS, _NONNEG = "a positive integer (milliseconds)", "a non-negative integer"
_SHM_EXPECTED = "a shared-memory name matching ^/[A-Za-z0-9_.-]{1,250}$"
_FRAME_EXPECTED = f"an integer between 1024 and {MAX_FRAME_LIMIT} (bytes)"
_FRAME = _Field(1048576, _FRAME_EXPECTED, _ints(1024, MAX_FRAME_LIMIT))
_SHM_SIZE = _Field(1048576, "an integer >= 65536 (bytes)", _ints(65536))
_METADATA = _Field(["request_id", "module", "function"], "a list of strings", _LIST)

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
        "max_frame": _Field(16777216, _FRAME_EXPECTED, _ints(1024, MAX_FRAME_LIMIT)),
        "ready_timeout": _Field(10000, _MS, _ints(1)),
        "request_timeout": _Field(30000, _MS, _ints(1)),
        "stop_timeout": _Field(3000, _MS, _ints(1)),
        "backoff_base": _Field(100, _MS, _ints(1)),
        "backoff_cap": _Field(10000, _MS, _ints(1)),
        "backoff_reset": _Field(10000, _MS, _ints(1)),
        "max_retries": _Field(5, _NONNEG, _ints(0)),
        "busy_poll_us": _Field(0, "an integer from 0 to 10000 (microseconds)", _ints(0, 10000)),
    },
    "watchdog": {
        "shadow_rss_mb": _Field(512, "a positive integer (MiB)", _ints(1)),
        "shadow_cpu_percent": _Field(100, "a positive integer (% of one core)", _ints(1)),
        "shadow_cpu_window": _Field(10000, _MS, _ints(1)),
        "shadow_max_fds": _Field(256, "a positive integer", _ints(1)),
        "shadow_max_threads": _Field(64, "a positive integer", _ints(1)),
        "shadow_wall_time": _Field(600000, _MS, _ints(1)),
    },
    "wal": {
        "fsync": _Field(
            "always", "one of always, everysec, no", _choice("always", "everysec", "no")
        ),
        "segment_entries": _Field(10000, "a positive integer", _ints(1)),
        "segment_bytes": _Field(67108864, "an integer >= 4096 (bytes)", _ints(4096)),
        "salvage": _Field("refuse", "one of refuse, truncate", _choice("refuse", "truncate")),
    },
    "vault": {
        "generations": _Field(3, "an integer >= 1", _ints(1)),
        "checkpoint_interval": _Field(300000, "a non-negative integer (ms; 0 = off)", _ints(0)),
        "checkpoint_wal_entries": _Field(10000, "a non-negative integer (0 = off)", _ints(0)),
    },
}
_DEFAULT_OVERLAYS: Final[dict[str, dict[str, dict[str, Any]]]] = {
    "dev": {
        "o_supervisor": {"evolution_enabled": True, "max_concurrent_shadows": 5},
        "logger": {"level": "debug"},
    },
    "prod": {
        "o_supervisor": {"evolution_enabled": True, "max_concurrent_shadows": 20},
        "logger": {"level": "info"},
    },
    "test": {
        "o_supervisor": {"evolution_enabled": False, "max_concurrent_shadows": 2},
        "logger": {"level": "warning"},
    },
}


def default_document() -> dict[str, Any]:
    """A fresh copy of the embedded defaults, shaped like the shipped config.toml."""
    doc = {name: {k: f.default for k, f in keys.items()} for name, keys in _SCHEMA.items()}
    return copy.deepcopy(doc | _DEFAULT_OVERLAYS)


def _fmt(value: object) -> str:
    """Short, one-line, JSON-ish rendering of a bad value."""
    if isinstance(value, Mapping):
        return "a table"
    text = json.dumps(value, default=str, skipkeys=True)
    return text if len(text) <= 80 else text[:77] + "..."


def _unknown(file: str, key: str, known: Iterable[str], what: str) -> ConfigError:
    choices = list(known)
    expected = "one of " + ", ".join(choices)
    close = difflib.get_close_matches(key.rsplit(".", 1)[-1], choices, n=1)
    hint = f"did you mean {close[0]}?" if close else expected
    return ConfigError(file, key, expected, f"unknown {what} ({hint})")


# ----------------------------------------------------------------------- merging
class _Origin(NamedTuple):
    file: str  # path as given, "<defaults>", "<overrides>" or "<environment>"
    key: str  # dotted key (or variable name) as written in that source
    base: Path  # directory that relative paths from this source resolve against


_Values = dict[str, dict[str, tuple[Any, _Origin]]]


def _set(values: _Values, section: str, key: str, raw: object, origin: _Origin) -> None:
    field = _SCHEMA[section][key]
    try:
        value = field.convert(raw)
    except (TypeError, ValueError, KeyError):
        raise _bad(origin.file, origin.key, field.expected, raw) from None
    values.setdefault(section, {})[key] = (value, origin)


def _apply(values: _Values, table: Mapping[str, Any], src: _Origin) -> None:
    """Validate and merge a ``section -> key -> value`` table (src.key is a prefix)."""
    for section, body in table.items():
        where = f"{src.key}{section}"
        if section not in _SCHEMA:
            what = "table" if isinstance(body, Mapping) else "key"
            raise _unknown(src.file, where, _SCHEMA, what)
        if not isinstance(body, Mapping):
            raise _bad(src.file, where, "a table", body)
        for key, raw in body.items():
            dotted = f"{where}.{key}"
            if key not in _SCHEMA[section]:
                raise _unknown(src.file, dotted, _SCHEMA[section], "key")
            _set(values, section, key, raw, src._replace(key=dotted))


def _apply_document(values: _Values, doc: Mapping[str, Any], src: _Origin, env: str) -> None:
    """Merge a whole document: top-level sections, then the selected overlay."""
    selected: Mapping[str, Any] | None = None
    for name, body in doc.items():
        if name in ENVIRONMENTS:
            if not isinstance(body, Mapping):
                raise _bad(src.file, name, "a table of overlay sections", body)
            _apply({}, body, src._replace(key=f"{name}."))  # every overlay is checked
            selected = body if name == env else selected
        elif name in _SCHEMA:
            _apply(values, {name: body}, src)
        else:
            what = "table" if isinstance(body, Mapping) else "key"
            raise _unknown(src.file, name, (*_SCHEMA, *ENVIRONMENTS), what)
    if selected is not None:
        _apply(values, selected, src._replace(key=f"{env}."))


# -------------------------------------------------------------------- resolution
def resolve_config_path(
    cli_path: str | None,
    environ: Mapping[str, str] = os.environ,
    cwd: Path | None = None,
) -> Path | None:
    """``--config`` wins, then ``OSUP_CONFIG``, then ``./config.toml`` if present, else None."""
    if cli_path is not None:
        if not cli_path:
            raise _bad("--config", "config", "a non-empty path", cli_path)
        chosen = cli_path
    elif environ.get("OSUP_CONFIG"):
        chosen = environ["OSUP_CONFIG"]
    else:
        local = (cwd or Path()) / "config.toml"
        return local if local.is_file() else None
    path = Path(chosen).expanduser()
    return path if cwd is None or path.is_absolute() else cwd / path


def _check_env(env: str, file: str, key: str) -> str:
    if env not in ENVIRONMENTS:
        raise _bad(file, key, "one of " + ", ".join(ENVIRONMENTS), env)
    return env


def resolve_env(cli_env: str | None, environ: Mapping[str, str] = os.environ) -> str:
    """``--env`` wins, then ``OSUP_ENV``, else ``DEFAULT_ENV``."""
    if cli_env is not None:
        return _check_env(cli_env, "--env", "env")
    if environ.get("OSUP_ENV"):
        return _check_env(environ["OSUP_ENV"], "<environment>", "OSUP_ENV")
    return DEFAULT_ENV


def _resolve_path(raw: str, origin: _Origin) -> Path:
    try:
        path = Path(raw).expanduser()
    except RuntimeError:  # no home directory to expand "~" with
        expected = "a path whose ~ can be expanded"
        raise _bad(origin.file, origin.key, expected, raw) from None
    return Path(os.path.normpath(origin.base / path))


def _read(path: Path, shown: str) -> dict[str, Any]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        detail = f"cannot read config: {exc.strerror or exc}"
        raise ConfigError(shown, "", "a readable file", detail) from None
    try:
        return tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        detail = f"invalid TOML: {exc}"
        raise ConfigError(shown, "", "valid TOML", detail) from None


def load_config(
    path: Path | str | None,
    env: str = DEFAULT_ENV,
    environ: Mapping[str, str] = os.environ,
    *,
    cwd: Path | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> Config:
    """Read, merge (defaults <- file <- ``[env.*]`` <- overrides <- env vars), validate."""
    _check_env(env, "<environment>", "env")
    workdir = Path(os.path.abspath(cwd if cwd is not None else Path.cwd()))
    values: _Values = {}
    if path is None:
        source, base = None, workdir
        src = _Origin("<defaults>", "", base)
        _apply_document(values, default_document(), src, env)
    else:
        shown = str(path)
        source = Path(os.path.normpath(workdir / Path(path).expanduser()))
        base = source.parent
        defaults = {k: v for k, v in default_document().items() if k in _SCHEMA}
        _apply(values, defaults, _Origin("<defaults>", "", base))
        _apply_document(values, _read(source, shown), _Origin(shown, "", base), env)
    if overrides:
        _apply(values, overrides, _Origin("<overrides>", "", base))
    for var, key in _ENV_VARS.items():
        if environ.get(var):
            origin = _Origin("<environment>", var, workdir)
            _set(values, "o_supervisor", key, environ[var], origin)
    return _build(values, env, source, base)


def _check_heartbeat(osup: dict[str, tuple[Any, _Origin]]) -> None:
    interval, i_origin = osup["heartbeat_interval"]
    timeout, t_origin = osup["heartbeat_timeout"]
    if timeout > interval:
        return
    if t_origin.file == "<defaults>" and i_origin.file != "<defaults>":
        # The user raised the interval past the default timeout: blame the interval.
        expected = f"less than heartbeat_timeout ({timeout})"
        raise _bad(i_origin.file, i_origin.key, expected, interval)
    expected = f"greater than heartbeat_interval ({interval})"
    raise _bad(t_origin.file, t_origin.key, expected, timeout)


def _build(values: _Values, env: str, source: Path | None, base: Path) -> Config:
    _check_heartbeat(values["o_supervisor"])
    kw = {name: {k: v for k, (v, _) in keys.items()} for name, keys in values.items()}
    for key, (raw, origin) in values["o_supervisor"].items():
        if _SCHEMA["o_supervisor"][key].expected == _PATH:
            kw["o_supervisor"][key] = _resolve_path(raw, origin)
        elif key.startswith("gerbil_") and "/" in raw:  # bare names are PATH lookups
            kw["o_supervisor"][key] = str(_resolve_path(raw, origin))
    sections = {name: cls(**kw[name]) for name, cls in _SECTION_TYPES.items()}
    return Config(**sections, env=env, source=source, base_dir=base)
