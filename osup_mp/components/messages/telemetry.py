"""What telemetry serves: events executed, samples kept, handlers attached and detached."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar


@dataclass(frozen=True, slots=True)
class Execute:
    """A cast: record one event (``:telemetry.execute/3``)."""

    event: tuple[str, ...]
    measurements: dict[str, Any]
    metadata: dict[str, Any] = field(default_factory=dict)
    kind: ClassVar[str] = "execute"


@dataclass(frozen=True, slots=True)
class Sample:
    """Sample every process now; answers the figures."""

    kind: ClassVar[str] = "sample"


@dataclass(frozen=True, slots=True)
class LatestSample:
    kind: ClassVar[str] = "latest"


@dataclass(frozen=True, slots=True)
class Events:
    """The counts of events seen, by name."""

    kind: ClassVar[str] = "events"


@dataclass(frozen=True, slots=True)
class Attach:
    """Call ``target`` (``"module:function"``) for every event under ``prefix``."""

    handler_id: str
    prefix: list[str]
    target: str
    kind: ClassVar[str] = "attach"


@dataclass(frozen=True, slots=True)
class Detach:
    handler_id: str
    kind: ClassVar[str] = "detach"
