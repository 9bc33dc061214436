"""What the memory vault serves: checkpoints saved, found, loaded, listed and deleted."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True, slots=True)
class SaveCheckpoint:
    """Store ``snapshot`` (a map, or its MessagePack bytes) as covering LSNs through ``lsn``."""

    snapshot: Any
    lsn: int
    kind: ClassVar[str] = "save"


@dataclass(frozen=True, slots=True)
class LatestCheckpoint:
    """The newest checkpoint that verifies, or None; ``raw`` answers the payload unopened."""

    raw: bool = False
    kind: ClassVar[str] = "latest"


@dataclass(frozen=True, slots=True)
class LoadCheckpoint:
    """Checkpoint ``id``; ``raw`` answers the payload unopened."""

    id: str
    raw: bool = False
    kind: ClassVar[str] = "load"


@dataclass(frozen=True, slots=True)
class ShowCheckpoint:
    """Checkpoint ``id``'s metadata, a summary, and the snapshot when it fits a reply."""

    id: str
    kind: ClassVar[str] = "show"


@dataclass(frozen=True, slots=True)
class ListCheckpoints:
    """The catalogue, newest first."""

    kind: ClassVar[str] = "list"


@dataclass(frozen=True, slots=True)
class DeleteCheckpoint:
    id: str
    kind: ClassVar[str] = "delete"
