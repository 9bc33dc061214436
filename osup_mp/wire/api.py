"""The control and data-plane API: every command declared once, with typed arguments.

A request is ``{"id", "command", "args"}`` (see :mod:`osup_mp.runtime.control`). Each
:class:`Command` here names a command, its arguments (name, type, whether required, help)
and its help text; the server checks arguments against it before any handler runs (so a
handler reads typed values, never a raw map), the client takes its default timeout from it,
and the CLI its help. The declarations live in ``wire`` because both sides import them: the
client may not import the application that serves them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "number": (int, float),
    "bool": (bool,),
    "strings": (list,),
    "any": (object,),
}


@dataclass(frozen=True, slots=True)
class Arg:
    """One argument: ``kind`` is str, int, number, bool, strings (a list of str) or any."""

    name: str
    kind: str
    help: str
    required: bool = False

    def check(self, value: Any) -> str | None:
        """Why ``value`` is not acceptable, or None."""
        if isinstance(value, bool) and self.kind in ("int", "number"):
            return f"{self.name} must be {self.kind_text}, not a boolean"
        if not isinstance(value, _TYPES[self.kind]):
            return f"{self.name} must be {self.kind_text}, not {type(value).__name__}"
        if (
            self.kind == "strings"
            and isinstance(value, list)
            and not all(isinstance(v, str) for v in value)
        ):
            return f"{self.name} must be a list of strings"
        if self.kind in ("int", "number") and isinstance(value, int | float) and value < 0:
            return f"{self.name} must not be negative"
        return None

    @property
    def kind_text(self) -> str:
        return {
            "str": "a string",
            "int": "an integer",
            "number": "a number",
            "bool": "true or false",
            "strings": "a list of strings",
            "any": "any value",
        }[self.kind]


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    help: str
    args: tuple[Arg, ...] = ()
    timeout: float = 30.0  # seconds a client waits for the answer by default

    def check(self, args: Mapping[str, Any]) -> str | None:
        """Why ``args`` do not fit this command (unknown, missing or mistyped), or None."""
        known = {a.name: a for a in self.args}
        unknown = sorted(set(args) - known.keys())
        if unknown:
            expected = ", ".join(known) or "none"
            return f"{self.name}: unknown argument {unknown[0]!r} (expected: {expected})"
        for arg in self.args:
            value = args.get(arg.name)
            if value is None:
                if arg.required:
                    return f"{self.name}: missing argument {arg.name} ({arg.help})"
                continue
            problem = arg.check(value)
            if problem:
                return f"{self.name}: {problem}"
        return None


SHADOW_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")


def shadow_id_problem(value: str) -> str | None:
    """Why ``value`` cannot name a shadow, or None."""
    if not SHADOW_ID.fullmatch(value) or value == "main":
        return f"invalid shadow id {value!r}: 1-32 of [A-Za-z0-9_-], and not 'main'"
    return None


_ID = Arg("id", "str", "a checkpoint id", required=True)
_AGENT = Arg("id", "str", "an agent id (default: main)")
_TIMEOUT = Arg("timeout", "number", "seconds to wait for the answer")

# -- the tree --------------------------------------------------------------------------------
PING = Command("ping", "Answer pong: the tree is listening.", timeout=10.0)
STATUS = Command("status", "The tree, its components and agents, with figures.", timeout=10.0)
STOP = Command("stop", "Stop the tree in reverse start order.")
CONFIG = Command("config", "The effective configuration the tree runs with.")
RESTART = Command(
    "restart",
    "Stop and start one component (not counted against the restart intensity).",
    (Arg("name", "str", "a component name", required=True),),
    timeout=120.0,
)
CALL = Command(
    "call",
    "Send a raw call to one component (for debugging).",
    (
        Arg("name", "str", "a component name", required=True),
        Arg("request", "any", "the call, a list whose first item is its kind", required=True),
        _TIMEOUT,
    ),
)
# -- shadows and agents ----------------------------------------------------------------------
SHADOW_START = Command(
    "shadow_start",
    "Start a shadow agent; answers once it is ready.",
    (
        Arg("id", "str", "the shadow id: 1-32 of [A-Za-z0-9_-], not main", required=True),
        Arg("command", "strings", "the agent command line (default: the configured agent)"),
        Arg("cpu_seconds", "number", "each agent process's CPU-time deadline (SIGXCPU)"),
        Arg("wall_seconds", "number", "each agent process's wall-clock deadline from its start"),
    ),
    timeout=120.0,
)
SHADOW_STOP = Command(
    "shadow_stop",
    "Stop a shadow agent and remove it from the tree.",
    (Arg("id", "str", "the shadow id", required=True),),
    timeout=120.0,
)
HOT_RELOAD = Command(
    "hot_reload",
    "Replace a module of a running agent with new source code.",
    (
        Arg("code", "str", "the module's new source code", required=True),
        Arg("module", "str", "which module (default: the agent's own default)"),
        _AGENT,
        _TIMEOUT,
    ),
    timeout=60.0,
)
AGENT_RESTART = Command(
    "agent_restart",
    "Restart one agent (stop, then start; FATAL agents too).",
    (_AGENT, _TIMEOUT),
    timeout=60.0,
)
# -- checkpoints and the WAL -----------------------------------------------------------------
CHECKPOINT_CREATE = Command("checkpoint_create", "Checkpoint the main agent now.", timeout=90.0)
CHECKPOINT_RESTORE = Command(
    "checkpoint_restore", "Restart the main agent from a checkpoint.", (_ID,)
)
CHECKPOINT_LIST = Command("checkpoint_list", "The stored checkpoints, newest first.")
CHECKPOINT_SHOW = Command("checkpoint_show", "One checkpoint's summary and snapshot.", (_ID,))
CHECKPOINT_DELETE = Command("checkpoint_delete", "Delete one checkpoint.", (_ID,))
WAL_STATS = Command("wal_stats", "The WAL's LSNs, segments and sync figures.")
WAL_TAIL = Command(
    "wal_tail",
    "The newest WAL records.",
    (Arg("n", "int", "how many records", required=True),),
)
WAL_VERIFY = Command("wal_verify", "Check every WAL record's checksum.", timeout=180.0)
# -- mirrors (the traffic splitter) ---------------------------------------------------------
MIRROR_START = Command(
    "mirror_start",
    "Mirror a share of the main agent's read-only requests to shadows and compare answers.",
    (
        Arg("to", "strings", "the shadows that get the copies", required=True),
        Arg("ratio", "number", "the share of read-only requests mirrored (default 0.1)"),
        Arg("id", "str", "a name for the mirror (default m1, m2, ...)"),
    ),
)
MIRROR_STOP = Command(
    "mirror_stop",
    "Stop a mirror; answers its final figures.",
    (Arg("id", "str", "the mirror's name", required=True),),
)
MIRROR_STATUS = Command("mirror_status", "Every running mirror's figures, per shadow.")
TRAFFIC_RECORD = Command(
    "traffic_record",
    "Keep a sample of the main agent's read-only requests until taken (traffic_take).",
    (
        Arg("share", "number", "the share of read-only requests kept (default 0.1)"),
        Arg("count", "int", "requests to keep in all", required=True),
        Arg("seconds", "number", "the longest the recording keeps requests", required=True),
        Arg("id", "str", "a name for the recording (default r1, r2, ...)"),
    ),
)
TRAFFIC_TAKE = Command(
    "traffic_take",
    "A page of the requests a recording kept since the last take, and its figures.",
    (
        Arg("id", "str", "the recording's name", required=True),
        Arg("stop", "bool", "stop keeping requests (what is kept can still be taken)"),
    ),
)
# -- health ----------------------------------------------------------------------------------
HEALTH = Command(
    "health",
    "Every agent instance's newest metrics and the newest state transitions.",
    (
        Arg("id", "str", "one agent instance (default: all)"),
        Arg("events", "int", "how many of the newest transitions (default 20)"),
    ),
)
HEALTH_HISTORY = Command(
    "health_history",
    "One agent instance's kept metrics records, oldest first.",
    (
        Arg("id", "str", "the agent instance", required=True),
        Arg("seconds", "number", "only the records of the last so many seconds"),
    ),
)
HEALTH_COMPARE = Command(
    "health_compare",
    "Two agent instances' mean metrics over a window; diff > 0 when a is worse.",
    (
        Arg("a", "str", "an agent instance", required=True),
        Arg("b", "str", "the instance to compare it with", required=True),
        Arg("seconds", "number", "the window, in seconds (default 60)"),
    ),
)
# -- experiments (the evolution arbiter) -----------------------------------------------------
_EXPERIMENT = Arg("id", "str", "the experiment's id (e1, e2, ...)", required=True)
EXPERIMENT_START = Command(
    "experiment_start",
    "Try new code for a module on mirrored traffic; answers once its shadows are starting.",
    (
        Arg("code", "str", "the module's new source", required=True),
        Arg("target", "str", "the module it replaces (e.g. memory_system)", required=True),
        Arg("ratio", "number", "the share of read-only requests mirrored ([evolution])"),
        Arg("duration", "number", "seconds on the new code until undecided is inconclusive"),
        Arg("reason", "str", "why: the hypothesis, kept in the history"),
    ),
    timeout=15.0,
)
EXPERIMENT_STOP = Command(
    "experiment_stop", "Stop a running experiment (inconclusive, nothing promoted).", (_EXPERIMENT,)
)
EXPERIMENT_LIST = Command("experiment_list", "The running experiments and the newest decided.")
EXPERIMENT_SHOW = Command("experiment_show", "One experiment's record and verdict.", (_EXPERIMENT,))
HISTORY = Command(
    "history",
    "The newest decided experiments, newest first.",
    (Arg("n", "int", "how many (default 100)"),),
)

CONTROL: Mapping[str, Command] = {
    c.name: c
    for c in (
        PING,
        STATUS,
        STOP,
        CONFIG,
        RESTART,
        CALL,
        SHADOW_START,
        SHADOW_STOP,
        HOT_RELOAD,
        AGENT_RESTART,
        CHECKPOINT_CREATE,
        CHECKPOINT_RESTORE,
        CHECKPOINT_LIST,
        CHECKPOINT_SHOW,
        CHECKPOINT_DELETE,
        WAL_STATS,
        WAL_TAIL,
        WAL_VERIFY,
        HEALTH,
        HEALTH_HISTORY,
        HEALTH_COMPARE,
        MIRROR_START,
        MIRROR_STOP,
        MIRROR_STATUS,
        TRAFFIC_RECORD,
        TRAFFIC_TAKE,
        EXPERIMENT_START,
        EXPERIMENT_STOP,
        EXPERIMENT_LIST,
        EXPERIMENT_SHOW,
        HISTORY,
    )
}
"""The control socket's commands, by name."""

# -- the data plane (an agent manager's socket) ------------------------------------------
REQUEST = Command(
    "request",
    "Send one request to the agent and return its answer.",
    (Arg("data", "any", "the request for the agent", required=True), _TIMEOUT),
)
DATA_PLANE: Mapping[str, Command] = {c.name: c for c in (PING, REQUEST)}
"""The data-plane socket's commands, by name."""
