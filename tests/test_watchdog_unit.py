"""The watchdog's scan on a real segment, without a tree: a shadow's autogroup is niced
until the kernel takes it (it may ask to try again), and only once per agent generation."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import posix_ipc
import pytest

from osup_mp.components import watchdog
from osup_mp.config import load_config
from osup_mp.storage.shm.segment import Role, SharedState, SlotState

pytestmark = pytest.mark.unit  # no process started


@pytest.fixture
def shm(tag: str) -> Iterator[SharedState]:
    name = f"/osup_test_{tag}"
    state, _note = SharedState.create(name, 1 << 20)
    try:
        yield state
    finally:
        state.close()
        with contextlib.suppress(posix_ipc.ExistentialError):  # gone with its creator's close
            posix_ipc.unlink_shared_memory(name)


def test_a_shadows_autogroup_is_niced_until_the_kernel_takes_it(
    shm: SharedState, monkeypatch: pytest.MonkeyPatch
) -> None:
    answers = iter([False, True, True])  # "try again" (EAGAIN), then done
    calls: list[tuple[int, int]] = []

    def lower(pid: int, nice: int) -> bool:
        calls.append((pid, nice))
        return next(answers)

    monkeypatch.setattr(watchdog, "lower_group_priority", lower)
    cfg = load_config(None, "test")
    dog = watchdog.Watchdog(cfg, shm)
    for index, role, name in ((2, Role.SHADOW, "s1"), (3, Role.STANDBY, "main")):
        shm.claim_slot(index, role, name)
        slot = shm.slot(index)
        slot["pid"], slot["generation"] = 4242 + index, 1
        slot["state"] = int(SlotState.BACKOFF)  # neither sampled nor checked for beats
    nice = cfg.watchdog.shadow_nice
    for _ in range(3):
        dog.scan()
    assert calls == [(4244, nice), (4244, nice)]  # the standby keeps the main's weight
    shm.slot(2)["generation"] = 2  # a new shadow in the slot: niced again
    dog.scan()
    assert calls[2:] == [(4244, nice)]
