"""The configuration's types: one frozen dataclass per section, and :class:`Config`.

What a loaded configuration looks like to the rest of the tree; :mod:`.schema` says which
keys exist and what they accept, :mod:`.loader` reads and merges files into these.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:  # imported when used: psutil is no start-up cost of every CLI command
    from osup_mp.lowlevel.limits import Limits


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
    """How agent managers run agents (times in ms, except the restart policy's seconds)."""

    max_frame: int
    ready_timeout: int
    request_timeout: int
    stop_timeout: int
    backoff_base: int
    backoff_cap: int
    startsecs: float
    max_retries: int
    max_restarts: int
    max_seconds: float
    busy_poll_us: int
    standby: bool  # a hot standby of the main agent
    standby_max_lag: int  # WAL entries
    main_cpus: tuple[int, ...]  # the main agent, its standby and its manager; () = any


@dataclass(frozen=True, slots=True)
class WatchdogSection:
    """Per-shadow resource limits the watchdog enforces (times in ms)."""

    shadow_rss_mb: int
    shadow_cpu_percent: int
    shadow_cpu_window: int
    shadow_max_fds: int
    shadow_max_threads: int
    shadow_wall_time: int
    shadow_nice: int
    shadow_cpus: tuple[int, ...]  # shadows, their managers and the splitter; () = any

    def limits(self) -> Limits:
        """A shadow's limits, for a :class:`~osup_mp.lowlevel.limits.Sampler`."""
        from osup_mp.lowlevel.limits import Limits

        return Limits(
            self.shadow_rss_mb, self.shadow_cpu_percent, self.shadow_cpu_window / 1000,
            self.shadow_max_fds, self.shadow_max_threads, self.shadow_wall_time / 1000,
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class WALSection:
    """The write-ahead log: fsync policy (Redis-style), segment size, recovery mode."""

    fsync: str
    segment_entries: int
    segment_bytes: int
    salvage: str
    accept_gap: bool


@dataclass(frozen=True, slots=True)
class VaultSection:
    """Checkpoints: generations kept and the supervisor-requested cadence (ms; 0 = off)."""

    generations: int
    checkpoint_interval: int
    checkpoint_wal_entries: int


@dataclass(frozen=True, slots=True)
class HealthSection:
    """What the health monitor keeps: a bounded history per instance (count and age, ms),
    the newest state transitions, and per-request samples per running experiment."""

    history_size: int
    history_window: int
    max_events: int
    max_samples: int


@dataclass(frozen=True, slots=True)
class EvolutionSection:
    """How the evolution arbiter runs experiments and judges them: the share of read-only
    requests mirrored, the confidence and margins of the verdict, the history kept, and how
    long a promotion is watched for a rollback (ms)."""

    mirror_ratio: float
    confidence: float
    min_samples: int
    calibration: int
    latency_margin: float
    min_improvement: float
    error_margin: float
    mismatch_tolerance: float
    memory_margin: float
    capacity_margin: float
    compare: str
    history_size: int
    rollback_watch: int
    rollback_margin: float


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
    health: HealthSection
    evolution: EvolutionSection
    vault: VaultSection
    env: str
    source: Path | None
    base_dir: Path
    #: Keys whose value comes from the selected overlay or an environment variable rather
    #: than the base: dotted key -> where it was set ("prod.logger.level", "GERBIL_HOME").
    overridden: Mapping[str, str] = field(default_factory=dict, compare=False)

    @property
    def pidfile(self) -> Path:
        return self.o_supervisor.run_dir / "osup-mp.pid"

    @property
    def tree_lock(self) -> Path:
        return self.o_supervisor.run_dir / "tree.lock"

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
    "health": HealthSection,
    "evolution": EvolutionSection,
    "vault": VaultSection,
}
