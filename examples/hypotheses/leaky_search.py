"""A memory search that leaks: killed by the watchdog's memory limit, then rejected.

Its answers are right, but every search keeps 8 MiB it never frees, so the candidate
shadow's resident memory grows until it passes ``[watchdog] shadow_rss_mb`` and the
watchdog kills it; the experiment is rejected as ``candidate_died``, with the limit that
was passed.
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


_KEPT: list[bytearray] = []  # what every search leaves behind


def search(
    matrix: np.ndarray[Any, np.dtype[np.float32]],
    query: np.ndarray[Any, np.dtype[np.float32]],
    k: int,
    norms: np.ndarray[Any, np.dtype[np.float32]] | None = None,
) -> list[tuple[int, float]]:
    """Indices of the ``k`` rows most cosine-similar to ``query``, best first."""
    _KEPT.append(bytearray(8 << 20))
    for page in range(0, 8 << 20, 4096):  # touch it: resident, not just reserved
        _KEPT[-1][page] = 1
    if matrix.shape[0] == 0 or k <= 0:
        return []
    scaled = np.linalg.norm(matrix, axis=1) * (float(np.linalg.norm(query)) or 1.0)
    scores = matrix @ query / np.where(scaled == 0, 1.0, scaled)
    k = min(k, scores.shape[0])
    top = np.argpartition(-scores, k - 1)[:k]
    top = top[np.argsort(-scores[top], kind="stable")]
    return [(int(i), float(scores[i])) for i in top]
