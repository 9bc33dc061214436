"""The memory vault component (the seed's MemoryVault): save, list, load, delete checkpoints.

Snapshots arrive from agent managers as maps, are packed with MessagePack and stored by
:class:`~osup_mp.vault.CheckpointStore` (diskcache + checksummed file). After a save is
durable, WAL segments wholly covered by the oldest checkpoint still kept are released:
nothing is deleted that a restore could still need.
"""

from __future__ import annotations

import uuid
from typing import Any

import msgpack
from loguru import logger

from osup_mp.codec import FrameError, unpack_payload
from osup_mp.config import Config
from osup_mp.runtime.calls import CallError
from osup_mp.runtime.component import Caller, Component
from osup_mp.vault import ID_PATTERN, CheckpointStore, VaultError


class MemoryVault(Component):
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.store: CheckpointStore | None = None

    def init(self) -> None:
        self.store = CheckpointStore(
            self.cfg.o_supervisor.checkpoint_dir, self.cfg.vault.generations
        )

    def terminate(self, reason: str) -> None:
        if self.store is not None:
            self.store.close()

    def handle_call(self, request: Any, caller: Caller) -> Any:
        kind = request[0] if isinstance(request, tuple) and request else request
        store = self.store
        assert store is not None
        try:
            if kind == "save":  # ("save", snapshot, lsn)
                return self._save(store, request[1], int(request[2]))
            if kind == "latest":
                checkpoint, problems = store.latest()
                for problem in problems:
                    logger.error("vault: skipped a checkpoint: {}", problem)
                return None if checkpoint is None else self._loaded(checkpoint)
            if kind in ("load", "delete") and not ID_PATTERN.fullmatch(str(request[1])):
                raise CallError(f"{request[1]!r} is not a checkpoint id")
            if kind == "load":
                checkpoint, problems = store.load(str(request[1]))
                for problem in problems:
                    logger.warning("vault: {}", problem)
                return self._loaded(checkpoint)
            if kind == "list":
                return store.catalog()
            if kind == "delete":
                return store.delete(str(request[1]))
        except VaultError as exc:
            raise CallError(str(exc)) from exc
        return super().handle_call(request, caller)

    def _save(self, store: CheckpointStore, snapshot: Any, lsn: int) -> dict[str, Any]:
        checkpoint_id = str(uuid.uuid4())
        payload = msgpack.packb(snapshot, use_bin_type=True)
        checkpoint = store.save(checkpoint_id, lsn, payload)
        logger.info(
            "vault: checkpoint {} saved (LSN {}, {} bytes)", checkpoint_id, lsn, len(payload)
        )
        oldest = store.oldest_kept_lsn()
        if oldest is not None:
            self.peer("wal").cast(("truncate_through", oldest))
        return checkpoint.meta()

    @staticmethod
    def _loaded(checkpoint: Any) -> dict[str, Any]:
        try:
            snapshot = unpack_payload(checkpoint.payload, max_frame=1 << 31)
        except FrameError as exc:
            raise CallError(f"checkpoint {checkpoint.id}: undecodable snapshot: {exc}") from exc
        return {**checkpoint.meta(), "snapshot": snapshot}
