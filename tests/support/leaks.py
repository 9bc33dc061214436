"""The leak check: every process a test starts carries ``OSUP_TEST_TAG`` in its environment
(children inherit it), so any survivor — even a double-forked daemon — is found, killed, and
fails the test; a segment named after the tag left in ``/dev/shm`` fails it too."""

from __future__ import annotations

import os
import time

import psutil


def _environ(pid: int | str) -> bytes | None:
    """The raw environment of ``pid`` (what psutil's ``environ()`` parses), or None."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return b"\0" + f.read()
    except OSError:  # gone, or not ours to read
        return None


def _tag_entry(tag: str) -> bytes:
    return b"\0OSUP_TEST_TAG=" + tag.encode() + b"\0"


def tagged_processes(tag: str) -> list[psutil.Process]:
    """The live processes whose environment has ``OSUP_TEST_TAG=tag``.

    Every test pays for this scan, so it reads ``/proc/PID/environ`` as raw bytes and asks
    psutil only about the processes that match.
    """
    entry = _tag_entry(tag)
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        environ = _environ(name)
        if environ is None or entry not in environ:
            continue
        try:
            proc = psutil.Process(int(name))
            if proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.Error:
            continue
    return found


def gone(pid: int) -> bool:
    """Whether ``pid`` has exited (a zombie not yet reaped counts as gone). Race-free: the
    process may be reaped at any moment between two looks at it."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _someone_elses(name: str, tag: str) -> bool:
    """Whether the segment ``name`` was made by a live process outside this test (another
    tree on the machine using the default name): its header's creator pid is alive and
    does not carry the tag. A segment whose creator is gone counts as the test's."""
    from osup_mp.storage.shm.segment import HEADER_DTYPE, MAGIC  # numpy: only when needed

    pid_type, at = HEADER_DTYPE.fields["creator_pid"][:2]
    try:
        with open(f"/dev/shm/{name}", "rb") as f:
            header = f.read(at + pid_type.itemsize)
    except OSError:
        return False
    if len(header) < at + pid_type.itemsize or not header.startswith(MAGIC):
        return False
    creator = int.from_bytes(header[at:], "little", signed=True)
    environ = _environ(creator) if creator > 0 else None
    return environ is not None and _tag_entry(tag) not in environ


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
    # processes on the machine may create and remove their own meanwhile, the default one
    # included (left alone while its creator, not one of the test's, lives).
    new_shm = {
        name
        for name in set(os.listdir("/dev/shm")) - shm_before
        if tag in name or (name == "o_shared_state" and not _someone_elses(name, tag))
    }
    for name in new_shm:
        try:
            os.unlink(f"/dev/shm/{name}")
        except OSError:
            pass
    assert not survivors, f"test leaked processes: {[(p.pid, p.name()) for p in survivors]}"
    assert not new_shm, f"test leaked shared-memory segments: {sorted(new_shm)}"
