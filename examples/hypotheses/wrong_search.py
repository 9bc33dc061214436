"""A fast but wrong memory search: vetoed because its answers differ from the main's.

It ranks by the raw dot product, skipping the normalisation: faster, but a long memory
(many words, a large unnormalised row) outranks a closer short one, and the scores are not
cosines. The experiment rejects it on the mismatches however fast it is.
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
    """Indices of the ``k`` rows with the largest dot product with ``query``."""
    if matrix.shape[0] == 0 or k <= 0:
        return []
    scores = (matrix @ query) * 0.5  # not a cosine: every score differs from the main's
    k = min(k, scores.shape[0])
    top = np.argpartition(-scores, k - 1)[:k]
    top = top[np.argsort(-scores[top], kind="stable")]
    return [(int(i), float(scores[i])) for i in top]
