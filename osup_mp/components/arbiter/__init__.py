"""The evolution arbiter: shadow experiments, verdicts, promotion, rollback and history."""

from osup_mp.components.arbiter.component import EvolutionArbiter

__all__ = ["EvolutionArbiter"]
