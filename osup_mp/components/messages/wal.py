"""What the WAL manager serves: appends made durable, reads of spans and entries for a
restore, the push of acknowledged entries to followers, truncation, and its figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True, slots=True)
class Append:
    """Make ``entries`` (each one MessagePack-encoded) durable; answers their LSNs."""

    entries: list[bytes]
    kind: ClassVar[str] = "append"


@dataclass(frozen=True, slots=True)
class ReadSpansAfter:
    """Where the records after ``lsn`` are: ``{"spans", "more", "newest"}`` plus a read-only
    descriptor per span's segment (at most ``limit`` records)."""

    lsn: int
    limit: int | None = None
    kind: ClassVar[str] = "read_spans_after"


@dataclass(frozen=True, slots=True)
class LastLsn:
    """The newest LSN handed out."""

    kind: ClassVar[str] = "last_lsn"


@dataclass(frozen=True, slots=True)
class SkipThrough:
    """A checkpoint covers LSNs through ``lsn``: the next entry gets a later one."""

    lsn: int
    kind: ClassVar[str] = "skip_through"


@dataclass(frozen=True, slots=True)
class TruncateThrough:
    """Release segments wholly at or below ``lsn`` (a checkpoint covers them)."""

    lsn: int
    kind: ClassVar[str] = "truncate_through"


@dataclass(frozen=True, slots=True)
class Follow:
    """Push me every entry after ``after_lsn`` as it is acknowledged (as
    :class:`WalEntries` casts on this connection); answers the newest acknowledged LSN."""

    after_lsn: int
    kind: ClassVar[str] = "follow"


@dataclass(frozen=True, slots=True)
class WalEntries:
    """A cast to a follower: acknowledged entries with consecutive LSNs from ``first_lsn``."""

    first_lsn: int
    payloads: list[bytes]
    kind: ClassVar[str] = "wal_entries"


@dataclass(frozen=True, slots=True)
class FollowLost:
    """A cast to a follower the WAL stopped following (it fell too far behind)."""

    reason: str
    kind: ClassVar[str] = "follow_lost"


@dataclass(frozen=True, slots=True)
class WalStats:
    """Segments, LSNs, fsync policy and counters."""

    kind: ClassVar[str] = "stats"


@dataclass(frozen=True, slots=True)
class WalTail:
    """The newest ``n`` entries, decoded."""

    n: int = 10
    kind: ClassVar[str] = "tail"


@dataclass(frozen=True, slots=True)
class WalVerify:
    """Check every record of every segment."""

    kind: ClassVar[str] = "verify"
