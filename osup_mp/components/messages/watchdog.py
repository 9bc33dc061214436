"""What the watchdog serves: the kills it made."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True, slots=True)
class WatchdogKills:
    """The newest hundred agents the watchdog killed, and why."""

    kind: ClassVar[str] = "kills"
