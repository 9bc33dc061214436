"""The memory vault component: save, list, load, delete checkpoints.

Snapshots arrive from agent managers already packed with MessagePack (the manager checks
that a restore frame can carry them) and are stored as they are by
:class:`~osup_mp.storage.checkpoints.store.CheckpointStore` (diskcache + checksummed file);
a restore gets those bytes back unopened, so a large state is never decoded and re-encoded on
its way. After a save is
durable, WAL segments wholly covered by the oldest checkpoint still kept are released:
nothing is deleted that a restore could still need.
"""

from __future__ import annotations

import uuid
from typing import Any

import msgpack
from loguru import logger

from osup_mp.components.messages import (
    DeleteCheckpoint,
    LatestCheckpoint,
    ListCheckpoints,
    LoadCheckpoint,
    SaveCheckpoint,
    ShowCheckpoint,
    TruncateThrough,
)
from osup_mp.config import Config
from osup_mp.runtime.calls import CallError
from osup_mp.runtime.component import Caller, Component, on_call
from osup_mp.storage.checkpoints.store import ID_PATTERN, CheckpointStore, VaultError
from osup_mp.wire import FrameError, unpack_payload


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

    @property
    def _store(self) -> CheckpointStore:
        assert self.store is not None, "used before init"
        return self.store

    def handle_call(self, request: Any, caller: Caller) -> Any:
        try:
            return super().handle_call(request, caller)
        except VaultError as exc:
            raise CallError(str(exc)) from exc

    @on_call(SaveCheckpoint)
    def _on_save(self, request: SaveCheckpoint, caller: Caller) -> dict[str, Any]:
        return self._save(self._store, request.snapshot, request.lsn)

    @on_call(LatestCheckpoint)
    def _on_latest(self, request: LatestCheckpoint, caller: Caller) -> dict[str, Any] | None:
        checkpoint, problems = self._store.latest()
        for problem in problems:
            logger.error("vault: {}", problem)  # a copy skipped or repaired
        return None if checkpoint is None else self._loaded(checkpoint, request.raw)

    @on_call(LoadCheckpoint)
    def _on_load(self, request: LoadCheckpoint, caller: Caller) -> dict[str, Any]:
        return self._loaded(self._load(request.id), request.raw)

    @on_call(ShowCheckpoint)
    def _on_show(self, request: ShowCheckpoint, caller: Caller) -> dict[str, Any]:
        return self._shown(self._load(request.id))

    @on_call(ListCheckpoints)
    def _on_list(self, request: ListCheckpoints, caller: Caller) -> Any:
        return self._store.catalog()

    @on_call(DeleteCheckpoint)
    def _on_delete(self, request: DeleteCheckpoint, caller: Caller) -> Any:
        _check_id(request.id)
        return self._store.delete(request.id)

    def _load(self, checkpoint_id: str) -> Any:
        _check_id(checkpoint_id)
        checkpoint, problems = self._store.load(checkpoint_id)
        for problem in problems:
            logger.warning("vault: {}", problem)
        return checkpoint

    def _save(self, store: CheckpointStore, snapshot: Any, lsn: int) -> dict[str, Any]:
        checkpoint_id = str(uuid.uuid4())
        payload = (
            snapshot if isinstance(snapshot, bytes) else msgpack.packb(snapshot, use_bin_type=True)
        )
        checkpoint = store.save(checkpoint_id, lsn, payload)
        logger.info(
            "vault: checkpoint {} saved (LSN {}, {} bytes)", checkpoint_id, lsn, len(payload)
        )
        oldest = store.oldest_kept_lsn()
        if oldest is not None:
            self.peer("wal").cast(TruncateThrough(oldest))
        return checkpoint.meta()

    def _shown(self, checkpoint: Any) -> dict[str, Any]:
        """For ``checkpoint show``: the metadata, a summary of each top-level key, and the
        snapshot itself only when the reply fits the control socket's frame limit."""
        loaded = self._loaded(checkpoint, raw=False)
        snapshot = loaded.pop("snapshot")
        summary = {}
        if isinstance(snapshot, dict):
            for key, value in snapshot.items():
                size = len(value) if isinstance(value, list | dict | bytes | str) else None
                summary[str(key)] = {"type": type(value).__name__, "size": size}
        # Room for the metadata (~1 KiB) and the summary (a few dozen bytes per key).
        overhead = 4096 + 128 * len(summary)
        fits = len(checkpoint.payload) + overhead <= self.cfg.control.max_frame
        return {
            **loaded,
            "summary": summary,
            "snapshot_bytes": len(checkpoint.payload),
            "snapshot": snapshot if fits else None,
            **(
                {}
                if fits
                else {
                    "snapshot_omitted": (
                        f"{len(checkpoint.payload)} bytes do not fit a control reply "
                        f"([control] max_frame {self.cfg.control.max_frame}); the file is "
                        f"{self.cfg.o_supervisor.checkpoint_dir / 'files' / checkpoint.id}.ckpt"
                    )
                }
            ),
        }

    @staticmethod
    def _loaded(checkpoint: Any, raw: bool = False) -> dict[str, Any]:
        if raw:
            return {**checkpoint.meta(), "payload": checkpoint.payload}
        try:
            snapshot = unpack_payload(checkpoint.payload, max_frame=1 << 31)
        except FrameError as exc:
            raise CallError(f"checkpoint {checkpoint.id}: undecodable snapshot: {exc}") from exc
        return {**checkpoint.meta(), "snapshot": snapshot}


def _check_id(checkpoint_id: str) -> None:
    if not ID_PATTERN.fullmatch(checkpoint_id):
        raise CallError(f"{checkpoint_id!r} is not a checkpoint id")
