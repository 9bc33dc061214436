"""Agent managers: one component per agent instance.

:mod:`.manager` is the component; :mod:`.launch` the launch contract; :mod:`.requests` the
requests in flight; :mod:`.durability` the WAL/checkpoint/restore side of the main agent.
"""

from osup_mp.components.agent.launch import NO_DEADLINES, Deadlines
from osup_mp.components.agent.manager import AgentManager

__all__ = ["NO_DEADLINES", "AgentManager", "Deadlines"]
