"""``osup-mp demo`` end to end, as a user runs it: the tour promotes the faster hypothesis,
vetoes the wrong one, brings the killed agent back with its answers, and leaves nothing."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(240)
def test_the_tour_promotes_vetoes_recovers_and_leaves_nothing() -> None:
    cmd = [sys.executable, "-m", "osup_mp", "demo", "--blocks", "20000"]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    proc = subprocess.Popen(cmd, cwd=ROOT, text=True, **pipes)
    try:
        out, err = proc.communicate(timeout=200)
    finally:
        if proc.poll() is None:  # the demo stops its tree on SIGTERM, then exits
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=30)
    assert proc.returncode == 0, err + out
    directory = re.search(r"starting a tree in (\S+) \.\.\.", out)
    assert directory is not None, out
    summary = out[out.index("osup-mp demo: done in") :]
    assert re.search(r"memories loaded +20,000 in", summary), summary
    assert re.search(
        r"serving again in \d+ ms \(its standby promoted\); search answers identical", summary
    ), summary
    assert "faster_search.py          promoted (improvement)" in summary, out
    assert "wrong_search.py           rejected (mismatch_veto)" in summary, out
    assert "left running                         nothing" in summary, summary
    assert "rule improvement: the candidate is" in out  # the explanations are shown
    assert "latency_ms" in out and "memory_mb" in out and "expected [" in out
    assert not Path(directory[1]).exists()
    seconds = int(re.search(r"done in (\d+) s", summary)[1])  # type: ignore[index]
    assert seconds < 120, summary
