"""The ``osup-mp`` command line: one module per command, all built on the client library.

Operator mistakes (bad config, unknown component, tree not running) end with one line on
stderr and a documented exit status, never a traceback:

* 0 — done; 1 — the operation failed (message says why); 2 — usage or configuration error;
  3 — no tree is running (``status``, ``restart``…).
"""

from __future__ import annotations

from osup_mp.cli.main import main

__all__ = ["main"]
