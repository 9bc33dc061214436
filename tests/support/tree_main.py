"""Run a tree of test components: ``python tree_main.py CONFIG NAME:RESTART[:OPTIONS] ...``.

The supervisor, control socket, pidfile and logging are the real ones (``run_tree``); only the
child list differs from the shipped tree, so strategies and restart types can be exercised.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from components import Echo

from osup_mp.app.specs import telemetry_spec
from osup_mp.app.tree import run_tree
from osup_mp.config import load_config
from osup_mp.runtime.supervisor import ChildSpec, Restart


def echo_spec(arg: str) -> ChildSpec:
    """``NAME:RESTART[:OPTION,...]``; an option is a flag file (init fails while it exists),
    ``init_delay=SECONDS``, ``hold=FILE`` (init waits while FILE exists),
    ``start_timeout=SECONDS``, ``shutdown_timeout=SECONDS`` (2 by default) or
    ``ignore_term``."""
    name, restart, *rest = arg.split(":", 2)
    flag: Path | None = None
    kwargs: dict[str, Any] = {}
    start_timeout = 30.0
    shutdown_timeout = 2.0
    for option in rest[0].split(",") if rest else []:
        key, _, value = option.partition("=")
        if key == "init_delay":
            kwargs["init_delay"] = float(value)
        elif key == "start_timeout":
            start_timeout = float(value)
        elif key == "shutdown_timeout":
            shutdown_timeout = float(value)
        elif key == "ignore_term":
            kwargs["ignore_term"] = True
        elif key == "hold":
            kwargs["hold"] = Path(value)
        else:
            flag = Path(option)
    factory = functools.partial(Echo, flag, **kwargs)
    return ChildSpec(
        name,
        factory,
        Restart(restart),
        shutdown_timeout=shutdown_timeout,
        start_timeout=start_timeout,
    )


def main() -> int:
    cfg = load_config(Path(sys.argv[1]), "test")
    specs = [telemetry_spec(cfg)]  # telemetry, so status has figures
    for arg in sys.argv[2:]:
        specs.append(echo_spec(arg))
    return run_tree(cfg, specs=lambda shm: specs)


if __name__ == "__main__":
    sys.exit(main())
