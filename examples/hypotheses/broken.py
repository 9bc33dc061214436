"""A hypothesis that does not load: rejected before it serves anything.

It imports a module that does not exist, so the hot reload into the candidate shadow fails
(the agent keeps its code and says why); the experiment is rejected as ``load_failed`` and
the main agent is never touched.
"""

from __future__ import annotations

import memory_system_helpers  # type: ignore[import-not-found]  # does not exist

DIM = memory_system_helpers.DIM
