"""The reference agent's embedding matrix: one row per memory block, grown in place.

Rows live in a buffer with spare capacity (doubled when full), so adding a block costs one
row copy, amortized, however many blocks there are; the matrix handed to search is a view
of the rows in use. Adds are queued and applied when the matrix is next needed, so a batch
of adds costs one copy of its rows. Replacing or deleting a block rebuilds the matrix from
every block (rare). Each row's norm is kept beside it, computed once when the row is
added (a search that recomputes every norm spends most of its time there). The one
decision: the matrix also remembers how many of its leading rows are unchanged since it was
last published to shared memory, so that a publish copies what was added, not the whole
state.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

Rows = np.ndarray[Any, np.dtype[np.float32]]


class EmbeddingMatrix:
    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.order: list[str] = []  # the block id of each row in use
        self._buf: Rows = np.zeros((0, dim), dtype=np.float32)
        self._norms: Rows = np.zeros(0, dtype=np.float32)
        self._used = 0
        self._dirty = False  # rebuild from every block before the next use
        self._tail_ids: list[str] = []
        self._tail: list[Rows] = []
        self._published = 0  # leading rows unchanged since the last publish

    def reset(self) -> None:
        """No blocks at all."""
        self.order, self._used, self._dirty, self._published = [], 0, False, 0
        self._tail_ids.clear()
        self._tail.clear()

    def append(self, ids: list[str], rows: Rows) -> None:
        """New blocks ``ids`` (not in the matrix yet), with their embeddings as rows."""
        if not self._dirty:
            self._tail_ids += ids
            self._tail.append(rows.reshape(-1, self.dim))

    def invalidate(self) -> None:
        """A block was replaced or removed: rebuild from every block before the next use."""
        self._dirty = True
        self._tail_ids.clear()
        self._tail.clear()

    def current(self, blocks: Mapping[str, Mapping[str, Any]]) -> Rows:
        """The rows in use (a view), in ``order``."""
        if self._dirty:
            self.order = list(blocks)
            vectors = [blocks[i]["embedding"] for i in self.order]
            self._used = 0
            self._published = 0  # every row may have moved
            self._dirty = False
            if vectors:
                self._add_rows(np.vstack(vectors).astype(np.float32, copy=False))
        if self._tail:
            rows = self._tail[0] if len(self._tail) == 1 else np.concatenate(self._tail)
            self.order += self._tail_ids
            self._tail_ids.clear()
            self._tail.clear()
            self._add_rows(rows)
        return self._buf[: self._used]

    def norms(self) -> Rows:
        """The L2 norm of each row of :meth:`current` (call that first), as
        ``np.linalg.norm(rows, axis=1)`` gives it, bit for bit."""
        return self._norms[: self._used]

    def _add_rows(self, rows: Rows) -> None:
        need = self._used + len(rows)
        if need > len(self._buf):
            grown = np.empty((max(need, 2 * len(self._buf), 64), self.dim), dtype=np.float32)
            grown[: self._used] = self._buf[: self._used]
            norms = np.empty(len(grown), dtype=np.float32)
            norms[: self._used] = self._norms[: self._used]
            self._buf, self._norms = grown, norms
        self._buf[self._used : need] = rows
        self._norms[self._used : need] = np.linalg.norm(rows, axis=1)
        self._used = need

    def publish_to(self, shm: Any, blocks: Mapping[str, Mapping[str, Any]]) -> None:
        """Publish the current rows to ``shm``, copying only what changed since last time."""
        matrix = self.current(blocks)
        shm.publish(matrix, unchanged_rows=min(self._published, len(matrix)))
        self._published = len(matrix)
