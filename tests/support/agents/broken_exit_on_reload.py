"""Broken agent: exits with status 3 when asked to ``hot_reload`` (-> FAIL hot_reload)."""

from __future__ import annotations

import sys
from typing import Any

from minimal_agent import MiniAgent


class ExitOnReload(MiniAgent):
    def on_hot_reload(self, msg: dict[str, Any]) -> None:
        sys.stderr.write("cannot reload, giving up\n")
        raise SystemExit(3)


if __name__ == "__main__":
    sys.exit(ExitOnReload().run())
