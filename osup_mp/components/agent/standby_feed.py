"""What the hot standby is fed: every entry the main writes, passed on in ``wal_apply``
frames in the loop step it leaves for the WAL, numbered as the WAL will number it.

Decision: the feed, not the WAL, keeps the standby's position. Entries follow its restore
frames in the order the WAL numbers them, so the standby is as far as the main, minus what
is in its pipe, and a promotion catches up by reading its pipe, not by asking the WAL. The
WAL's numbering of each batch checks what the standby was told (a mismatch replaces it), and
what the main writes while the standby's restore is planned is held, then passed on from
the plan's end (:meth:`StandbyFeed.release_held`).
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from osup_mp.components.agent.follow import wal_apply_frames
from osup_mp.components.agent.states import AgentState

if TYPE_CHECKING:
    from osup_mp.components.agent.standby import Standby


class StandbyFeed:
    def __init__(self, standby: Standby) -> None:
        self.standby = standby
        self.sent_lsn = 0  # newest entry passed on (numbered as the WAL will number it)
        self._numbering: deque[tuple[int, int]] = deque()  # (first LSN, count) passed on
        self._restored_through = 0  # the last LSN of this standby's restore
        # Entries the main wrote while the plan was in flight, each with the number of plan
        # calls sent before it: those after the last call are not in the plan.
        self._held: list[tuple[list[bytes], int]] = []

    def hold(self, entries: list[bytes], calls: int) -> None:
        """Entries the main wrote after ``calls`` calls of the standby's plan were sent."""
        self._held.append((entries, calls))

    def drop_held(self) -> None:
        self._held.clear()

    def release_held(self, plan_calls: int) -> list[list[bytes]]:
        """The plan is in: what it does not hold, to pass on after the restore."""
        # What the main wrote after the plan's last read is not in the plan: it is numbered
        # from the plan's end and passed on after the restore (the WAL's numbering checks it).
        held = [entries for entries, calls in self._held if calls >= plan_calls]
        self._held.clear()
        return held

    def restored(self, lsn: int) -> None:
        """A new standby restores everything through ``lsn``: it is fed from there."""
        self.sent_lsn = self._restored_through = lsn
        self._numbering.clear()

    def pass_on(self, entries: list[bytes]) -> int:
        """Write entries to the standby agent's stdin; the generation that got them, or 0
        (it fell too far behind and is being replaced)."""
        standby = self.standby
        agent, cfg = standby.agent, standby.cfg.agent
        assert agent is not None
        first = self.sent_lsn + 1
        for frame in wal_apply_frames(first, entries, cfg.max_frame):
            agent.pipes.out += frame
        self.sent_lsn += len(entries)
        self._numbering.append((first, len(entries)))
        lag = self.sent_lsn - standby.applied_lsn
        if standby.state is AgentState.RUNNING and lag > cfg.standby_max_lag:
            standby.kill_for(
                f"{lag} WAL entries behind the main ([agent] standby_max_lag {cfg.standby_max_lag})"
            )
            return 0
        return standby.generation

    def numbered(self, generation: int, first_lsn: int, count: int) -> None:
        """The WAL numbered entries this standby got: they must be the LSNs it was told."""
        if generation != self.standby.generation or not self._numbering:
            return
        if first_lsn + count - 1 <= self._restored_through:
            return  # written while its plan was made, and in it: restored, not passed on
        told, told_count = self._numbering.popleft()
        if (told, told_count) != (first_lsn, count):
            self.standby.kill_for(
                f"the WAL numbered entries {first_lsn}..{first_lsn + count - 1}, "
                f"not {told}..{told + told_count - 1}"
            )
