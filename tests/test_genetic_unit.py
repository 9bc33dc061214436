"""Genetic evolution's pure parts: variation on the syntax tree and seeded selection."""

from __future__ import annotations

import ast
import random
import textwrap

import pytest

from osup_mp.evolution.genetic import (
    Scored,
    VariationError,
    crossover,
    elites,
    fingerprint,
    genes,
    mutate,
    next_generation,
    tournament,
)

pytestmark = pytest.mark.unit  # no process started

TOY = textwrap.dedent(
    '''
    """A toy module: its best WIDTH is 7 (see fitness below)."""

    WIDTH = 2.0  # a bounded tunable
    DEPTH = 3  # an unbounded one
    PARAMS = {"WIDTH": (0.0, 20.0)}
    ALTERNATIVES = {"score": ("score_a", "score_b")}
    name = "toy"


    def score_a(x):
        return x


    def score_b(x):
        return 2 * x


    score = score_a
    '''
)


def values(code: str) -> dict[str, object]:
    namespace: dict[str, object] = {}
    exec(compile(code, "<variant>", "exec"), namespace)
    return namespace


def fitness(code: str) -> float:
    width = float(values(code)["WIDTH"])  # type: ignore[arg-type]
    return -((width - 7.0) ** 2)


def test_the_genes_are_what_the_module_declares() -> None:
    g = genes(TOY)
    assert g.constants == {"WIDTH": 2.0}  # PARAMS declares which constants vary
    assert g.bounds == {"WIDTH": (0.0, 20.0)}
    assert g.alternatives == {"score": ("score_a", "score_b")}
    assert g.bindings == {"score": "score_a"}
    assert g.functions == ("score_a", "score_b")


def test_without_params_every_upper_case_number_varies_and_keeps_its_type() -> None:
    code = "A = 1\nB = -2.5\nname = 3\n"
    assert genes(code).constants == {"A": 1, "B": -2.5}
    rng = random.Random(4)
    kinds = {
        (type(values(c)["A"]), type(values(c)["B"])) for c in (mutate(code, rng) for _ in range(50))
    }
    assert kinds == {(int, float)}


@pytest.mark.parametrize(
    ("code", "error"),
    [
        ("def f(:\n", "not valid Python: line 1"),
        ("X = 1\nPARAMS = {'Y': (0, 1)}\n", "PARAMS['Y']: no UPPER_CASE number"),
        ("X = 1\nPARAMS = {'X': (2, 1)}\n", "low <= high"),
        ("X = 1\nPARAMS = {'X': lo}\n", "PARAMS must be a literal dict"),
        ("def f(): pass\nALTERNATIVES = {'g': ('f', 'h')}\ng = f\n", "no top-level function 'h'"),
        ("def f(): pass\nALTERNATIVES = {'g': ('f',)}\n", "no top-level `g = ...`"),
    ],
)
def test_malformed_declarations_are_named(code: str, error: str) -> None:
    with pytest.raises(VariationError, match=error.replace("(", r"\(").replace("[", r"\[")):
        genes(code)


def test_nothing_to_vary_is_an_error() -> None:
    with pytest.raises(VariationError, match="nothing to vary"):
        mutate("x = 1\n", random.Random(1))


def test_mutants_are_valid_python_within_bounds_and_keep_types() -> None:
    rng = random.Random(7)
    seen_bindings = set()
    for _ in range(300):
        child = mutate(TOY, rng)
        ast.parse(child)
        ns = values(child)
        assert 0.0 <= ns["WIDTH"] <= 20.0 and type(ns["WIDTH"]) is float  # type: ignore[operator]
        assert ns["DEPTH"] == 3  # not in PARAMS: never varied
        assert ns["name"] == "toy"  # not a gene: never touched
        seen_bindings.add(ns["score"].__name__)  # type: ignore[attr-defined]
        assert child != TOY
    assert seen_bindings == {"score_a", "score_b"}


def test_crossover_takes_each_gene_from_one_parent() -> None:
    rng = random.Random(3)
    first = TOY.replace("WIDTH = 2.0", "WIDTH = 1.0").replace("DEPTH = 3", "DEPTH = 10")
    second = (
        TOY.replace("WIDTH = 2.0", "WIDTH = 9.0")
        .replace("score = score_a", "score = score_b")
        .replace("return 2 * x", "return 3 * x")
    )
    combos = set()
    for _ in range(200):
        ns = values(crossover(first, second, rng))
        score, score_b = ns["score"], ns["score_b"]
        combos.add((ns["WIDTH"], ns["DEPTH"], score.__name__, score_b(1)))  # type: ignore[attr-defined, operator]
    assert {c[0] for c in combos} == {1.0, 9.0}
    assert {c[1] for c in combos} == {10}  # not a gene: the first parent's
    assert {c[2] for c in combos} == {"score_a", "score_b"}
    assert {c[3] for c in combos} == {2, 3}  # whole functions from either parent


def test_the_fingerprint_ignores_layout_and_comments() -> None:
    same = TOY.replace("WIDTH = 2.0  # a bounded tunable", "WIDTH=2.0") + "\n\n# the end\n"
    assert fingerprint(same) == fingerprint(TOY)
    assert fingerprint(TOY.replace("2.0", "2.5")) != fingerprint(TOY)


def test_selection_keeps_the_size_and_the_elites_and_never_picks_a_failure() -> None:
    rng = random.Random(5)
    scored = [Scored(f"c{i}", None if i % 3 == 0 else float(i)) for i in range(9)]
    assert [s.code for s in elites(scored, 2)] == ["c8", "c7"]
    children = next_generation(
        scored, rng, lambda a, b, r: f"{a}+{b}", size=9, elite=2, seen=lambda c: False
    )
    assert len(children) == 9 and children[:2] == ["c8", "c7"]
    # A failure loses every tournament it meets a success in.
    assert tournament([Scored("f", None), Scored("g", -1e9)], rng, size=60).code == "g"


def run(seed: int, generations: int = 12, size: int = 8) -> list[list[str]]:
    """A whole run on the toy, fitness computed in-process; every generation's codes."""
    rng = random.Random(seed)
    population = [mutate(TOY, rng) for _ in range(size)]
    history = [population]
    seen = {fingerprint(code) for code in population}

    def breed(a: str, b: str, r: random.Random) -> str:
        return mutate(crossover(a, b, r), r, rate=0.3)

    for _ in range(generations):
        scored = [Scored(code, fitness(code)) for code in population]
        population = next_generation(
            scored, rng, breed, size=size, elite=2, seen=lambda c: fingerprint(c) in seen
        )
        seen |= {fingerprint(code) for code in population}
        history.append(population)
    return history


def test_one_seed_and_the_same_figures_make_the_same_choices() -> None:
    assert run(11, generations=5) == run(11, generations=5)
    assert run(11, generations=5) != run(12, generations=5)
    assert all(len(generation) == 8 for generation in run(13, generations=5))


def test_a_variant_keeps_its_parents_layout_and_comments() -> None:
    rng = random.Random(2)
    child = mutate(TOY, rng, rate=0.0)  # exactly one gene changed
    changed = [(a, b) for a, b in zip(TOY.splitlines(), child.splitlines(), strict=True) if a != b]
    assert len(changed) == 1, changed
    before, after = changed[0]
    assert before.split("=")[0] == after.split("=")[0]  # the same name, a new value
    assert "# a bounded tunable" in child  # comments stay
