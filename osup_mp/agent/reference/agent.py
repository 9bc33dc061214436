"""The reference agent: a memory agent after the seed's ``memory_system``.

It is the default ``gerbil_executable`` (console script ``osup-mp-agent``), so a tree runs
with nothing else installed. State: memory blocks (text + float32 embedding + metadata) and a
tool registry. Requests are maps with an ``op``:

* ``memory_add {text, embedding?, metadata?, id?}`` → ``{id}``
* ``memory_get {id}`` → the block; ``memory_delete {id}`` → ``{deleted}``
* ``memory_search {query | embedding, k}`` → ``[{id, score, text}]`` (top-k cosine)
* ``tool_register {name, description?, schema?}``, ``tool_list``, ``stats``

Every state change is logged with ``wal_entry`` before it is answered, checkpoints carry the
seed's fields (agent_state, memory_blocks, tool_registry), and the main agent publishes its
embedding matrix to the shared-memory state region once per batch, where shadows read it
zero-copy. The search itself lives in the hot-reloadable :mod:`.memory_system`.
"""

from __future__ import annotations

import itertools
import sys
import time
import types
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from osup_mp.agent.reference import memory_system
from osup_mp.agent.reference.matrix import EmbeddingMatrix
from osup_mp.agent.sdk import Agent, AgentOptions, RequestError, accepted_keywords, run_agent

_MUTATING = frozenset({"memory_add", "memory_delete", "tool_register"})
_VECTOR_BYTES = memory_system.DIM * 4  # an embedding as logged: float32 bytes
_BLOCK_KEYS = frozenset({"id", "text", "embedding", "metadata"})


class MemoryAgent(Agent):
    default_reload_module = "memory_system"
    read_only_ops = frozenset({"memory_get", "memory_search", "tool_list", "stats"})

    def __init__(self, options: AgentOptions | None = None) -> None:
        super().__init__(options)
        self.modules["memory_system"] = memory_system
        self.blocks: dict[str, dict[str, Any]] = {}
        self.tools: dict[str, dict[str, Any]] = {}
        self.started = time.time()
        self.operations = 0
        self.matrix = EmbeddingMatrix(memory_system.DIM)
        self.shared_rows = 0
        self._published_at = -1  # operations count of the last published state

    # -- requests ----------------------------------------------------------------------------

    def handle_request(self, data: Any) -> Any:
        if not isinstance(data, Mapping) or not isinstance(data.get("op"), str):
            raise RequestError("a request is a map with an 'op' string")
        op = data["op"]
        handler = getattr(self, f"op_{op}", None)
        if handler is None:
            raise RequestError(f"unknown op {op!r}")
        result = handler(data)
        if op in _MUTATING:
            params = {k: v for k, v in data.items() if k != "op"} | _ids(result)
            if op == "memory_add":  # log the embedding too: replay must not recompute it
                params["embedding"] = self.blocks[result["id"]]["embedding"].tobytes()
            self.wal(op, params)
        return result

    def op_memory_add(self, data: Mapping[str, Any]) -> dict[str, Any]:
        text = data.get("text")
        if not isinstance(text, str):
            raise RequestError("memory_add needs 'text'")
        block_id = str(data.get("id") or uuid.uuid4())
        self._apply_add(block_id, text, data.get("embedding"), data.get("metadata") or {})
        return {"id": block_id}

    def op_memory_get(self, data: Mapping[str, Any]) -> dict[str, Any]:
        block = self.blocks.get(str(data.get("id")))
        if block is None:
            raise RequestError(f"no memory block {data.get('id')!r}")
        return _public(block)

    def op_memory_delete(self, data: Mapping[str, Any]) -> dict[str, Any]:
        return {"deleted": self._apply_delete(str(data.get("id")))}

    def op_memory_search(self, data: Mapping[str, Any]) -> list[dict[str, Any]]:
        k = int(data.get("k", 5))
        if "embedding" in data:
            query = _vector(data["embedding"])
        elif isinstance(data.get("query"), str):
            query = self.call_module("memory_system", "embed", data["query"])
        else:
            raise RequestError("memory_search needs 'query' text or an 'embedding'")
        matrix = self.matrix.current(self.blocks)
        if _takes_norms(self.modules["memory_system"]):
            norms = self.matrix.norms()
            hits = self.call_module("memory_system", "search", matrix, query, k, norms=norms)
        else:
            hits = self.call_module("memory_system", "search", matrix, query, k)
        order = self.matrix.order
        return [
            {"id": order[i], "score": score, "text": self.blocks[order[i]]["text"]}
            for i, score in hits
        ]

    def op_tool_register(self, data: Mapping[str, Any]) -> dict[str, Any]:
        name = data.get("name")
        if not isinstance(name, str) or not name:
            raise RequestError("tool_register needs 'name'")
        self.tools[name] = {
            "name": name,
            "description": data.get("description", ""),
            "schema": data.get("schema") or {},
        }
        return {"registered": name}

    def op_tool_list(self, data: Mapping[str, Any]) -> list[dict[str, Any]]:
        return sorted(self.tools.values(), key=lambda t: t["name"])

    def op_stats(self, data: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "role": self.options.role,
            "blocks": len(self.blocks),
            "tools": len(self.tools),
            "operations": self.operations,
            "uptime_s": time.time() - self.started,
            "checkpoint_id": self.checkpoint_id,
            "shared_rows": self.shared_rows,
        }

    # -- state -------------------------------------------------------------------------------

    def _apply_add(self, block_id: str, text: str, embedding: Any, metadata: Any) -> None:
        vec = self._embedding(text, embedding)
        replaced = block_id in self.blocks
        self.blocks[block_id] = {
            "id": block_id,
            "text": text,
            "embedding": vec,
            "metadata": dict(metadata),
        }
        self.operations += 1
        if replaced:
            self.matrix.invalidate()
        else:
            self.matrix.append([block_id], vec)

    def _add_many(self, adds: Iterable[tuple[str, str, Any, Any]]) -> None:
        """``_apply_add`` for each ``(id, text, embedding, metadata)``, in order, with one
        array holding every embedding: rows of it, not an array each."""
        blocks = self.blocks
        added: list[dict[str, Any]] = []
        raws: list[bytes] = []
        new_ids: list[str] = []
        replaced = False
        try:
            for block_id, text, embedding, metadata in adds:
                raw = embedding
                if type(raw) is not bytes or len(raw) != _VECTOR_BYTES:
                    raw = self._embedding(text, raw).tobytes()
                block = {
                    "id": block_id,
                    "text": text,
                    "embedding": None,
                    "metadata": dict(metadata),
                }
                if block_id in blocks:
                    replaced = True
                else:
                    new_ids.append(block_id)
                blocks[block_id] = block
                added.append(block)
                raws.append(raw)
        finally:  # also when an entry raised: the blocks before it get their embeddings
            self._added(added, raws, new_ids, replaced)

    def _replay_adds(self, entries: Sequence[Mapping[str, Any]], i: int) -> int:
        """Apply the run of ``memory_add`` entries from ``entries[i]`` on (``_add_many``
        unrolled: this is the restore's inner loop); return where the run ends."""
        blocks = self.blocks
        added: list[dict[str, Any]] = []
        raws: list[bytes] = []
        new_ids: list[str] = []
        replaced = False
        try:
            for entry in itertools.islice(entries, i, None):
                if entry.get("operation") != "memory_add":
                    break
                params = entry.get("params") or {}
                block_id, text = params["id"], params["text"]
                raw = params.get("embedding")
                if type(raw) is not bytes or len(raw) != _VECTOR_BYTES:
                    raw = self._embedding(text, raw).tobytes()
                metadata = params.get("metadata")
                if type(params) is dict and params.keys() <= _BLOCK_KEYS:
                    # The decoded params map becomes the block (no copy per entry): the
                    # entries are the restore frame's, dropped once the batch is applied.
                    block = params
                    block["metadata"] = dict(metadata) if metadata else {}
                else:
                    block = {
                        "id": block_id,
                        "text": text,
                        "embedding": None,
                        "metadata": dict(metadata) if metadata else {},
                    }
                if block_id in blocks:
                    replaced = True
                else:
                    new_ids.append(block_id)
                blocks[block_id] = block
                added.append(block)
                raws.append(raw)
        finally:
            self._added(added, raws, new_ids, replaced)
        return i + len(added)

    def _added(
        self,
        added: list[dict[str, Any]],
        raws: list[bytes],
        new_ids: list[str],
        replaced: bool,
    ) -> None:
        """Blocks were added (``new_ids`` new, in order, unless one ``replaced`` another):
        give each its row of one array built from ``raws``, and count the operations."""
        if not added:
            return
        self.operations += len(added)
        rows = np.frombuffer(b"".join(raws), dtype=np.float32).reshape(-1, memory_system.DIM)
        rows = rows.copy()  # writable, as every other embedding is
        for block, row in zip(added, rows, strict=True):
            block["embedding"] = row
        if replaced:  # a replaced block keeps its place: the matrix is rebuilt
            self.matrix.invalidate()
        else:
            self.matrix.append(new_ids, rows)

    def _embedding(self, text: str, raw: Any) -> np.ndarray[Any, np.dtype[np.float32]]:
        if raw is not None:
            return _vector(raw)
        vec: np.ndarray[Any, np.dtype[np.float32]] = self.call_module(
            "memory_system", "embed", text
        )
        return vec

    def _apply_delete(self, block_id: str) -> bool:
        self.operations += 1
        removed = self.blocks.pop(block_id, None) is not None
        if removed:
            self.matrix.invalidate()
        return removed

    def after_batch(self) -> None:
        """The main agent publishes its embedding matrix once per batch that changed it; a
        standby keeps its matrix built (a promotion must not wait for that)."""
        if self.options.role == "standby":
            if self.ready and self._published_at != self.operations:
                self._published_at = self.operations
                self._warm()
            return
        if self.shm is None or self.options.role != "main" or not self.ready:
            return  # not during a restore: the restored state is published once, at the end
        if self._published_at == self.operations:
            return
        self._published_at = self.operations
        needed = len(self.blocks) * memory_system.DIM * 4
        if needed > self.shm.capacity:  # report it without building a matrix that cannot fit
            if not self._slot["state_overflow"]:
                self.log(
                    f"shared state not published: {needed} bytes do not fit the "
                    f"{self.shm.capacity}-byte region (raise shared_memory_size)"
                )
            self._slot["state_overflow"] = needed
            return
        self.matrix.publish_to(self.shm, self.blocks)
        self._slot["state_overflow"] = 0

    def _warm(self) -> None:
        """One search, answered to no one: builds the matrix and runs every code path a
        first request would (imports, BLAS), so that the first answer after a promotion
        costs what any answer costs."""
        self.op_memory_search({"query": "warm-up", "k": 1})

    def on_promote(self) -> None:
        self._published_at = -1  # publish the state as the main does, after this batch

    def on_start(self) -> None:
        if self.shm is not None and self.options.role != "main":
            # Shadows start from the main agent's published state, zero-copy.
            self.shared_rows = int(self.shm.read(copy=False).matrix.shape[0])

    def validate_module(self, name: str, module: types.ModuleType) -> None:
        probe = module.embed("hot reload self test")
        if np.asarray(probe).shape != (memory_system.DIM,):
            raise ValueError(f"embed() must return a vector of {memory_system.DIM} floats")
        hits = module.search(np.eye(3, memory_system.DIM, dtype=np.float32), np.asarray(probe), 2)
        if len(hits) != 2:
            raise ValueError("search() must return k (index, score) pairs")

    # -- checkpoint / restore ----------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return {
            "agent_state": {"operations": self.operations, "started": self.started},
            "memory_blocks": [
                {**_public(b), "embedding": b["embedding"].astype(np.float32).tobytes()}
                for b in self.blocks.values()
            ],
            "tool_registry": dict(self.tools),
        }

    def restore(self, snapshot: Mapping[str, Any] | None) -> None:
        self.blocks.clear()
        self.tools.clear()
        self.operations = 0
        self.matrix.reset()
        if snapshot:
            self._add_many(
                (block["id"], block["text"], block["embedding"], block.get("metadata") or {})
                for block in snapshot.get("memory_blocks") or []
            )
            self.tools.update(snapshot.get("tool_registry") or {})
            self.operations = int((snapshot.get("agent_state") or {}).get("operations", 0))

    def apply_wal(self, entry: Mapping[str, Any]) -> None:
        op, params = entry.get("operation"), entry.get("params") or {}
        if op == "memory_add":
            self._apply_add(
                params["id"], params["text"], params.get("embedding"), params.get("metadata") or {}
            )
        elif op == "memory_delete":
            self._apply_delete(str(params.get("id")))
        elif op == "tool_register":
            self.op_tool_register(params)

    def apply_wal_batch(self, entries: Sequence[Mapping[str, Any]]) -> None:
        """The entries in order, each run of ``memory_add`` entries in bulk (one array for
        its embeddings; the matrix is extended once, when it is next needed). Takes the
        entries over: their ``params`` maps may become blocks."""
        i, n = 0, len(entries)
        while i < n:
            if entries[i].get("operation") == "memory_add":
                i = self._replay_adds(entries, i)
            else:
                self.apply_wal(entries[i])
                i += 1


def _vector(raw: Any) -> np.ndarray[Any, np.dtype[np.float32]]:
    if isinstance(raw, bytes | bytearray):
        vec = np.frombuffer(raw, dtype=np.float32).copy()
    else:
        vec = np.asarray(raw, dtype=np.float32)
    if vec.shape != (memory_system.DIM,):
        raise RequestError(f"an embedding is {memory_system.DIM} float32 values")
    return vec


def _public(block: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": block["id"],
        "text": block["text"],
        "metadata": block["metadata"],
        "embedding": block["embedding"].tolist(),
    }


def _ids(result: Any) -> dict[str, Any]:
    return {"id": result["id"]} if isinstance(result, Mapping) and "id" in result else {}


def main(argv: list[str] | None = None) -> int:
    return run_agent(MemoryAgent, argv if argv is not None else sys.argv[1:])


def _takes_norms(module: types.ModuleType) -> bool:
    """Whether this ``memory_system``'s ``search`` accepts the rows' norms (``norms=``):
    the agent keeps them, and a search that uses them need not recompute them per query."""
    return "norms" in accepted_keywords(getattr(module, "search", None))
