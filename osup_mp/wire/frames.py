"""The agent protocol's frame types: every ``"type"`` a manager and an agent exchange.

Declared once, as string enums, so that the manager, the SDK and agent-check dispatch on
the same names (docs/protocol.md describes each frame's keys). A member *is* its string:
it packs as one and compares equal to the ``"type"`` a peer sends. (Hot paths use
``.value``, the plain string: packing and looking up a str subclass costs a little more.)
"""

from __future__ import annotations

from enum import StrEnum


class ToAgent(StrEnum):
    """Frames a manager sends its agent."""

    PROCESS_REQUEST = "process_request"
    RESTORE = "restore"
    HOT_RELOAD = "hot_reload"
    CHECKPOINT_REQUEST = "checkpoint_request"
    CHECKPOINT_ACK = "checkpoint_ack"
    WAL_ACK = "wal_ack"
    WAL_FLUSH_ACK = "wal_flush_ack"
    EVOLUTION_RESULT = "evolution_result"
    WAL_APPLY = "wal_apply"
    PROMOTE = "promote"
    STOP = "stop"


class FromAgent(StrEnum):
    """Frames an agent sends its manager."""

    READY = "ready"
    HEARTBEAT = "heartbeat"
    RESPONSE = "response"
    WAL_ENTRY = "wal_entry"
    WAL_BATCH = "wal_batch"
    CHECKPOINT = "checkpoint"
    METRICS = "metrics"
    RELOAD_RESULT = "reload_result"
    EVOLUTION_INTENT = "evolution_intent"
