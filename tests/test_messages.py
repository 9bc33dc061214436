"""Typed requests: dispatch by type, and raw ``[kind, *args]`` calls checked before use."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import pytest

from osup_mp.components import messages as m
from osup_mp.components.vault import MemoryVault
from osup_mp.components.wal import WALManager
from osup_mp.runtime.calls import CallError
from osup_mp.runtime.component import Caller, Component, on_call, on_cast, on_info
from osup_mp.runtime.messages import PeerDown, Ping, from_raw

pytestmark = pytest.mark.unit  # no process started


@dataclass(frozen=True, slots=True)
class Add:
    a: int
    b: float = 1.0
    label: str | None = None
    kind: ClassVar[str] = "add"


@dataclass(frozen=True, slots=True)
class Note:
    text: str
    kind: ClassVar[str] = "note"


@dataclass(frozen=True, slots=True)
class Tick:
    n: int


class Calc(Component):
    def __init__(self) -> None:
        self.notes: list[str] = []

    @on_call(Add)
    def _add(self, request: Add, caller: Caller) -> float:
        return request.a + request.b

    @on_cast(Note)
    def _note(self, request: Note) -> None:
        self.notes.append(request.text)

    @on_info(Tick)
    def _tick(self, msg: Tick) -> None:
        self.notes.append(f"tick {msg.n}")


class LoudCalc(Calc):
    @on_call(Note)
    def _echo_note(self, request: Note, caller: Caller) -> str:
        return request.text.upper()


CALLER: Any = None  # handlers here never answer later


def test_calls_and_casts_are_dispatched_by_type() -> None:
    calc = Calc()
    assert calc.handle_call(Add(2, 0.5), CALLER) == 2.5
    assert calc.handle_call(Ping(), CALLER) == "pong"  # served by every component
    calc.handle_cast(Note("hi"))
    assert calc.notes == ["hi"]
    with pytest.raises(CallError, match="unknown call"):
        calc.handle_call(object(), CALLER)


def test_timers_and_other_infos_are_dispatched_by_type() -> None:
    loud = LoudCalc()  # the table is inherited
    loud.handle_info(Tick(3))
    loud.handle_info(PeerDown("wal"))  # nobody here cares: ignored
    loud.handle_info("tick")  # not a Tick: logged, not dispatched
    assert loud.notes == ["tick 3"]


def test_subclasses_inherit_the_table_and_extend_it() -> None:
    loud = LoudCalc()
    assert loud.handle_call(Add(1), CALLER) == 2.0
    assert loud.handle_call(Note("x"), CALLER) == "X"
    assert Calc._calls.get(Note) is None  # the base's table is untouched


def test_raw_calls_become_records() -> None:
    calc = Calc()
    assert calc.handle_call(["add", 2, 3], CALLER) == 5
    assert calc.handle_call(("add", 2), CALLER) == 3.0
    assert calc.handle_call("ping", CALLER) == "pong"
    assert from_raw({"add": Add}, ["add", 1, 2, "l"]) == Add(1, 2, "l")


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (["nope"], r"unknown call 'nope' \(known: add, note, ping\)"),
        ([7], "unknown call 7"),
        (["add"], r"add: takes a b label; got 0 argument\(s\)"),
        (["add", 1, 2, "x", "extra"], r"got 4 argument\(s\)"),
        (["add", "1"], "add: a must be int, not str"),
        (["add", 1, "2"], "add: b must be float or int, not str"),
        (["add", 1, 2, 3], "label must be str or NoneType, not int"),
    ],
)
def test_malformed_raw_calls_are_refused_with_the_reason(raw: list[Any], reason: str) -> None:
    with pytest.raises(CallError, match=reason):
        Calc().handle_call(raw, CALLER)


def test_every_shipped_component_request_has_a_unique_kind_per_component() -> None:
    """The call door finds a record by its kind: two records of one component sharing a
    kind would make one of them unreachable."""
    for component in (WALManager, MemoryVault):
        records = {*component._calls, *component._casts}
        assert len(records) == len(component._kinds), sorted(t.kind for t in records)
    assert WALManager._kinds["stats"] is m.WalStats
    assert MemoryVault._kinds["latest"] is m.LatestCheckpoint


def test_every_record_crosses_a_channel_as_its_class_and_field_values() -> None:
    """Each shipped record pickles by its fields (no per-record walk of ``fields()``) and
    comes back equal; a class that could not be rebuilt that way is refused at once."""
    import dataclasses
    import pickle

    from osup_mp.runtime import messages as rm

    records = [getattr(m, name) for name in m.__all__] + [Ping, PeerDown, rm.Connect]
    for cls in records:
        values = [f"v{i}" for i, _f in enumerate(dataclasses.fields(cls))]
        record = cls(*values)
        assert type(record).__reduce__(record) == (cls, tuple(values)), cls
        assert pickle.loads(pickle.dumps(record, pickle.HIGHEST_PROTOCOL)) == record

    @dataclass(frozen=True)
    class Checked:
        n: int

        def __post_init__(self) -> None:
            assert self.n >= 0

    with pytest.raises(TypeError, match="Checked"):
        rm.pickled_by_fields(Checked)
