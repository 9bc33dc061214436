"""Unit tests of the command declarations and the server's argument checks."""

from __future__ import annotations

import pytest

from osup_mp.wire import api

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("command", "args", "problem"),
    [
        (api.SHADOW_START, {}, "shadow_start: missing argument id"),
        (api.SHADOW_START, {"id": 7}, "shadow_start: id must be a string, not int"),
        (api.SHADOW_START, {"id": "s", "command": ["a", 1]}, "command must be a list of strings"),
        (api.SHADOW_START, {"id": "s", "colour": "red"}, "unknown argument 'colour'"),
        (api.WAL_TAIL, {"n": -5}, "wal_tail: n must not be negative"),
        (api.WAL_TAIL, {"n": True}, "n must be an integer, not a boolean"),
        (api.WAL_TAIL, {"n": "5"}, "n must be an integer, not str"),
        (api.HOT_RELOAD, {"code": "x = 1", "timeout": -1}, "timeout must not be negative"),
        (api.PING, {"x": 1}, "ping: unknown argument 'x' (expected: none)"),
    ],
)
def test_bad_arguments_are_refused_with_the_reason(command, args, problem) -> None:
    found = command.check(args)
    assert found is not None and problem in found


@pytest.mark.parametrize(
    ("command", "args"),
    [
        (api.SHADOW_START, {"id": "s1", "command": ["python", "-m", "x"]}),
        (api.SHADOW_START, {"id": "s1", "command": None}),  # absent: the default
        (api.CALL, {"name": "wal", "request": ["tail", -1]}),  # any: not checked further
        (api.HOT_RELOAD, {"code": "x = 1", "timeout": 2.5}),
        (api.REQUEST, {"data": {"op": "stats"}}),
    ],
)
def test_good_arguments_pass(command, args) -> None:
    assert command.check(args) is None


def test_every_command_has_help_and_a_unique_name() -> None:
    for table in (api.CONTROL, api.DATA_PLANE):
        for name, command in table.items():
            assert name == command.name
            assert command.help.endswith(".") and command.timeout > 0
            assert all(arg.help for arg in command.args)


def test_every_declared_control_command_is_served() -> None:
    from osup_mp.app import commands

    served = set()
    for group in commands.GROUPS:
        served |= {c.name for c in group.HANDLERS}
    assert served == set(api.CONTROL)
