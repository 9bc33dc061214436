"""The launch contract between a manager and an agent executable: its arguments and the
``OSUP_*`` environment, written once for the three parties that speak it (the agent manager
that launches, the SDK that parses, and ``agent-check`` that launches like a manager).

Arguments are the seed's, ``EXE [SCRIPT] --role ROLE --elixir-mode [--restore ID]``; the
environment variables are additions an agent may ignore (docs/protocol.md, "Launch").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

# Thread pools of numerical libraries (OpenBLAS, OpenMP, MKL): they spin-wait between calls
# and take cores the rest of the tree needs, so shadows (and the reference agent, unless
# told otherwise) run them with one thread.
THREAD_POOL_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")

ROLE_FLAG = "--role"
SEED_MODE_FLAG = "--elixir-mode"
RESTORE_FLAG = "--restore"


def agent_args(role: str, restore: str | None = None) -> list[str]:
    """What follows the executable (and its script) on an agent's command line."""
    args = [ROLE_FLAG, role, SEED_MODE_FLAG]
    if restore is not None:
        args += [RESTORE_FLAG, restore]
    return args


_NAMES: dict[str, str] = {
    "instance_id": "OSUP_INSTANCE_ID",
    "shm_name": "OSUP_SHM_NAME",
    "shm_slot": "OSUP_SHM_SLOT",
    "heartbeat_interval_ms": "OSUP_HEARTBEAT_INTERVAL_MS",
    "metrics_interval_ms": "OSUP_METRICS_INTERVAL_MS",
    "max_frame": "OSUP_MAX_FRAME",
    "busy_poll_us": "OSUP_BUSY_POLL_US",
    "stall_timeout_ms": "OSUP_STALL_TIMEOUT_MS",
    "manager_pid": "OSUP_MANAGER_PID",
    "life_lock_fd": "OSUP_LIFE_LOCK_FD",
}


@dataclass(frozen=True, slots=True)
class LaunchEnv:
    """The ``OSUP_*`` variables; None leaves a variable out (the agent's default applies)."""

    instance_id: str | None = None
    shm_name: str | None = None
    shm_slot: int | None = None
    heartbeat_interval_ms: int | None = None
    metrics_interval_ms: int | None = None
    max_frame: int | None = None
    busy_poll_us: int | None = None
    stall_timeout_ms: int | None = None
    manager_pid: int | None = None
    life_lock_fd: int | None = None  # a robust mutex to hold for life (lowlevel.lifelock)

    def to_env(self) -> dict[str, str]:
        """The variables to add to an agent's environment."""
        return {
            name: str(value)
            for field, name in _NAMES.items()
            if (value := getattr(self, field)) is not None
        }

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> LaunchEnv:
        """What an agent was given (empty variables count as absent); a malformed number
        raises ``ValueError`` naming the variable."""
        values: dict[str, str | int | None] = {}
        for field, name in _NAMES.items():
            raw = environ.get(name) or None
            if raw is None or field in ("instance_id", "shm_name"):
                values[field] = raw
                continue
            try:
                values[field] = int(raw)
            except ValueError:
                raise ValueError(f"{name} must be an integer, got {raw!r}") from None
        return cls(**values)  # type: ignore[arg-type]
