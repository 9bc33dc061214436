"""Genetic evolution of a module's code: variation on the syntax tree and selection.

Pure, like the rest of :mod:`osup_mp.evolution`: no process and no I/O. Evaluating a
variant (a gate in a subprocess, a limited shadow, a workload) is the caller's.
"""

from osup_mp.evolution.genetic.fitness import Figures, seed_fitness
from osup_mp.evolution.genetic.pareto import fronts, objectives, pareto_fitness
from osup_mp.evolution.genetic.selection import Scored, elites, next_generation, tournament
from osup_mp.evolution.genetic.variation import (
    Genes,
    VariationError,
    crossover,
    fingerprint,
    genes,
    mutate,
)

__all__ = [
    "Figures",
    "Genes",
    "Scored",
    "VariationError",
    "crossover",
    "elites",
    "fingerprint",
    "fronts",
    "genes",
    "mutate",
    "next_generation",
    "objectives",
    "pareto_fitness",
    "seed_fitness",
    "tournament",
]
