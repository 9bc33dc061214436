"""What a genetic run reports: a line per generation, the summary (also its JSON form), the
best variants' table, the diff of the best against the starting code, the fitness per
generation as a terminal sparkline and as an SVG plot written beside the run."""

from __future__ import annotations

import difflib
from typing import Any

from osup_mp.evolution.genetic import fronts, objectives
from osup_mp.evolve.run import Generation, Run, Variant
from osup_mp.lowlevel.files import atomic_write

_BARS = "▁▂▃▄▅▆▇█"
_HEADER = (
    f"{'VARIANT':18} {'GEN':>3} {'FROM':13} {'FITNESS':>8} {'MEDIAN':>10} {'ERRORS':>7} {'RSS':>9}"
)


def generation_line(generation: Generation, total: int) -> str:
    failed = sum(v.fitness is None for v in generation.variants)
    best = generation.best
    shown = (
        f"best fitness {best.fitness:.3f} (median {best.figures.median_ms:.2f} ms)"
        if best is not None and best.fitness is not None
        else "no variant measured"
    )
    n = len(generation.variants)
    return f"generation {generation.index + 1}/{total}: {n} variants, {failed} failed, {shown}"


def summary(run: Run) -> dict[str, Any]:
    """The run as plain data: its generations, the start, the best variants (each once),
    why variants failed."""
    variants = [(g.index, v) for g in run.history for v in g.variants]
    measured = sorted(
        ((i, v) for i, v in variants if v.fitness is not None),
        key=lambda iv: iv[1].fitness or 0.0,
        reverse=True,
    )
    origins = _origins(run)
    seen: set[str] = set()
    best = []
    for index, v in measured:
        if v.fingerprint not in seen:
            seen.add(v.fingerprint)
            best.append(_row(index, v, origins))
    start = run.history[0].variants[0] if run.history else None
    extra = {"front": front(run)} if run.spec.pareto else {}
    return extra | {
        "run": run.id,
        "directory": str(run.directory),
        "target": run.spec.target,
        "generations_planned": run.spec.generations,
        "generations": [
            {
                "index": g.index,
                "variants": len(g.variants),
                "failed": sum(v.fitness is None for v in g.variants),
                "best_fitness": g.best.fitness if g.best else None,
            }
            for g in run.history
        ],
        "start": start and {"fitness": start.fitness, "median_ms": start.figures.median_ms},
        "best": best[:5],
        "failures": sorted({v.figures.failure for _, v in variants if v.figures.failure})[:10],
    }


def _origins(run: Run) -> dict[str, list[str]]:
    """Each variant's parents where it first appeared (later, an elite is only "kept")."""
    origins: dict[str, list[str]] = {}
    for g in run.history:
        for v in g.variants:
            origins.setdefault(v.fingerprint, v.parents)
    return origins


def _row(generation: int, v: Variant, origins: dict[str, list[str]]) -> dict[str, Any]:
    f = v.figures
    return {
        "fingerprint": v.fingerprint, "generation": generation, "fitness": v.fitness,
        "median_ms": f.median_ms, "error_rate": f.error_rate, "memory_mb": f.memory_mb,
        "parents": origins.get(v.fingerprint, v.parents), "mismatches": f.mismatches,
        "mismatch_rate": f.mismatches / max(f.requests, 1),
        "score": f.score,
    }  # fmt: skip


def front(run: Run) -> list[dict[str, Any]]:
    """The run's Pareto front: the distinct variants (each as last measured) that no other
    beats in median latency, error rate, memory and mismatch rate at once; fastest first."""
    newest = {v.fingerprint: (g.index, v) for g in run.history for v in g.variants}
    alive = [(i, v) for i, v in newest.values() if v.fitness is not None]
    first = fronts([objectives(v.figures) for _, v in alive])
    origins = _origins(run)
    rows = [_row(*alive[i], origins) for i in (first[0] if first else [])]
    return sorted(rows, key=lambda r: r["median_ms"])


def sparkline(values: list[float | None]) -> str:
    """One block character per value, scaled between their minimum and maximum (a gap for
    a generation with no measured variant)."""
    known = [v for v in values if v is not None]
    if not known:
        return ""
    low, high = min(known), max(known)
    span = (high - low) or 1.0
    return "".join(
        " " if v is None else _BARS[round((v - low) / span * (len(_BARS) - 1))] for v in values
    )


def write_plot(run: Run, width: int = 480, height: int = 200) -> str | None:
    """The best fitness per generation as ``fitness.svg`` in the run's directory; its path
    (None before any measured generation)."""
    points = [(g.index, g.best.fitness) for g in run.history if g.best and g.best.fitness]
    if not points:
        return None
    pad = 30
    low = min(f for _, f in points)
    high = max(f for _, f in points)
    last = max(run.spec.generations - 1, 1)

    def xy(index: int, fitness: float) -> str:
        x = pad + index / last * (width - 2 * pad)
        y = height - pad - (fitness - low) / ((high - low) or 1.0) * (height - 2 * pad)
        return f"{x:.1f},{y:.1f}"

    line = " ".join(xy(i, f) for i, f in points)
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">'
        f'<rect width="100%" height="100%" fill="white"/>'
        f'<text x="{pad}" y="18" font-family="sans-serif" font-size="12">'
        f"{run.id}: best fitness per generation ({low:.3f} to {high:.3f})</text>"
        f'<polyline fill="none" stroke="steelblue" stroke-width="2" points="{line}"/>'
        f"</svg>\n"
    )
    path = run.directory / "fitness.svg"
    atomic_write(path, svg.encode())
    return str(path)


def _lineage(b: dict[str, Any]) -> str:
    """Where a variant came from: the start, kept (an elite), or its parents' fingerprints."""
    parents = b.get("parents") or []
    if not parents:
        return "start"
    if parents == [b["fingerprint"]]:
        return "kept"
    return "+".join(p[:6] for p in parents)


def _line(b: dict[str, Any], extra: str = "") -> str:
    score = "" if b.get("score") is None else f"  score {b['score']:.3f}"
    return (
        f"{b['fingerprint']:18} {b['generation'] + 1:>3} {_lineage(b):13} "
        f"{b['fitness']:>8.3f} "
        f"{b['median_ms']:>7.2f} ms {b['error_rate']:>7.1%} {b['memory_mb']:>5.1f} MiB"
        f"{extra}{score}"
    )


def text(run: Run, data: dict[str, Any]) -> list[str]:
    """The report's lines: the best variants, the start, the failures, the plot, the diff."""
    lines = ["", _HEADER, *map(_line, data["best"])]
    if "front" in data:
        lines += ["", f"Pareto front ({len(data['front'])} variants, fastest first):"]
        lines += [_HEADER + f" {'MISMATCH':>8}"]
        lines += [_line(r, f" {r['mismatch_rate']:>8.1%}") for r in data["front"]]
    start = data["start"]
    if start and start["fitness"] is not None:
        fitness, median = start["fitness"], start["median_ms"]
        lines.append(f"the starting code: fitness {fitness:.3f}, median {median:.2f} ms")
    lines += [f"failed: {failure}" for failure in data["failures"]]
    bests = [g["best_fitness"] for g in data["generations"]]
    plot = write_plot(run)
    lines.append(f"best fitness per generation: {sparkline(bests)}  ({plot or 'no plot'})")
    best = run.best
    if best is not None:
        diff = difflib.unified_diff(
            run.spec.code.splitlines(keepends=True),
            best.code.splitlines(keepends=True),
            "start",
            f"best ({best.fingerprint})",
        )
        lines.append("".join(diff).rstrip("\n") or "(the best is the starting code)")
    lines.append(f"run {run.id}: {run.directory}")
    return lines
