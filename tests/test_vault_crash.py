"""Crash consistency of a checkpoint save: a forked child saving a checkpoint is killed with
``os._exit(9)`` right after each I/O step in turn; the store must then hold the old or the new
generation, whole, never a torn one."""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import diskcache

from osup_mp.storage.checkpoints.store import (
    CheckpointStore,
)

OpenStore = Callable[..., CheckpointStore]


def ids(store: CheckpointStore) -> list[str]:
    return [meta["id"] for meta in store.catalog()]


OLD_PAYLOAD = b"old generation " * 10
NEW_PAYLOAD = b"new generation " * 10
COUNTED_OS = ("open", "write", "fsync", "close", "rename", "unlink")
COUNTED_CACHE = ("set", "delete")
ESSENTIAL = [  # the steps the brief names, in order; other calls may come between them
    "os.open",  # tmp file opened
    "os.write",  # written
    "os.fsync",  # fsynced
    "os.close",  # closed
    "os.rename",  # renamed
    "os.open",  # directory opened ...
    "os.fsync",  # ... and fsynced
    "os.close",
    "Cache.set",  # cache row
    "Cache.delete",  # prune: the oldest generation's cache row ...
    "os.unlink",  # ... then its file (killed between: the file is pruned next time)
]


def install_step_hooks(on_step: Callable[[str], None]) -> list[tuple[Any, str, Any]]:
    """Wrap the I/O calls of save() so ``on_step(name)`` runs right after each one."""
    originals: list[tuple[Any, str, Any]] = []

    def wrap(owner: Any, attr: str, label: str) -> None:
        real = getattr(owner, attr)

        def call(*args: Any, **kwargs: Any) -> Any:
            result = real(*args, **kwargs)
            on_step(label)
            return result

        originals.append((owner, attr, real))
        setattr(owner, attr, call)

    for name in COUNTED_OS:
        wrap(os, name, f"os.{name}")
    for name in COUNTED_CACHE:
        wrap(diskcache.Cache, name, f"Cache.{name}")
    return originals


def seed(directory: Path) -> None:
    """Two generations (2 kept); the next save writes a third and prunes the first."""
    store = CheckpointStore(directory, 2)
    store.save("first", 1, b"first generation")
    store.save("old", 2, OLD_PAYLOAD)
    store.close()


def save_killed_after(directory: Path, k: int) -> int:
    """save() in a forked child that dies with os._exit(9) right after its k-th I/O step;
    returns the child's exit code (0: save() completed, 1: it raised)."""
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            store = CheckpointStore(directory, 2)
            steps = 0

            def on_step(label: str) -> None:
                nonlocal steps
                steps += 1
                if steps == k:
                    os._exit(9)

            install_step_hooks(on_step)
            store.save("new", 3, NEW_PAYLOAD)
            code = 0
        except BaseException:
            traceback.print_exc(file=sys.stderr)
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def is_subsequence(wanted: list[str], seen: list[str]) -> bool:
    it = iter(seen)
    return all(step in it for step in wanted)


def test_kill_9_after_every_step_of_save_leaves_old_or_new(tmp_path: Path) -> None:
    # A dry run in this process records every step save() takes.
    dry = tmp_path / "dry"
    seed(dry)
    steps: list[str] = []
    store = CheckpointStore(dry, 2)
    originals = install_step_hooks(steps.append)
    try:
        store.save("new", 3, NEW_PAYLOAD)
    finally:
        for owner, attr, real in originals:
            setattr(owner, attr, real)
        store.close()
    assert is_subsequence(ESSENTIAL, steps), steps
    renamed_at = steps.index("os.rename") + 1
    cached_at = steps.index("Cache.set") + 1

    for k in range(1, len(steps) + 1):
        where = f"killed after step {k} ({steps[k - 1]}) of {steps}"
        directory = tmp_path / f"kill{k}"
        seed(directory)
        assert save_killed_after(directory, k) == 9, where
        leftovers = list((directory / "files").glob(".*.tmp"))
        assert bool(leftovers) == (k < renamed_at), where

        fresh = CheckpointStore(directory, 2)
        try:
            assert list((directory / "files").glob(".*.tmp")) == [], where
            checkpoint, problems = fresh.latest()
            assert checkpoint is not None, where
            if k < renamed_at:
                assert (checkpoint.id, checkpoint.lsn) == ("old", 2), where
                assert checkpoint.payload == OLD_PAYLOAD, where
                assert problems == [], where
            else:
                assert (checkpoint.id, checkpoint.lsn) == ("new", 3), where
                assert checkpoint.payload == NEW_PAYLOAD, where
                path = directory / "files" / "new.ckpt"
                expect = (
                    []
                    if k >= cached_at
                    else ["new: not in the cache", f"cache row new repaired from {path}"]
                )
                assert problems == expect, where
            for meta in fresh.catalog():  # whatever is listed loads in full
                loaded, _ = fresh.load(meta["id"])
                assert loaded.lsn == meta["lsn"], where
            # The store keeps working: the next save prunes down to 2 generations.
            fresh.save("next", 4, b"next")
            assert ids(fresh)[-1] == "next" and len(ids(fresh)) == 2, where
        finally:
            fresh.close()

    # Not killed at all: the save completes (the hooks count past the last step).
    directory = tmp_path / "complete"
    seed(directory)
    assert save_killed_after(directory, len(steps) + 1) == 0


# ------------------------------------------------------------ corruption, fallbacks
