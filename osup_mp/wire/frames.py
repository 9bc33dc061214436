"""The agent protocol's frame types: every ``"type"`` a manager and an agent exchange.

Declared once, as string enums, so that the manager, the SDK and agent-check dispatch on
the same names (docs/protocol.md describes each frame's keys). A member *is* its string:
it packs as one and compares equal to the ``"type"`` a peer sends. (Hot paths use
``.value``, the plain string: packing and looking up a str subclass costs a little more.)
Also the one figure more than one side reads out of a frame: a timed request's service
time (:func:`service_ms`).
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Any


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


def service_ms(took: Any, waited: Any) -> tuple[float, float] | None:
    """A timed request's service time as its agent reports it in the ``response``: the
    handling (``took_ms``) less the part of it spent waiting for a CPU (``waited_ms``,
    optional), and that part. None when the agent gives no usable figure (absent, not a
    number, negative, or a wait longer than the handling): its manager's timing stands.

    Arms are judged on this figure, not on their managers' round trips: on a shared host
    those are mostly the managers' and agents' waits for a CPU, which the scheduler's
    placement decides and which differ between two arms running the same code."""
    if not _ms(took):
        return None
    if waited is None:
        return float(took), 0.0
    if not _ms(waited) or waited > took:
        return None
    return float(took) - float(waited), float(waited)


def _ms(value: Any) -> bool:
    return type(value) in (int, float) and 0 <= value < math.inf
