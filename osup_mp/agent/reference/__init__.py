"""The reference agent (``osup-mp-agent``): a memory agent built on the SDK, the default agent
of a tree. :mod:`.agent` is the agent; :mod:`.memory_system` its hot-reloadable search."""

import os

from osup_mp.wire.launch import THREAD_POOL_VARS

# A search is one matrix-vector product: BLAS worker threads barely shorten it, then spin-wait
# and take the cores the rest of the tree needs (measured at 20,000 blocks: twice the CPU per
# search). One thread unless the environment says otherwise; set before numpy loads.
for _name in THREAD_POOL_VARS:
    os.environ.setdefault(_name, "1")

from osup_mp.agent.reference.agent import MemoryAgent, main  # noqa: E402

__all__ = ["MemoryAgent", "main"]
