"""Selection for a generational genetic run: seeded tournaments, elitism, a constant size.

Pure: the caller measures; this decides. Given the same random state and the same measured
figures, :func:`next_generation` makes the same choices, which is what makes a run
reproducible and a resumed run equal to an uninterrupted one. A variant whose evaluation
failed (a crash, a broken limit, a failed gate, a mismatch veto) has no fitness: it is never
an elite and loses every tournament against one that has.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

Breed = Callable[[str, str, random.Random], str]  # (parent, other parent, rng) -> child code


@dataclass(frozen=True, slots=True)
class Scored:
    """One evaluated variant: its code and its fitness (higher is better; None: failed)."""

    code: str
    fitness: float | None

    @property
    def failed(self) -> bool:
        return self.fitness is None


def _key(s: Scored) -> float:
    return float("-inf") if s.fitness is None else s.fitness


def tournament(scored: Sequence[Scored], rng: random.Random, size: int = 3) -> Scored:
    """The best of ``size`` variants drawn at random (with replacement)."""
    return max((rng.choice(scored) for _ in range(size)), key=_key)


def elites(scored: Sequence[Scored], count: int) -> list[Scored]:
    """The ``count`` best variants that did not fail, best first (ties: earlier first)."""
    ranked = sorted((s for s in scored if not s.failed), key=_key, reverse=True)
    return ranked[:count]


def next_generation(
    scored: Sequence[Scored],
    rng: random.Random,
    breed: Breed,
    *,
    size: int,
    elite: int = 1,
    seen: Callable[[str], bool] = lambda code: False,
    attempts: int = 20,
) -> list[str]:
    """The codes of the next generation, exactly ``size`` of them: the elites unchanged
    (they are measured again), then children of tournament winners, each new by ``seen``
    (a fingerprint check) when ``attempts`` tries allow; else a child that is not."""
    if not scored:
        raise ValueError("no evaluated variant to select from")
    population = [s.code for s in elites(scored, min(elite, size))]
    while len(population) < size:
        child = ""
        for _ in range(attempts):
            child = breed(tournament(scored, rng).code, tournament(scored, rng).code, rng)
            if not seen(child) and child not in population:
                break
        population.append(child)
    return population
