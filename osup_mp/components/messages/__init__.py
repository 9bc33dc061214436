"""The requests components serve, one frozen record each, grouped by the component that
serves them.

They live apart from the components so that a caller never imports the component it calls
(components are independent; they share only these shapes). ``kind`` is the name the
control socket's ``call`` door uses for the record (``[kind, *args]``).

One module per serving component; every record is importable from here.
"""

from __future__ import annotations

from osup_mp.components.messages.agent import (
    AgentRequest,
    AgentStatus,
    CreateCheckpoint,
    EvolutionResult,
    HeartbeatTimeout,
    HotReload,
    LimitExceeded,
    LoadedCode,
    MirrorRequest,
    RestartAgent,
    RestoreFrom,
    Revert,
    SetMirror,
)
from osup_mp.components.messages.arbiter import (
    ExperimentHistory,
    ExperimentList,
    ExperimentShow,
    ExperimentStart,
    ExperimentStop,
    Propose,
)
from osup_mp.components.messages.health import (
    CompareInstances,
    ExperimentSamples,
    GetMetrics,
    HealthEvents,
    MetricsHistory,
    RecordMetrics,
    RecordSample,
    RecordSamples,
    RecordTransition,
)
from osup_mp.components.messages.splitter import (
    Mirrored,
    MirrorStart,
    MirrorStatus,
    MirrorStop,
    TrafficRecord,
    TrafficTake,
)
from osup_mp.components.messages.telemetry import (
    Attach,
    Detach,
    Events,
    Execute,
    LatestSample,
    Sample,
)
from osup_mp.components.messages.tree import (
    Fatal,
    ShadowCount,
    StartShadow,
    StopShadow,
)
from osup_mp.components.messages.vault import (
    DeleteCheckpoint,
    LatestCheckpoint,
    ListCheckpoints,
    LoadCheckpoint,
    SaveCheckpoint,
    ShowCheckpoint,
)
from osup_mp.components.messages.wal import (
    Append,
    Follow,
    FollowLost,
    LastLsn,
    ReadSpansAfter,
    SkipThrough,
    TruncateThrough,
    WalEntries,
    WalStats,
    WalTail,
    WalVerify,
)
from osup_mp.components.messages.watchdog import (
    WatchdogKills,
)
from osup_mp.runtime.messages import pickled_by_fields

__all__ = [
    "AgentRequest",
    "AgentStatus",
    "Append",
    "Attach",
    "CompareInstances",
    "CreateCheckpoint",
    "DeleteCheckpoint",
    "Detach",
    "Events",
    "EvolutionResult",
    "Execute",
    "ExperimentHistory",
    "ExperimentList",
    "ExperimentSamples",
    "ExperimentShow",
    "ExperimentStart",
    "ExperimentStop",
    "Fatal",
    "Follow",
    "FollowLost",
    "GetMetrics",
    "HealthEvents",
    "HeartbeatTimeout",
    "HotReload",
    "LastLsn",
    "LatestCheckpoint",
    "LatestSample",
    "LimitExceeded",
    "ListCheckpoints",
    "LoadCheckpoint",
    "LoadedCode",
    "MetricsHistory",
    "MirrorRequest",
    "MirrorStart",
    "MirrorStatus",
    "MirrorStop",
    "Mirrored",
    "Propose",
    "ReadSpansAfter",
    "RecordMetrics",
    "RecordSample",
    "RecordSamples",
    "RecordTransition",
    "RestartAgent",
    "RestoreFrom",
    "Revert",
    "Sample",
    "SaveCheckpoint",
    "SetMirror",
    "ShadowCount",
    "ShowCheckpoint",
    "SkipThrough",
    "StartShadow",
    "StopShadow",
    "TrafficRecord",
    "TrafficTake",
    "TruncateThrough",
    "WalEntries",
    "WalStats",
    "WalTail",
    "WalVerify",
    "WatchdogKills",
]

pickled_by_fields(*(globals()[name] for name in __all__))
