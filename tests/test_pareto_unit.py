"""NSGA-II's ranking: dominance, fronts, crowding, the scalar fitness, and a run with it."""

from __future__ import annotations

import math
import random

import pytest

from osup_mp.evolution.genetic.fitness import Figures
from osup_mp.evolution.genetic.pareto import (
    Point,
    crowding,
    dominates,
    fronts,
    objectives,
    pareto_fitness,
)
from osup_mp.evolution.genetic.selection import Scored, next_generation

pytestmark = pytest.mark.unit  # no process started


def random_points(rng: random.Random) -> list[Point | None]:
    """A few points with small integer coordinates, so that ties and duplicates occur."""
    m = rng.randint(2, 4)
    return [
        None if rng.random() < 0.1 else tuple(float(rng.randint(0, 4)) for _ in range(m))
        for _ in range(rng.randint(0, 25))
    ]


def brute_fronts(points: list[Point | None]) -> list[list[int]]:
    """The definition: a front is what nothing left dominates, taken off in turn."""
    left = {i for i, p in enumerate(points) if p is not None}
    result = []
    while left:
        front = sorted(
            i
            for i in left
            if not any(dominates(points[j], points[i]) for j in left)  # type: ignore[arg-type]
        )
        result.append(front)
        left -= set(front)
    return result


def test_dominates_on_hand_cases() -> None:
    assert dominates((1.0, 2.0), (2.0, 3.0))
    assert dominates((1.0, 2.0), (1.0, 3.0))  # equal in one, better in the other
    assert not dominates((2.0, 3.0), (1.0, 2.0))
    assert not dominates((1.0, 3.0), (2.0, 2.0))  # a trade-off: neither
    assert not dominates((2.0, 2.0), (1.0, 3.0))
    assert not dominates((1.0, 2.0), (1.0, 2.0))  # equal points do not dominate each other
    assert dominates((0.0, 0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 1.0))
    with pytest.raises(ValueError):
        dominates((1.0, 2.0), (1.0, 2.0, 3.0))


def test_fronts_on_a_hand_example_with_failures_and_duplicates() -> None:
    points: list[Point | None] = [
        (1.0, 5.0),  # 0: front 0
        (2.0, 3.0),  # 1: front 0
        (4.0, 1.0),  # 2: front 0
        (2.0, 5.0),  # 3: front 1 (beaten by 0 and 1)
        (3.0, 4.0),  # 4: front 1 (beaten by 1)
        (5.0, 2.0),  # 5: front 1 (beaten by 2)
        (4.0, 5.0),  # 6: front 2 (beaten by 3 and 4)
        None,  # 7: failed, in no front
        (2.0, 3.0),  # 8: the same as 1, so in its front
        None,  # 9
    ]
    assert fronts(points) == [[0, 1, 2, 8], [3, 4, 5], [6]]
    assert fronts([]) == []
    assert fronts([None, None]) == []
    assert fronts([(1.0, 1.0)] * 3) == [[0, 1, 2]]


def test_fronts_agree_with_the_definition_on_random_sets() -> None:
    for seed in range(200):
        points = random_points(random.Random(seed))
        assert fronts(points) == brute_fronts(points), f"seed {seed}: {points}"


def test_crowding_ends_are_infinite_and_the_inside_is_the_normalised_gap() -> None:
    # objective 0 spans 4: 1 has neighbours 0 and 3 (0.75), 2 has 1 and 4 (0.75);
    # objective 1 spans 4: 1 has 1 and 4 (0.75), 2 has 0 and 2 (0.5).
    points: list[Point | None] = [(0.0, 4.0), (1.0, 2.0), (3.0, 1.0), (4.0, 0.0)]
    assert fronts(points) == [[0, 1, 2, 3]]
    assert crowding(points, [0, 1, 2, 3]) == {0: math.inf, 1: 1.5, 2: 1.25, 3: math.inf}
    assert crowding(points, [1, 2]) == {1: math.inf, 2: math.inf}
    assert crowding(points, [2]) == {2: 0.0}  # a lone point has no range to end
    assert crowding(points, []) == {}


def test_crowding_ignores_an_objective_without_range() -> None:
    points: list[Point | None] = [
        (0.0, 4.0, 7.0),
        (1.0, 2.0, 7.0),
        (3.0, 1.0, 7.0),
        (4.0, 0.0, 7.0),
    ]
    assert crowding(points, [0, 1, 2, 3]) == {0: math.inf, 1: 1.5, 2: 1.25, 3: math.inf}
    same: list[Point | None] = [(1.0, 1.0)] * 3
    assert crowding(same, [0, 1, 2]) == {0: 0.0, 1: 0.0, 2: 0.0}  # no end to mark
    with pytest.raises(ValueError, match="no front"):
        crowding([(1.0, 1.0), None], [0, 1])


def test_pareto_fitness_orders_as_the_crowded_comparison() -> None:
    for seed in range(200):
        points = random_points(random.Random(seed))
        fitness = pareto_fitness(points)
        assert len(fitness) == len(points)
        key: dict[int, tuple[int, float]] = {}  # the crowded comparison: lower key is better
        for rank, front in enumerate(fronts(points)):
            for i, d in crowding(points, front).items():
                key[i] = (rank, -d)
        for i, (p, f) in enumerate(zip(points, fitness, strict=True)):
            assert (p is None) == (f is None), f"seed {seed}, point {i}"
            if f is not None:
                assert math.isfinite(f) and math.floor(f) == -key[i][0]
        for i in key:
            for j in key:
                fi, fj = fitness[i], fitness[j]
                assert fi is not None and fj is not None
                assert (fi > fj) == (key[i] < key[j]), f"seed {seed}: {i} vs {j}"
                assert (fi == fj) == (key[i] == key[j]), f"seed {seed}: {i} vs {j}"


def test_objectives_of_figures() -> None:
    figures = Figures(
        requests=10, errors=2, mismatches=1, latencies_ms=(3.0, 1.0, 2.0), memory_mb=50.0
    )
    assert objectives(figures) == (2.0, 0.2, 50.0, 0.1)
    assert objectives(Figures(memory_mb=5.0)) == (0.0, 0.0, 5.0, 0.0)  # no request: no rate
    assert objectives(Figures(requests=10, failure="mismatch veto")) is None


def x_of(code: str) -> float:
    return float(code.removeprefix("x="))


def breed(a: str, b: str, rng: random.Random) -> str:
    """The parents' mean and a Gaussian step, kept in the domain [-2, 4]."""
    x = (x_of(a) + x_of(b)) / 2 + rng.gauss(0.0, 0.1)
    return f"x={min(4.0, max(-2.0, x)):.4f}"


def schaffer(seed: int, generations: int = 15) -> list[float]:
    """Schaffer's problem, minimise (x^2, (x-2)^2): its Pareto set is x in [0, 2]."""
    rng = random.Random(seed)
    codes = [f"x={rng.uniform(-2.0, 4.0):.4f}" for _ in range(16)]
    for _ in range(generations):
        points: list[Point | None] = [(x_of(c) ** 2, (x_of(c) - 2) ** 2) for c in codes]
        scored = [Scored(c, f) for c, f in zip(codes, pareto_fitness(points), strict=True)]
        codes = next_generation(scored, rng, breed, size=16, elite=8)
    return [x_of(c) for c in codes]


def test_selection_with_pareto_fitness_finds_and_spreads_over_the_pareto_set() -> None:
    """The final population (8 elites and 8 new children) lies in [0, 2] and covers it."""
    inside = spread = 0
    for seed in range(20):
        xs = schaffer(seed)
        inside += sum(0.0 <= x <= 2.0 for x in xs)
        spread += any(0.0 <= x < 1.0 for x in xs) and any(1.0 <= x <= 2.0 for x in xs)
    # observed: 302 of 320 (94.4%) inside, all children of the ends' elites stepping out;
    # both halves covered in 20 of 20 seeds
    assert inside >= 0.9 * 320, f"{inside} of 320 in the Pareto set"
    assert spread >= 18, f"{spread} of 20 runs cover both halves of the Pareto set"
