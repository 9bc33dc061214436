"""The reference agent's memory system with an approximate index to evolve.

``search`` is bound to one of two implementations (``ALTERNATIVES``): the exact ranking the
agent ships, or an inverted-file index (IVF): the rows are clustered by k-means over their
directions into ``NLIST`` lists, a query ranks the centroids and scores only the rows of
the ``NPROBE`` nearest lists. The index is built on the first search after the rows change
and kept. ``PARAMS`` bounds what evolution may tune: the lists, the probes, the k-means
iterations. Recall@10 against the exact search is what the score hook
(``osup_mp.evolution.compare:recall``, ``evolve --min-score 0.95``) holds a variant to.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

DIM = 64
NLIST = 32
NPROBE = 16
ITERS = 3
PARAMS = {"NLIST": (8, 512), "NPROBE": (1, 64), "ITERS": (1, 10)}
ALTERNATIVES = {"search": ("search_exact", "search_ivf")}

Rows = np.ndarray[Any, np.dtype[np.float32]]
_INDEX: dict[str, Any] = {}  # the index of the rows last searched, and what it was built for


def embed(text: str, dim: int = DIM) -> Rows:
    """A deterministic bag-of-words embedding (hashing trick), L2-normalised."""
    vec = np.zeros(dim, dtype=np.float32)
    for token in text.lower().split():
        digest = hashlib.blake2b(token.encode(), digest_size=8).digest()
        h = int.from_bytes(digest, "little")
        vec[h % dim] += 1.0 if (h >> 32) & 1 else -1.0
    norm = float(np.linalg.norm(vec))
    return vec / norm if norm else vec


def search_exact(
    matrix: Rows, query: Rows, k: int, norms: Rows | None = None
) -> list[tuple[int, float]]:
    """Indices of the ``k`` rows most cosine-similar to ``query``, best first: the shipped
    search, which computes every row's norm again for each query (``norms`` unused)."""
    if matrix.shape[0] == 0 or k <= 0:
        return []
    length = float(np.linalg.norm(query)) or 1.0
    row_norms = np.linalg.norm(matrix, axis=1) * length
    scores = matrix @ query / np.where(row_norms == 0, 1.0, row_norms)
    return _top(scores, np.arange(matrix.shape[0]), k)


def search_ivf(
    matrix: Rows, query: Rows, k: int, norms: Rows | None = None
) -> list[tuple[int, float]]:
    """The ``k`` best of the rows in the ``NPROBE`` lists whose centroids are nearest."""
    n = matrix.shape[0]
    if norms is None:
        norms = np.linalg.norm(matrix, axis=1)
    if n <= 4 * NLIST or k <= 0:  # too few rows for an index to pay
        length = float(np.linalg.norm(query)) or 1.0
        scores = matrix @ query / np.where(norms == 0, 1.0, norms * length)
        return _top(scores, np.arange(n), k) if k > 0 and n else []
    centroids, lists, order, bounds = _index(matrix, norms)
    q = query / (float(np.linalg.norm(query)) or 1.0)
    probes = min(NPROBE, len(centroids))
    nearest = np.argpartition(-(centroids @ q), probes - 1)[:probes]
    # Each list is a contiguous block of unit rows: one small product per probed list.
    spans = [(bounds[c], bounds[c + 1]) for c in nearest]
    scores = np.concatenate([lists[a:b] @ q for a, b in spans])
    rows = np.concatenate([order[a:b] for a, b in spans])
    return _top(scores, rows, k)


search = search_exact


def _top(scores: Rows, rows: Any, k: int) -> list[tuple[int, float]]:
    k = min(k, scores.shape[0])
    top = np.argpartition(-scores, k - 1)[:k]
    top = top[np.argsort(-scores[top], kind="stable")]
    return [(int(rows[i]), float(scores[i])) for i in top]


def _index(matrix: Rows, norms: Rows) -> tuple[Rows, Rows, Any, Any]:
    """Centroids, the unit rows ordered by list, their row numbers, and where each list
    starts (built once per set of rows and parameters)."""
    key = (matrix.__array_interface__["data"][0], matrix.shape, NLIST, ITERS)
    if _INDEX.get("key") != key:
        unit = matrix / np.where(norms == 0, 1.0, norms)[:, None]
        nlist = min(NLIST, matrix.shape[0])
        rng = np.random.default_rng(0)
        centroids = unit[rng.choice(matrix.shape[0], nlist, replace=False)]
        for _ in range(ITERS):
            assign = np.argmax(unit @ centroids.T, axis=1)
            sums = np.zeros_like(centroids)
            np.add.at(sums, assign, unit)
            lengths = np.linalg.norm(sums, axis=1)
            moved = lengths > 0  # an empty list keeps its centroid
            centroids[moved] = sums[moved] / lengths[moved, None]
        assign = np.argmax(unit @ centroids.T, axis=1)
        order = np.argsort(assign, kind="stable")
        bounds = np.searchsorted(assign[order], np.arange(nlist + 1))
        _INDEX.update(key=key, value=(centroids, np.ascontiguousarray(unit[order]), order, bounds))
    return _INDEX["value"]  # type: ignore[no-any-return]
