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

from osup_mp.config import Config
from osup_mp.runtime.calls import CallError
from osup_mp.runtime.component import Caller, Component
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

    def handle_call(self, request: Any, caller: Caller) -> Any:
        kind = request[0] if isinstance(request, tuple) and request else request
        store = self.store
        assert store is not None
        try:
            if kind == "save":  # ("save", snapshot map or its MessagePack bytes, lsn)
                return self._save(store, request[1], int(request[2]))
            if kind == "latest":  # ("latest"[, raw]): raw answers the payload bytes unopened
                checkpoint, problems = store.latest()
                for problem in problems:
                    logger.error("vault: {}", problem)  # a copy skipped or repaired
                raw = len(request) > 1 and bool(request[1])
                return None if checkpoint is None else self._loaded(checkpoint, raw)
            if kind in ("load", "delete", "show") and not ID_PATTERN.fullmatch(str(request[1])):
                raise CallError(f"{request[1]!r} is not a checkpoint id")
            if kind == "load":  # ("load", id[, raw])
                checkpoint, problems = store.load(str(request[1]))
                for problem in problems:
                    logger.warning("vault: {}", problem)
                return self._loaded(checkpoint, len(request) > 2 and bool(request[2]))
            if kind == "show":
                checkpoint, problems = store.load(str(request[1]))
                for problem in problems:
                    logger.warning("vault: {}", problem)
                return self._shown(checkpoint)
            if kind == "list":
                return store.catalog()
            if kind == "delete":
                return store.delete(str(request[1]))
        except VaultError as exc:
            raise CallError(str(exc)) from exc
        return super().handle_call(request, caller)

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
            self.peer("wal").cast(("truncate_through", oldest))
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
