"""What the traffic splitter serves: mirrored copies of the main's requests, the
experiments it mirrors for, and traffic recording.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True, slots=True)
class Mirrored:
    """A cast from the main's manager, after its answer went to the caller: a request to
    mirror, the main's outcome, and the WAL position its answer reflects (None: unknown).
    The answer itself comes only when a compare hook needs it; a digest always does."""

    data: Any
    ok: bool
    digest: str | None
    latency_ms: float
    lsn: int | None
    answer: Any = None
    kind: ClassVar[str] = "mirrored"


@dataclass(frozen=True, slots=True)
class MirrorStart:
    """Mirror ``ratio`` of the main's read-only requests to the shadows ``arms``."""

    id: str
    arms: list[str]
    ratio: float
    kind: ClassVar[str] = "mirror_start"


@dataclass(frozen=True, slots=True)
class MirrorStop:
    id: str
    kind: ClassVar[str] = "mirror_stop"


@dataclass(frozen=True, slots=True)
class MirrorStatus:
    """Every mirror's figures per arm."""

    kind: ClassVar[str] = "mirror_status"


@dataclass(frozen=True, slots=True)
class TrafficRecord:
    """Keep ``share`` of the main's read-only requests, ``count`` at most, for ``seconds``
    at most, until a client takes them (:class:`TrafficTake`)."""

    id: str
    share: float
    count: int
    seconds: float
    kind: ClassVar[str] = "traffic_record"


@dataclass(frozen=True, slots=True)
class TrafficTake:
    """A page of what recording ``id`` kept since the last take, with its figures;
    ``stop`` ends the keeping (what is buffered can still be taken)."""

    id: str
    stop: bool = False
    kind: ClassVar[str] = "traffic_take"
