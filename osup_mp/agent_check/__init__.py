"""Conformance checks for agent executables: drive one agent through the wire protocol.

``osup-mp agent-check -- EXECUTABLE [ARGS...]`` (see :mod:`osup_mp.cli.agent_check`) starts
the agent the way the supervisor does (``EXECUTABLE [ARGS...] --role main --elixir-mode``,
``OSUP_HEARTBEAT_INTERVAL_MS`` in the environment), then runs these checks in order:

1. ``starts`` — ``ready`` (or, for seed agents that never send it, a first ``heartbeat``)
   arrives within the timeout.
2. ``frames`` — every frame of the whole run was well formed (strict codec, a map with a
   ``str`` ``"type"``); evaluated at the end, reported second.
3. ``heartbeats`` — at least :data:`MIN_HEARTBEATS` heartbeats arrive, no gap longer than
   :data:`HEARTBEAT_GAP_FACTOR` times the interval (counted from the start signal).
4. ``requests`` — a burst of :data:`REQUEST_BURST` ``process_request`` frames with distinct ids
   is answered by ``response`` frames carrying the same ids (an error response is an answer).
5. ``checkpoint`` — ``checkpoint_request`` → a ``checkpoint`` whose ``data`` is a map; it is
   acknowledged with ``checkpoint_ack`` and the agent must still answer a request.
6. ``hot_reload`` — a module the agent will likely reject → ``reload_result`` with a boolean
   ``ok`` (either answer passes); the agent must still answer a request.
7. ``restore`` — the checkpoint from 5 is sent back in ``restore``; the agent must keep
   answering requests (a second ``ready`` is allowed, not required).
8. ``shutdown`` — stdin is closed; the agent must exit within the timeout.

Design decisions:

* One thread and one ``selectors`` loop over non-blocking pipes plus a pidfd: the agent's
  stdout is decoded as it arrives, its stderr is drained on every wake-up (only a short tail
  is kept, for failure reasons) so the agent never blocks on a full pipe, and output to the
  agent is written only when its stdin is writable, so neither side can deadlock the other.
* :meth:`AgentSession.expect` is deadline based: it keeps reading and decoding until a frame
  matching the predicate arrives or the deadline passes, and records *every* frame with its
  arrival time in :attr:`AgentSession.frames`. Checks that need history (heartbeat gaps) read
  that record; the others consume frames from a cursor, so a frame is matched at most once.
* Request ids are unique over the whole run. A response to an id issued by an earlier check
  (a late answer) is ignored rather than counted against the current check; a response to
  an id never issued is reported. Waiting ends early once as many answers as requests
  arrived, so an agent that answers with wrong ids fails fast instead of at the timeout.
* A malformed frame breaks the stream for good (the codec cannot resynchronise). The error
  is kept with the byte offset of the bad frame in the agent's stdout and its first bytes;
  the ``frames`` check reports it, and checks that need frames afterwards fail with a
  pointer to it. ``shutdown`` needs no frames and still runs.
* A check that cannot run — the agent exited (the first check to notice records when), or
  it never started — fails with that reason instead of waiting for its timeout.
* The agent runs in its own session with ``PR_SET_PDEATHSIG``; :meth:`AgentSession.close`
  (called from a ``finally``) kills the whole process group and reaps the agent, so nothing
  outlives the check even if the checker itself is killed.
"""

from __future__ import annotations

from osup_mp.agent_check.checker import AgentChecker, run_checks
from osup_mp.agent_check.plan import CHECKS, CheckResult
from osup_mp.agent_check.session import (
    AgentGone,
    AgentSession,
    AgentStartError,
    CheckFailed,
    Frame,
    StreamBroken,
)

__all__ = [
    "CHECKS",
    "AgentChecker",
    "AgentGone",
    "AgentSession",
    "AgentStartError",
    "CheckFailed",
    "CheckResult",
    "Frame",
    "StreamBroken",
    "run_checks",
]
