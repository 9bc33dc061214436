"""Unit tests of the launch contract: arguments and the OSUP_* environment, both ways."""

from __future__ import annotations

import pytest

from osup_mp.agent.sdk import AgentOptions
from osup_mp.wire.launch import LaunchEnv, agent_args

pytestmark = pytest.mark.unit


def test_arguments_are_the_seeds() -> None:
    assert agent_args("main") == ["--role", "main", "--elixir-mode"]
    assert agent_args("shadow", "ckpt-7") == [
        "--role",
        "shadow",
        "--elixir-mode",
        "--restore",
        "ckpt-7",
    ]


def test_the_environment_round_trips_and_leaves_out_what_is_not_given() -> None:
    given = LaunchEnv(instance_id="s1", shm_name="/seg", shm_slot=3, manager_pid=42)
    env = given.to_env()
    assert env == {
        "OSUP_INSTANCE_ID": "s1",
        "OSUP_SHM_NAME": "/seg",
        "OSUP_SHM_SLOT": "3",
        "OSUP_MANAGER_PID": "42",
    }
    assert LaunchEnv.from_env(env) == given


def test_the_sdk_reads_what_the_manager_writes() -> None:
    env = LaunchEnv(
        instance_id="s1", shm_name="/seg", shm_slot=3, heartbeat_interval_ms=200, max_frame=4096
    ).to_env()
    options = AgentOptions.parse(["script.py", *agent_args("shadow", "wal")], env)
    assert (options.role, options.restore_id, options.elixir_mode) == ("shadow", "wal", True)
    assert (options.instance_id, options.shm_name, options.shm_slot) == ("s1", "/seg", 3)
    assert options.heartbeat_interval == 0.2 and options.max_frame == 4096
    defaults = AgentOptions.parse([], {})
    assert defaults.heartbeat_interval == 1.0 and defaults.stall_timeout == 30.0
    assert defaults.instance_id == "main" and defaults.shm_slot is None


def test_a_malformed_number_names_the_variable() -> None:
    with pytest.raises(ValueError, match="OSUP_SHM_SLOT must be an integer, got 'x'"):
        LaunchEnv.from_env({"OSUP_SHM_SLOT": "x"})
