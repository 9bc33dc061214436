"""A genetic run: generations of variants, gated, evaluated, selected, each generation
persisted as it completes, resumable after any stop.

On disk, ``<root>/<run>/``: ``run.json`` (what was asked: the code, the target, the seed,
the sizes) and one ``gen-NNNN.json`` per completed generation, written atomically: each
variant's code, fingerprint and figures, the population bred for the next generation and
the random state after breeding it.

The one decision: a generation is the unit of persistence. A resumed run reads the newest
complete generation and evaluates the population it bred, with the random state saved
beside it; a generation that was in flight when the run stopped is evaluated again from
the start. So a run stopped at any moment and resumed makes exactly the choices an
uninterrupted one makes, given the same figures, and adds nothing twice.
"""

from __future__ import annotations

import json
import random
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from osup_mp.evolution.genetic import (
    Figures,
    Scored,
    crossover,
    elites,
    fingerprint,
    mutate,
    next_generation,
    objectives,
    pareto_fitness,
    seed_fitness,
)
from osup_mp.lowlevel.files import atomic_write

_GATE = "gate: "
_RUN_ID = re.compile(r"run-[0-9a-f]{8}")
Evaluate = Callable[[Sequence[str]], list[Figures]]
Gate = Callable[[str], str | None]  # code -> why it fails the gate, or None
# (code, its figures or None, a seed) -> a variant, or None to use the built-in mutation
Mutator = Callable[[str, Figures | None, int], str | None]


@dataclass(frozen=True, slots=True)
class RunSpec:
    code: str
    target: str
    generations: int
    population: int
    seed: int
    elite: int = 1
    mutation_rate: float = 0.3
    mutator: list[str] | None = None  # a mutator command's argv (see .mutator)
    pareto: bool = False  # select by NSGA-II's fronts, not by the weighted fitness
    # How variants are judged and limited (evolve.judge.Judge's data; cpu/wall seconds):
    # kept with the run, so that a resumed run fails and ranks variants as before.
    judge: dict[str, Any] | None = None
    deadlines: dict[str, float] | None = None


@dataclass(slots=True)
class Variant:
    code: str
    figures: Figures
    fingerprint: str = ""
    fitness: float | None = None
    parents: list[str] = field(default_factory=list)  # fingerprints; [] the start; [own] kept

    def record(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "parents": self.parents,
            "fitness": self.fitness,
            "figures": asdict(self.figures),  # JSON writes its tuple of latencies as a list
            "code": self.code,
        }

    @classmethod
    def from_record(cls, r: dict[str, Any]) -> Variant:
        figures = dict(r["figures"], latencies_ms=tuple(r["figures"]["latencies_ms"]))
        return cls(
            r["code"], Figures(**figures), r["fingerprint"], r["fitness"], r.get("parents", [])
        )


@dataclass(slots=True)
class Generation:
    index: int
    variants: list[Variant]
    bred: list[str] = field(default_factory=list)  # the next generation's codes
    lineage: dict[str, list[str]] = field(default_factory=dict)  # bred fingerprint -> parents

    @property
    def best(self) -> Variant | None:
        measured = [v for v in self.variants if v.fitness is not None]
        return max(measured, key=lambda v: v.fitness or 0.0) if measured else None


class Run:
    """One run's directory; :meth:`step` runs the next generation."""

    def __init__(self, directory: Path, spec: RunSpec) -> None:
        self.directory = directory
        self.spec = spec
        self.id = directory.name
        self.history: list[Generation] = []
        self._rng = random.Random(spec.seed)
        self._next: list[str] = []
        self._lineage: dict[str, list[str]] = {}  # the next generation's parents, by fingerprint
        self.mutator: Mutator | None = None
        self._measured: dict[str, Figures] = {}  # fingerprint -> what was last measured

    @classmethod
    def create(cls, root: Path, spec: RunSpec, mutator: Mutator | None = None) -> Run:
        directory = root / f"run-{uuid.uuid4().hex[:8]}"
        directory.mkdir(parents=True)
        atomic_write(directory / "run.json", json.dumps(asdict(spec), indent=1).encode())
        run = cls(directory, spec)
        run.mutator = mutator
        run._next = run._first_population()
        return run

    @classmethod
    def resume(cls, root: Path, run_id: str, mutator: Mutator | None = None) -> Run:
        if not _RUN_ID.fullmatch(run_id):
            raise RunError(f"cannot resume {run_id}: a run is named run-XXXXXXXX")
        directory = root / run_id
        try:
            spec = RunSpec(**json.loads((directory / "run.json").read_text()))
        except (OSError, ValueError, TypeError) as exc:
            raise RunError(f"cannot resume {run_id}: {exc}") from None
        run = cls(directory, spec)
        run.mutator = mutator
        for path in sorted(directory.glob("gen-*.json")):
            data = json.loads(path.read_text())
            variants = [Variant.from_record(r) for r in data["variants"]]
            lineage = data.get("lineage", {})
            run.history.append(Generation(data["index"], variants, data["bred"], lineage))
            run._measured.update((v.fingerprint, v.figures) for v in variants)
            run._rng.setstate(_state(data["random_state"]))
        if run.history:
            run._next, run._lineage = run.history[-1].bred, run.history[-1].lineage
        else:
            run._next = run._first_population()
        return run

    @property
    def done(self) -> bool:
        return len(self.history) >= self.spec.generations

    def step(self, evaluate: Evaluate, gate: Gate) -> Generation:
        """Gate and evaluate the next generation, breed the one after, persist."""
        index = len(self.history)
        # A code is gated once per run: what failed the gate still would, what passed is
        # evaluated again (elites are measured again every generation).
        gated = {v.fingerprint: _gate_failure(v) for g in self.history for v in g.variants}
        variants = [Variant(code, Figures(), fingerprint(code)) for code in self._next]
        for v in variants:
            v.parents = self._lineage.get(v.fingerprint, [])
        passed: list[Variant] = []
        for variant in variants:
            if variant.fingerprint not in gated:
                gated[variant.fingerprint] = gate(variant.code)
            refused = gated[variant.fingerprint]
            if refused is None:
                passed.append(variant)
            else:
                variant.figures = Figures(failure=f"{_GATE}{refused}")
        for variant, figures in zip(passed, evaluate([v.code for v in passed]), strict=True):
            variant.figures = figures
        for variant in variants:
            variant.fitness = seed_fitness(variant.figures)
            self._measured[variant.fingerprint] = variant.figures
        generation = Generation(index, variants)
        if index + 1 < self.spec.generations:
            seen = set(gated)
            # The weighted fitness is what is shown and compared across generations; with
            # --pareto, selection ranks the generation by its fronts instead.
            keys = (
                pareto_fitness([objectives(v.figures) for v in variants])
                if self.spec.pareto
                else [v.fitness for v in variants]
            )
            scored = [Scored(v.code, key) for v, key in zip(variants, keys, strict=True)]
            self._lineage = {}
            generation.bred = next_generation(
                scored,
                self._rng,
                self._breed,
                size=self.spec.population,
                elite=self.spec.elite,
                seen=lambda code: fingerprint(code) in seen,
            )
            # The elites are kept as they were (their own parent); children have theirs.
            kept = {fingerprint(s.code) for s in elites(scored, self.spec.elite)}
            generation.lineage = {
                fp: [fp] if fp in kept else self._lineage.get(fp, [fp])
                for fp in map(fingerprint, generation.bred)
            }
        self._save(generation)
        self.history.append(generation)
        self._next, self._lineage = generation.bred, generation.lineage
        return generation

    @property
    def best(self) -> Variant | None:
        bests = [b for g in self.history if (b := g.best) is not None]
        return max(bests, key=lambda v: v.fitness or 0.0) if bests else None

    def _first_population(self) -> list[str]:
        start = fingerprint(self.spec.code)
        codes, seen = [self.spec.code], {start}
        for _ in range(self.spec.population * 20):
            if len(codes) >= self.spec.population:
                break
            child = self._vary(self.spec.code, self._rng)
            if fingerprint(child) not in seen:
                seen.add(fingerprint(child))
                codes.append(child)
                self._lineage[fingerprint(child)] = [start]
        return codes

    def _breed(self, first: str, second: str, rng: random.Random) -> str:
        child = self._vary(crossover(first, second, rng), rng, first)
        parents = dict.fromkeys((fingerprint(first), fingerprint(second)))  # once each, in order
        self._lineage[fingerprint(child)] = list(parents)
        return child

    def _vary(self, code: str, rng: random.Random, parent: str | None = None) -> str:
        """The mutator command's variant of ``code`` (told what was measured of ``parent``),
        else the built-in mutation's."""
        if self.mutator is not None:
            figures = self._measured.get(fingerprint(parent or code))
            varied = self.mutator(code, figures, rng.randrange(2**31))
            if varied is not None:
                return varied
        return mutate(code, rng, self.spec.mutation_rate)

    def _save(self, generation: Generation) -> None:
        data = {
            "index": generation.index,
            "variants": [v.record() for v in generation.variants],
            "bred": generation.bred,
            "lineage": generation.lineage,
            "random_state": _jsonable(self._rng.getstate()),
        }
        path = self.directory / f"gen-{generation.index:04d}.json"
        atomic_write(path, json.dumps(data).encode())


def _gate_failure(variant: Variant) -> str | None:
    failure = variant.figures.failure or ""
    return failure[len(_GATE) :] if failure.startswith(_GATE) else None


class RunError(RuntimeError):
    """A run cannot be created or resumed (the message says why)."""


def _jsonable(state: Any) -> Any:
    return [_jsonable(x) for x in state] if isinstance(state, tuple) else state


def _state(data: Any) -> Any:
    return tuple(_state(x) for x in data) if isinstance(data, list) else data
