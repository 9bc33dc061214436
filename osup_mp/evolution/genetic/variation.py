"""Variation of a module's source on its syntax tree: mutation and crossover.

What may vary is what a module shows or declares at its top level, never anything else:

* **tunable constants**: names in UPPER_CASE bound to an int or float literal
  (``NPROBE = 8``). Unbounded: a mutation scales them by a factor around 1 and keeps their
  type and sign;
* **declared parameters**: ``PARAMS = {"NPROBE": (1, 64)}`` names the constants that vary
  (then only those: ``DIM = 64`` beside it stays) and gives each its bounds (its type is
  its literal's). A mutation then takes a Gaussian step of a fifth of the range and clips
  it;
* **alternative implementations**: ``ALTERNATIVES = {"search": ("search_exact",
  "search_ivf")}`` with a binding ``search = search_exact``; a mutation rebinds the name to
  another of the functions listed.

Crossover takes one parent's tree and, gene by gene (each top-level function both parents
define, each constant, each binding), the other parent's version with probability one half.
The one decision: variation finds the genes on the parsed tree and edits the source text
only where they are (a literal, a name, a whole function's lines), so a variant keeps its
parent's layout and comments and its diff shows only what changed; every variant is
parsed again before it is kept, and two variants that differ only in layout or comments
have the same :func:`fingerprint`.
"""

from __future__ import annotations

import ast
import hashlib
import random
from collections.abc import Mapping
from dataclasses import dataclass

Values = dict[str, int | float | str]  # gene name -> its new literal, or the function it binds
Bounds = dict[str, tuple[float, float]]
PARAMS = "PARAMS"
ALTERNATIVES = "ALTERNATIVES"
_STEP = 0.2  # a mutation's standard deviation: this share of the range, or of the value


class VariationError(ValueError):
    """The code cannot be varied: it does not parse, or its declarations are malformed."""


@dataclass(frozen=True, slots=True)
class Genes:
    """What may vary in one module, as found in its source."""

    constants: dict[str, int | float]
    bounds: dict[str, tuple[float, float]]
    alternatives: dict[str, tuple[str, ...]]  # name -> the functions it may be bound to
    bindings: dict[str, str]  # name -> the function it is bound to now
    functions: tuple[str, ...]  # top-level function names

    @property
    def empty(self) -> bool:
        return not (self.constants or self.bindings)


def fingerprint(code: str) -> str:
    """A hash of the code's syntax tree: equal for sources that differ only in layout,
    comments or quoting (variants are deduplicated by it)."""
    tree = _parse(code)
    return hashlib.sha256(ast.dump(tree, include_attributes=False).encode()).hexdigest()[:16]


def genes(code: str) -> Genes:
    """The tunables of ``code``; raises :class:`VariationError` naming what is malformed."""
    tree = _parse(code)
    constants: dict[str, int | float] = {}
    bindings: dict[str, str] = {}
    declared: dict[str, ast.expr] = {}
    functions: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            functions.append(node.name)
        target, value = _assignment(node)
        if target is None or value is None:
            continue
        if target in (PARAMS, ALTERNATIVES):
            declared[target] = value
        elif target.isupper() and (number := _number(value)) is not None:
            constants[target] = number
        elif isinstance(value, ast.Name):
            bindings[target] = value.id
    bounds = _bounds(declared.get(PARAMS), constants)
    if PARAMS in declared:  # a module that declares its parameters declares all of them
        constants = {name: constants[name] for name in bounds}
    alternatives = _alternatives(declared.get(ALTERNATIVES), functions)
    bindings = {k: v for k, v in bindings.items() if k in alternatives}
    for name in alternatives:
        if name not in bindings:
            raise VariationError(f"{ALTERNATIVES}[{name!r}]: no top-level `{name} = ...` to rebind")
    return Genes(constants, bounds, alternatives, bindings, tuple(functions))


def mutate(code: str, rng: random.Random, rate: float = 0.5) -> str:
    """``code`` with each gene changed with probability ``rate`` (at least one changed,
    when the module has any)."""
    g = genes(code)
    names = [*g.constants, *g.bindings]
    if not names:
        raise VariationError("nothing to vary: no UPPER_CASE number and no ALTERNATIVES")
    chosen = [n for n in names if rng.random() < rate] or [rng.choice(names)]
    values: Values = {}
    for name in chosen:
        if name in g.constants:
            values[name] = _perturb(g.constants[name], g.bounds.get(name), rng)
        else:
            others = [f for f in g.alternatives[name] if f != g.bindings[name]]
            values[name] = rng.choice(others) if others else g.bindings[name]
    return _rewrite(code, values, {})


def crossover(first: str, second: str, rng: random.Random) -> str:
    """A child of two variants of one module: ``first``'s tree with, gene by gene (each
    function both define, each constant, each binding), ``second``'s with probability 1/2."""
    a, b = genes(first), genes(second)
    values: Values = {}
    for name in a.constants.keys() & b.constants.keys():
        if rng.random() < 0.5:
            values[name] = b.constants[name]
    for name in a.bindings.keys() & b.bindings.keys():
        if rng.random() < 0.5:
            values[name] = b.bindings[name]
    theirs = _functions(second)
    functions = {n: theirs[n] for n in sorted(set(a.functions) & set(theirs)) if rng.random() < 0.5}
    return _rewrite(first, values, functions)


# -- helpers -----------------------------------------------------------------------------


def _parse(code: str) -> ast.Module:
    try:
        return ast.parse(code)
    except SyntaxError as exc:
        raise VariationError(f"not valid Python: line {exc.lineno}: {exc.msg}") from None


def _assignment(node: ast.stmt) -> tuple[str | None, ast.expr | None]:
    if isinstance(node, ast.Assign) and len(node.targets) == 1:
        target = node.targets[0]
        return (target.id if isinstance(target, ast.Name) else None), node.value
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return node.target.id, node.value
    return None, None


def _number(node: ast.expr) -> int | float | None:
    """The value of an int or float literal (a leading minus allowed), else None."""
    sign = 1
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        sign, node = -1, node.operand
    value = node.value if isinstance(node, ast.Constant) else None
    return sign * value if type(value) is int or type(value) is float else None


def _bounds(node: ast.expr | None, constants: dict[str, int | float]) -> Bounds:
    if node is None:
        return {}
    try:
        declared = ast.literal_eval(node)
    except ValueError:
        raise VariationError(f"{PARAMS} must be a literal dict of NAME: (low, high)") from None
    if not isinstance(declared, dict):
        raise VariationError(f"{PARAMS} must be a dict of NAME: (low, high)")
    bounds: Bounds = {}
    for name, pair in declared.items():
        if name not in constants:
            raise VariationError(f"{PARAMS}[{name!r}]: no UPPER_CASE number of that name")
        ok = isinstance(pair, tuple | list) and len(pair) == 2
        if not ok or not all(type(v) in (int, float) for v in pair) or not pair[0] <= pair[1]:
            raise VariationError(f"{PARAMS}[{name!r}] must be (low, high) numbers, low <= high")
        bounds[name] = (float(pair[0]), float(pair[1]))
    return bounds


def _alternatives(node: ast.expr | None, functions: list[str]) -> dict[str, tuple[str, ...]]:
    if node is None:
        return {}
    try:
        declared = ast.literal_eval(node)
    except ValueError:
        raise VariationError(f"{ALTERNATIVES} must be a literal dict") from None
    if not isinstance(declared, dict):
        raise VariationError(f"{ALTERNATIVES} must be a dict of name: (function names)")
    result: dict[str, tuple[str, ...]] = {}
    for name, options in declared.items():
        if not isinstance(options, tuple | list) or not options:
            raise VariationError(f"{ALTERNATIVES}[{name!r}] must list function names")
        missing = [f for f in options if f not in functions]
        if missing:
            raise VariationError(f"{ALTERNATIVES}[{name!r}]: no top-level function {missing[0]!r}")
        result[str(name)] = tuple(options)
    return result


def _perturb(
    value: int | float, bounds: tuple[float, float] | None, rng: random.Random
) -> int | float:
    if bounds is not None:
        low, high = bounds
        new = min(high, max(low, value + rng.gauss(0.0, _STEP * (high - low) or 1.0)))
    else:
        new = value * max(0.0, rng.gauss(1.0, _STEP)) if value else rng.gauss(0.0, _STEP)
    if type(value) is int:
        stepped = round(new)
        if stepped == value and bounds is None:  # an int too small to move by scaling
            stepped = value + rng.choice((-1, 1))
        if bounds is not None:
            stepped = int(min(bounds[1], max(bounds[0], stepped)))
        return stepped
    return float(new)


def _functions(code: str) -> dict[str, str]:
    """The source of each top-level function (with its decorators), as whole lines."""
    tree, lines = _parse(code), code.splitlines(keepends=True)
    return {
        stmt.name: "".join(lines[_first_line(stmt) - 1 : stmt.end_lineno])
        for stmt in tree.body
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef)
    }


def _first_line(stmt: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    return min([stmt.lineno, *(d.lineno for d in stmt.decorator_list)])


def _rewrite(code: str, values: Values, functions: Mapping[str, str]) -> str:
    """``code`` with the values of the genes in ``values`` and the functions in
    ``functions`` replaced in its text: layout, comments and everything else untouched."""
    tree, lines = _parse(code), code.splitlines(keepends=True)
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))

    def offset(lineno: int, col: int) -> int:  # ast columns count UTF-8 bytes
        return starts[lineno - 1] + len(lines[lineno - 1].encode()[:col].decode())

    edits: list[tuple[int, int, str]] = []
    for stmt in tree.body:
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef) and stmt.name in functions:
            end = starts[stmt.end_lineno or stmt.lineno]
            edits.append((starts[_first_line(stmt) - 1], end, functions[stmt.name]))
            continue
        target, value = _assignment(stmt)
        if target in values and value is not None:
            new = values[target]
            text = new if isinstance(new, str) else repr(new)
            span = offset(value.lineno, value.col_offset)
            edits.append((span, offset(value.end_lineno or 1, value.end_col_offset or 0), text))
    for begin, end, text in sorted(edits, reverse=True):
        code = code[:begin] + text + code[end:]
    _parse(code)  # a variant is valid Python, or an error here, never in a shadow
    return code
