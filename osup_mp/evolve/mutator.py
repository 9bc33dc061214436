"""A mutator command: the user's own generator of variants (one that asks a language model,
say), plugged into a run with ``--mutator CMD``.

The command gets one JSON object on stdin, ``{"code", "target", "figures", "seed"}`` (the
parent's code, the module it replaces, what was measured of the parent or null, and a seed
it may use to be deterministic), and prints the new module's source on stdout. It runs in a
session of its own with a deadline; whatever it leaves is killed. The one decision: a
mutator that fails (non-zero exit, timeout, no output, output that is not Python) never
stalls a run: that mutation falls back to the built-in one, and the failure is counted and
kept for the report.
"""

from __future__ import annotations

import ast
import json
import subprocess
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from osup_mp.evolution.genetic import Figures
from osup_mp.lowlevel.proc import run_in_session


class CommandMutator:
    def __init__(self, argv: Sequence[str], target: str, timeout: float = 60.0) -> None:
        self.argv = list(argv)
        self.target = target
        self.timeout = timeout
        self.failures: list[str] = []  # why each failed call fell back

    def __call__(self, code: str, figures: Figures | None, seed: int) -> str | None:
        """The command's variant of ``code``, or None (the reason is in ``failures``)."""
        request = {
            "code": code,
            "target": self.target,
            "figures": None if figures is None else _figures(figures),
            "seed": seed,
        }
        try:
            done = run_in_session(self.argv, json.dumps(request).encode(), self.timeout)
        except subprocess.TimeoutExpired:
            return self._failed(f"no answer within {self.timeout:g} s")
        except OSError as exc:
            return self._failed(f"cannot run {self.argv[0]}: {exc.strerror}")
        if done.returncode:
            tail = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
            return self._failed(f"exited with status {done.returncode}: {tail[0][:200]}")
        text = done.stdout.decode(errors="replace")
        try:
            ast.parse(text)
        except SyntaxError as exc:
            return self._failed(f"printed no valid Python (line {exc.lineno}: {exc.msg})")
        return text if text.strip() else self._failed("printed nothing")

    def _failed(self, why: str) -> str | None:
        self.failures.append(why)
        return None


def _figures(f: Figures) -> dict[str, Any]:
    data = asdict(f)
    data.update(median_ms=f.median_ms, mean_ms=f.mean_ms, error_rate=f.error_rate)
    del data["latencies_ms"]
    return data
