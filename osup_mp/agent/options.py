"""What the manager told an agent at launch: :class:`AgentOptions`, parsed from its command
line and its ``OSUP_*`` environment.

Decision: parsed through the launch contract (:mod:`osup_mp.wire.launch`), the flag and
variable names the manager and agent-check use too, and tolerant of the rest: arguments the
SDK does not know are kept in ``extra`` for the agent, never an error, so an agent may take
options of its own.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from osup_mp.wire import DEFAULT_MAX_FRAME, launch

__all__ = ["AgentOptions"]


@dataclass(slots=True)
class AgentOptions:
    """What the manager told the agent: command line and environment."""

    role: str = "main"
    restore_id: str | None = None
    elixir_mode: bool = False
    script: str | None = None
    instance_id: str = "main"
    shm_name: str | None = None
    shm_slot: int | None = None
    heartbeat_interval: float = 1.0
    metrics_interval: float = 5.0
    max_frame: int = DEFAULT_MAX_FRAME
    busy_poll_us: int = 0
    stall_timeout: float = 30.0
    extra: list[str] = field(default_factory=list)

    @classmethod
    def parse(
        cls, argv: list[str] | None = None, environ: Mapping[str, str] = os.environ
    ) -> AgentOptions:
        parser = argparse.ArgumentParser(add_help=False)
        parser.add_argument("script", nargs="?")
        parser.add_argument(launch.ROLE_FLAG, dest="role", default="main")
        parser.add_argument(launch.RESTORE_FLAG, dest="restore_id")
        parser.add_argument(launch.SEED_MODE_FLAG, dest="elixir_mode", action="store_true")
        ns, extra = parser.parse_known_args(argv)
        env = launch.LaunchEnv.from_env(environ)

        def given(value: int | None, default: int) -> int:
            return default if value is None else value

        return cls(
            role=ns.role,
            restore_id=ns.restore_id,
            elixir_mode=ns.elixir_mode,
            script=ns.script,
            instance_id=env.instance_id or ns.role,
            shm_name=env.shm_name,
            shm_slot=env.shm_slot,
            heartbeat_interval=given(env.heartbeat_interval_ms, 1000) / 1000,
            metrics_interval=given(env.metrics_interval_ms, 5000) / 1000,
            max_frame=given(env.max_frame, DEFAULT_MAX_FRAME),
            busy_poll_us=given(env.busy_poll_us, 0),
            stall_timeout=given(env.stall_timeout_ms, 30000) / 1000,
            extra=extra,
        )
