"""The leak check: every process a test starts carries ``OSUP_TEST_TAG`` in its environment
(children inherit it), so any survivor — even a double-forked daemon — is found, killed, and
fails the test; a segment named after the tag left in ``/dev/shm`` fails it too."""

from __future__ import annotations

import os
import time

import psutil


def tagged_processes(tag: str) -> list[psutil.Process]:
    """The live processes whose environment has ``OSUP_TEST_TAG=tag``.

    Every test pays for this scan, so it reads ``/proc/PID/environ`` (what psutil's
    ``environ()`` parses) as raw bytes and asks psutil only about the processes that match.
    """
    entry = b"\0OSUP_TEST_TAG=" + tag.encode() + b"\0"
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                environ = f.read()
        except OSError:  # gone, or not ours to read
            continue
        if entry not in b"\0" + environ:
            continue
        try:
            proc = psutil.Process(int(name))
            if proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.Error:
            continue
    return found


def check_leaks(tag: str, shm_before: set[str]) -> None:
    """Kill what a test left running and remove its segments; fail if there was any."""
    deadline = time.monotonic() + 5.0
    survivors = tagged_processes(tag)
    while survivors and time.monotonic() < deadline:
        time.sleep(0.05)
        survivors = tagged_processes(tag)
    for proc in survivors:
        try:
            proc.kill()
        except psutil.Error:
            pass
    # Only this test's segments (named after its tag) or the default name count: other
    # processes on the machine may create and remove their own meanwhile.
    new_shm = {
        name
        for name in set(os.listdir("/dev/shm")) - shm_before
        if tag in name or name == "o_shared_state"
    }
    for name in new_shm:
        try:
            os.unlink(f"/dev/shm/{name}")
        except OSError:
            pass
    assert not survivors, f"test leaked processes: {[(p.pid, p.name()) for p in survivors]}"
    assert not new_shm, f"test leaked shared-memory segments: {sorted(new_shm)}"
