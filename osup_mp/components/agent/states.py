"""The agent state machine (after supervisord's process states), with checked transitions.

::

    STOPPED ──▶ STARTING ──ready──▶ RUNNING
                  │  ▲                │
         failure  ▼  │ delay          │ crash / hang / bad frame
                 BACKOFF ◀────────────┘
                  │ too many consecutive failures
                  ▼
                FATAL   (operator restart ──▶ STARTING)

    any live state ──stop / limit kill──▶ STOPPING ──▶ EXITED
"""

from __future__ import annotations

import enum

from osup_mp.storage.shm.segment import SlotState


class AgentState(enum.Enum):
    STOPPED = "STOPPED"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    BACKOFF = "BACKOFF"
    STOPPING = "STOPPING"
    EXITED = "EXITED"
    FATAL = "FATAL"

    @property
    def slot_state(self) -> SlotState:
        return _SLOT[self]


_SLOT = {
    AgentState.STOPPED: SlotState.FREE,
    AgentState.STARTING: SlotState.STARTING,
    AgentState.RUNNING: SlotState.RUNNING,
    AgentState.BACKOFF: SlotState.BACKOFF,
    AgentState.STOPPING: SlotState.STOPPING,
    AgentState.EXITED: SlotState.EXITED,
    AgentState.FATAL: SlotState.FATAL,
}

S = AgentState
TRANSITIONS: dict[AgentState, frozenset[AgentState]] = {
    S.STOPPED: frozenset({S.STARTING}),
    S.STARTING: frozenset({S.RUNNING, S.BACKOFF, S.STOPPING, S.FATAL}),
    S.RUNNING: frozenset({S.BACKOFF, S.STOPPING, S.FATAL}),
    S.BACKOFF: frozenset({S.STARTING, S.STOPPING, S.FATAL}),
    S.STOPPING: frozenset({S.EXITED, S.STARTING}),
    S.EXITED: frozenset({S.STARTING}),
    S.FATAL: frozenset({S.STARTING, S.STOPPING}),
}


class InvalidTransition(RuntimeError):
    pass


def check_transition(current: AgentState, new: AgentState) -> None:
    if new not in TRANSITIONS[current]:
        raise InvalidTransition(f"agent state {current.value} -> {new.value} is not allowed")
