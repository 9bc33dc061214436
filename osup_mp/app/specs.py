"""Which components form the tree, in start order, and how each is started.

Start order: telemetry, health, vault, WAL, watchdog, the main agent, the traffic splitter,
then the evolution arbiter, so that every component an agent manager needs is running before
it starts, the splitter finds the main agent it mirrors, and the arbiter everything an
experiment uses. Shadows are dynamic children made from
:func:`agent_spec` by the ``shadow_start`` command.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from osup_mp.components.agent import NO_DEADLINES, AgentManager, Deadlines
from osup_mp.components.arbiter import EvolutionArbiter
from osup_mp.components.health import HealthMonitor
from osup_mp.components.splitter import TrafficSplitter
from osup_mp.components.telemetry import Telemetry
from osup_mp.components.vault import MemoryVault
from osup_mp.components.wal import WALManager
from osup_mp.components.watchdog import Watchdog, manager_name
from osup_mp.config import Config
from osup_mp.runtime.supervisor import ChildSpec, Restart
from osup_mp.storage.shm.segment import MAIN_SLOT, STANDBY_SLOT, SharedState

SpecsFactory = Callable[[SharedState], list[ChildSpec]]


def telemetry_spec(cfg: Config) -> ChildSpec:
    return ChildSpec(
        "telemetry",
        functools.partial(Telemetry, cfg.telemetry.period / 1000, cfg.o_supervisor.data_dir),
        Restart.PERMANENT,
        shutdown_timeout=cfg.supervisor.shutdown_timeout / 1000,
    )


def agent_spec(
    cfg: Config,
    shm: SharedState,
    *,
    role: str,
    instance_id: str,
    slot: int,
    command: list[str] | None = None,
    standby_slot: int | None = None,
    deadlines: Deadlines = NO_DEADLINES,
) -> ChildSpec:
    """An agent manager: ``agent:main`` is permanent (with a hot standby in ``standby_slot``
    when configured); shadows are transient dynamic children."""
    factory = functools.partial(
        AgentManager,
        cfg,
        shm,
        role=role,
        instance_id=instance_id,
        slot=slot,
        command=command,
        standby_slot=standby_slot,
        deadlines=deadlines,
    )
    restart = Restart.PERMANENT if role == "main" else Restart.TRANSIENT
    shutdown = longest_shutdown(cfg)
    # Its start includes the agent's first start (and restore): give it the ready timeout.
    start = max(30.0, cfg.agent.ready_timeout / 1000 + 10.0)
    return ChildSpec(
        manager_name(instance_id), factory, restart, shutdown_timeout=shutdown, start_timeout=start
    )


def longest_shutdown(cfg: Config) -> float:
    """The longest any child may take to stop, in seconds: an agent manager's, which stops its
    agent first and so has the agent's stop timeout on top of its own."""
    return (cfg.supervisor.shutdown_timeout + cfg.agent.stop_timeout) / 1000


def child_specs(cfg: Config, shm: SharedState) -> list[ChildSpec]:
    """The shipped tree, in start order."""
    shutdown = cfg.supervisor.shutdown_timeout / 1000
    return [
        telemetry_spec(cfg),
        ChildSpec(
            "health",
            functools.partial(HealthMonitor, cfg),
            Restart.PERMANENT,
            shutdown_timeout=shutdown,
        ),
        ChildSpec(
            "vault",
            functools.partial(MemoryVault, cfg),
            Restart.PERMANENT,
            shutdown_timeout=shutdown,
        ),
        ChildSpec(
            "wal", functools.partial(WALManager, cfg), Restart.PERMANENT, shutdown_timeout=shutdown
        ),
        ChildSpec(
            "watchdog",
            functools.partial(Watchdog, cfg, shm),
            Restart.PERMANENT,
            shutdown_timeout=shutdown,
        ),
        agent_spec(
            cfg,
            shm,
            role="main",
            instance_id="main",
            slot=MAIN_SLOT,
            standby_slot=STANDBY_SLOT if cfg.agent.standby else None,
        ),
        ChildSpec(
            "splitter",
            functools.partial(
                TrafficSplitter,
                cfg.evolution.compare,
                cfg.watchdog.shadow_cpus,
                cfg.watchdog.shadow_nice,
            ),
            Restart.PERMANENT,
            shutdown_timeout=shutdown,
        ),
        ChildSpec(
            "arbiter",
            functools.partial(EvolutionArbiter, cfg),
            Restart.PERMANENT,
            shutdown_timeout=shutdown,
        ),
    ]
