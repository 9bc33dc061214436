"""The reference agent (``osup-mp-agent``): a memory agent built on the SDK, the default agent
of a tree. :mod:`.agent` is the agent; :mod:`.memory_system` its hot-reloadable search."""

from osup_mp.agent.reference.agent import MemoryAgent, main

__all__ = ["MemoryAgent", "main"]
