"""What the evolution arbiter serves: experiments started, stopped, listed and shown,
and the main agent's proposals.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True, slots=True)
class ExperimentStart:
    """Try ``code`` for module ``target`` on mirrored traffic; answers the experiment's
    record once its shadows are starting. ``origin`` names who asked (``cli`` or an agent
    id), ``proposal`` the agent's ``evolution_intent`` id to answer when decided."""

    code: str
    target: str
    ratio: float | None = None
    duration: float | None = None
    reason: str = ""
    origin: str = "cli"
    proposal: Any = None
    kind: ClassVar[str] = "experiment_start"


@dataclass(frozen=True, slots=True)
class ExperimentStop:
    """Stop a running experiment: no verdict beyond ``inconclusive``, nothing promoted."""

    id: str
    kind: ClassVar[str] = "experiment_stop"


@dataclass(frozen=True, slots=True)
class ExperimentList:
    """The running experiments and the newest decided ones, as records without samples."""

    kind: ClassVar[str] = "experiment_list"


@dataclass(frozen=True, slots=True)
class ExperimentShow:
    id: str
    kind: ClassVar[str] = "experiment_show"


@dataclass(frozen=True, slots=True)
class ExperimentHistory:
    """The newest ``n`` decided experiments, newest first."""

    n: int = 100
    kind: ClassVar[str] = "experiment_history"


@dataclass(frozen=True, slots=True)
class Propose:
    """A cast from an agent's manager: the agent sent an ``evolution_intent``."""

    instance_id: str
    proposal: Any
    target: str
    code: str
    reason: str
    kind: ClassVar[str] = "propose"
