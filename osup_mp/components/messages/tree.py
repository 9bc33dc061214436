"""What the tree (the supervisor, through the application's handlers) serves: shadows
started, stopped and counted, and a component's fatal error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True, slots=True)
class StartShadow:
    """Start shadow ``id`` as a dynamic child (as ``osup-mp shadow start`` does); answers
    once it is ready, or why it cannot start."""

    id: str
    kind: ClassVar[str] = "start_shadow"


@dataclass(frozen=True, slots=True)
class StopShadow:
    id: str
    kind: ClassVar[str] = "stop_shadow"


@dataclass(frozen=True, slots=True)
class ShadowCount:
    """How many shadows run, and how many may (``max_concurrent_shadows``)."""

    kind: ClassVar[str] = "shadow_count"


@dataclass(frozen=True, slots=True)
class Fatal:
    """An error restarting cannot fix (e.g. a failed fsync): the tree stops."""

    reason: str
    kind: ClassVar[str] = "fatal"
