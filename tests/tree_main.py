"""Run a tree of test components: ``python tree_main.py CONFIG NAME:RESTART[:flagfile] ...``.

The supervisor, control socket, pidfile and logging are the real ones (``run_tree``); only the
child list differs from the shipped tree, so strategies and restart types can be exercised.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from components import Echo

from osup_mp.config import load_config
from osup_mp.runtime.supervisor import ChildSpec, Restart
from osup_mp.tree import run_tree, telemetry_spec


def main() -> int:
    cfg = load_config(Path(sys.argv[1]), "test")
    specs = [telemetry_spec(cfg)]  # telemetry, so status has figures
    for arg in sys.argv[2:]:
        name, restart, *flag = arg.split(":")
        factory = functools.partial(Echo, Path(flag[0]) if flag else None)
        specs.append(ChildSpec(name, factory, Restart(restart), shutdown_timeout=2.0))
    return run_tree(cfg, specs=lambda shm: specs)


if __name__ == "__main__":
    sys.exit(main())
