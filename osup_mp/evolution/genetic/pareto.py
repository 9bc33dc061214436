"""NSGA-II's ranking (Deb et al. 2002) as a scalar fitness, for several objectives at once.

Pure, like :mod:`~osup_mp.evolution.genetic.selection`, which it feeds without changing:
every objective is minimised, a point is a tuple of them (None: the variant failed), and
:func:`pareto_fitness` turns the points into one fitness each whose order is NSGA-II's
crowded comparison, the lower front first and, within a front, the larger crowding distance
first. Higher wins there, so the tournaments become crowded tournaments and the elites
NSGA-II's elitist truncation. The one decision: the fitness is ``-rank + c`` with ``c`` in
[0, 1) the point's place among its front's distinct crowding distances, not a squashing of
the distance itself; only the order matters to selection, and places cannot be merged by
rounding as two close distances can (the integer part still reads as the front).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from osup_mp.evolution.genetic.fitness import Figures

Point = tuple[float, ...]  # objectives, each minimised


def dominates(a: Point, b: Point) -> bool:
    """Whether ``a`` is no worse than ``b`` in every objective and better in at least one."""
    better = False
    for x, y in zip(a, b, strict=True):
        if x > y:
            return False
        better = better or x < y
    return better


def _alive(points: Sequence[Point | None]) -> dict[int, Point]:
    return {i: p for i, p in enumerate(points) if p is not None}


def fronts(points: Sequence[Point | None]) -> list[list[int]]:
    """The non-dominated fronts (indices into ``points``), front 0 first, each in ascending
    order; a None point is in none. The fast non-dominated sort: O(objectives * n^2)."""
    alive = _alive(points)
    beaten: dict[int, list[int]] = {i: [] for i in alive}  # whom i dominates
    above = dict.fromkeys(alive, 0)  # how many dominate i
    order = sorted(alive)
    for k, i in enumerate(order):
        for j in order[k + 1 :]:
            if dominates(alive[i], alive[j]):
                beaten[i].append(j)
                above[j] += 1
            elif dominates(alive[j], alive[i]):
                beaten[j].append(i)
                above[i] += 1
    result: list[list[int]] = []
    current = [i for i in order if above[i] == 0]
    while current:
        result.append(current)
        following: list[int] = []
        for i in current:
            for j in beaten[i]:
                above[j] -= 1
                if above[j] == 0:
                    following.append(j)
        current = sorted(following)
    return result


def crowding(points: Sequence[Point | None], front: Sequence[int]) -> dict[int, float]:
    """Each point's crowding distance within ``front``: per objective, the gap between its
    neighbours over the front's range, summed; the two ends of an objective get math.inf.
    An objective with no range says nothing about spread, so it adds 0 and marks no end
    (a lone point, or identical ones, get 0).
    Ties in an objective are ordered by index, as Deb's sort leaves them to the sort."""
    alive = _alive(points)
    missing = [i for i in front if i not in alive]
    if missing:
        raise ValueError(f"points {missing} failed: they are in no front")
    distance = dict.fromkeys(front, 0.0)
    if not front:
        return distance
    for m in range(len(alive[front[0]])):
        order = sorted(front, key=lambda i: (alive[i][m], i))
        span = alive[order[-1]][m] - alive[order[0]][m]
        if span == 0:
            continue
        distance[order[0]] = distance[order[-1]] = math.inf
        for before, i, after in zip(order, order[1:], order[2:], strict=False):
            distance[i] += (alive[after][m] - alive[before][m]) / span
    return distance


def pareto_fitness(points: Sequence[Point | None]) -> list[float | None]:
    """One fitness per point (None for None), higher better, ordered as NSGA-II's crowded
    comparison: ``-rank + j / k`` where the front has ``k`` distinct crowding distances and
    the point's is the ``j``-th smallest (from 0). Finite, so it can be written as JSON;
    equal rank and equal distance give equal fitness."""
    fitness: list[float | None] = [None] * len(points)
    for rank, front in enumerate(fronts(points)):
        distance = crowding(points, front)
        levels = sorted(set(distance.values()))
        place = {d: j for j, d in enumerate(levels)}
        for i in front:
            fitness[i] = place[distance[i]] / len(levels) - rank
    return fitness


def objectives(figures: Figures) -> Point | None:
    """What NSGA-II minimises for a variant: (median ms, error rate, memory MB, how far its
    answers are from the current code's: 1 - the mean score when a score hook measured it,
    else the mismatch rate); None for a failed variant, which is in no front."""
    if figures.failure is not None:
        return None
    if figures.score is not None:
        wrong = 1.0 - figures.score
    else:
        wrong = figures.mismatches / figures.requests if figures.requests else 0.0
    return (figures.median_ms, figures.error_rate, figures.memory_mb, wrong)
