"""A faster memory search, with the same answers: promoted.

The shipped search recomputes the norm of every row on each query: about nine tenths of a
search at 50,000 blocks, where a search takes 7.9 ms on a 2-core machine. The agent keeps
each row's norm as the row is added and passes them to a ``search`` that accepts
``norms``; this one uses them, so a search is a matrix-vector product and a top-k (0.66 ms
at 50,000 blocks, 12x faster). The norms are the ones ``np.linalg.norm(matrix, axis=1)``
gives, bit for bit, so every score and every answer is identical.
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
    norms: np.ndarray[Any, np.dtype[np.float32]] | None = None,
) -> list[tuple[int, float]]:
    """Indices of the ``k`` rows most cosine-similar to ``query``, best first."""
    if matrix.shape[0] == 0 or k <= 0:
        return []
    if norms is None:  # an agent that keeps no norms: compute them as the shipped code does
        norms = np.linalg.norm(matrix, axis=1)
    scaled = norms * (float(np.linalg.norm(query)) or 1.0)
    scores = matrix @ query / np.where(scaled == 0, 1.0, scaled)
    k = min(k, scores.shape[0])
    top = np.argpartition(-scores, k - 1)[:k]
    top = top[np.argsort(-scores[top], kind="stable")]
    return [(int(i), float(scores[i])) for i in top]
