"""The minimal agent under any role, which it ignores: it says role "main" in ``ready``
whatever it was started as, so it cannot be a standby (it would not follow ``wal_apply``)."""

from __future__ import annotations

import sys

from minimal_agent import SEED_ARGS, MiniAgent

if __name__ == "__main__":
    sys.argv = [sys.argv[0], *SEED_ARGS]
    sys.exit(MiniAgent().run())
