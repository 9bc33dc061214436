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

import sys
import time
import types
import uuid
from collections.abc import Mapping
from typing import Any

import numpy as np

from osup_mp.agent.reference import memory_system
from osup_mp.agent.sdk import Agent, AgentOptions, RequestError, run_agent

_MUTATING = frozenset({"memory_add", "memory_delete", "tool_register"})


class MemoryAgent(Agent):
    default_reload_module = "memory_system"

    def __init__(self, options: AgentOptions | None = None) -> None:
        super().__init__(options)
        self.modules["memory_system"] = memory_system
        self.blocks: dict[str, dict[str, Any]] = {}
        self.tools: dict[str, dict[str, Any]] = {}
        self.started = time.time()
        self.operations = 0
        self._matrix: np.ndarray[Any, np.dtype[np.float32]] | None = None
        self._order: list[str] = []
        self._dirty = True
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
        matrix = self._current_matrix()
        hits = self.call_module("memory_system", "search", matrix, query, k)
        return [
            {"id": self._order[i], "score": score, "text": self.blocks[self._order[i]]["text"]}
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
        vec = (
            _vector(embedding)
            if embedding is not None
            else self.call_module("memory_system", "embed", text)
        )
        self.blocks[block_id] = {
            "id": block_id,
            "text": text,
            "embedding": vec,
            "metadata": dict(metadata),
        }
        self.operations += 1
        self._dirty = True

    def _apply_delete(self, block_id: str) -> bool:
        self.operations += 1
        removed = self.blocks.pop(block_id, None) is not None
        self._dirty = self._dirty or removed
        return removed

    def _current_matrix(self) -> np.ndarray[Any, np.dtype[np.float32]]:
        if self._dirty or self._matrix is None:
            self._order = list(self.blocks)
            dim = memory_system.DIM
            vectors = [self.blocks[i]["embedding"] for i in self._order]
            self._matrix = (
                np.vstack(vectors).astype(np.float32)
                if vectors
                else np.zeros((0, dim), dtype=np.float32)
            )
            self._dirty = False
        return self._matrix

    def after_batch(self) -> None:
        """The main agent publishes its embedding matrix once per batch that changed it."""
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
        self.shm.publish(self._current_matrix())
        self._slot["state_overflow"] = 0

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
        if snapshot:
            for block in snapshot.get("memory_blocks") or []:
                self._apply_add(
                    block["id"], block["text"], block["embedding"], block.get("metadata") or {}
                )
            self.tools.update(snapshot.get("tool_registry") or {})
            self.operations = int((snapshot.get("agent_state") or {}).get("operations", 0))
        self._dirty = True

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
