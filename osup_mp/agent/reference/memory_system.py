"""The reference agent's memory search: embeddings and top-k cosine ranking.

This module is what evolution changes: the agent hot-reloads it by name
(``hot_reload`` with ``module = "memory_system"``). A replacement must define the same two
functions; the agent's self-test checks them before swapping. ``search`` may also take
``norms`` (a keyword): the agent then passes each row's L2 norm, which it keeps as rows are
added, so that a search need not recompute them (this one does, on every query: the room
``examples/hypotheses/faster_search.py`` uses).
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

DIM = 64


def embed(text: str, dim: int = DIM) -> np.ndarray[Any, np.dtype[np.float32]]:
    """A deterministic bag-of-words embedding (hashing trick), L2-normalised."""
    vec = np.zeros(dim, dtype=np.float32)
    for token in text.lower().split():
        digest = hashlib.blake2b(token.encode(), digest_size=8).digest()
        h = int.from_bytes(digest, "little")
        vec[h % dim] += 1.0 if (h >> 32) & 1 else -1.0
    norm = float(np.linalg.norm(vec))
    return vec / norm if norm else vec


def search(
    matrix: np.ndarray[Any, np.dtype[np.float32]],
    query: np.ndarray[Any, np.dtype[np.float32]],
    k: int,
) -> list[tuple[int, float]]:
    """Indices of the ``k`` rows most cosine-similar to ``query``, best first."""
    if matrix.shape[0] == 0 or k <= 0:
        return []
    norms = np.linalg.norm(matrix, axis=1) * (float(np.linalg.norm(query)) or 1.0)
    scores = matrix @ query / np.where(norms == 0, 1.0, norms)
    k = min(k, scores.shape[0])
    top = np.argpartition(-scores, k - 1)[:k]
    top = top[np.argsort(-scores[top], kind="stable")]
    return [(int(i), float(scores[i])) for i in top]
