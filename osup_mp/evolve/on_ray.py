"""Variants evaluated as Ray tasks (``evolve --ray ADDRESS``): on this host's own Ray
instance (``local``) or on an existing cluster, when one host is not enough.

Each variant is one task with its resource request (a CPU, and the shadow's RSS limit as
Ray's ``memory``), running :func:`.standalone.evaluate`: a keeper in a session of its own
with the shadow's rlimits, the watchdog's samples and the deadlines. Ray places the task;
osup-mp limits it. The one decision: a task is never retried (``max_retries=0``): a variant
that kills its worker has failed, as one that breaks a limit in a shadow has.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import psutil

from osup_mp.evolution.genetic.fitness import Figures
from osup_mp.evolve.standalone import Job, evaluate

# For a local instance: no usage report, no token file in the home directory, and nothing
# listening beyond the loopback interface (the user's environment wins).
_LOCAL_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
}
_OBJECT_STORE = 256 << 20  # a local instance's object store: a few snapshots and workloads
_STOP_GRACE = 10.0  # seconds a local instance's processes get to exit after its shutdown
# Once its GCS and raylet are gone nothing can start another process of the instance, and a
# worker that saw them go exits within a second or two: what is left then gets this long.
_AFTER_RAYLET = 2.0
_SPAWNERS = {"gcs_server", "raylet"}
# In the environment of a local instance's GCS, raylet and workers (not of the agents the
# raylet starts with an environment of their own: the walk of this process's descendants
# finds those): a worker the raylet spawned as it shut down is orphaned at once, out of
# reach of that walk, but not of this mark.
_MARK = "OSUP_RAY_INSTANCE"


class RayUnavailable(RuntimeError):
    """Ray is not installed, or the cluster cannot be reached (the message says which)."""


def _reachable(address: str, timeout: float = 5.0) -> None:
    """Fail at once, with the reason, when a cluster's address does not answer (Ray itself
    keeps retrying for a minute); ``auto`` is Ray's to find."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise RayUnavailable(f"cannot start Ray at {address!r}: {host}:{port}: {exc}") from None


class RayEvaluator:
    """Evaluates each generation's variants as Ray tasks, all submitted at once."""

    def __init__(self, job: Job, address: str, workers: int) -> None:
        try:
            import ray
        except ImportError:
            raise RayUnavailable("Ray is not installed: pip install 'osup-mp[ray]'") from None
        self._ray = ray
        self._temp: str | None = None
        self._children_before: set[int] = set()
        try:
            if address == "local":
                for key, value in _LOCAL_ENV.items():
                    os.environ.setdefault(key, value)
                # Its sockets and logs in a directory of its own, removed when it stops.
                self._temp = tempfile.mkdtemp(prefix="osup-ray-")
                self._children_before = {c.pid for c in psutil.Process().children()}
                os.environ[_MARK] = self._temp  # inherited by what ray.init starts, only
                try:
                    ray.init(
                        num_cpus=workers, include_dashboard=False, log_to_driver=False,
                        object_store_memory=_OBJECT_STORE, configure_logging=False,
                        _temp_dir=self._temp,
                    )  # fmt: skip
                finally:
                    del os.environ[_MARK]
            else:
                _reachable(address)
                ray.init(address=address, log_to_driver=False, configure_logging=False)
        except Exception as exc:  # ConnectionError, RuntimeError, ...: Ray's own words
            if self._temp is not None:
                shutil.rmtree(self._temp, ignore_errors=True)
            if isinstance(exc, RayUnavailable):
                raise
            raise RayUnavailable(f"cannot start Ray at {address!r}: {exc}") from exc
        memory = job.limits.rss_mb << 20
        self._task = ray.remote(num_cpus=1, memory=memory, max_retries=0)(evaluate)
        self._job = ray.put(job)
        self.on_variant: Callable[[Figures], None] | None = None  # each result, as it comes

    def evaluate(self, codes: Sequence[str]) -> list[Figures]:
        """The figures of each code, in order; each is reported as it completes."""
        ray = self._ray
        refs = [self._task.remote(self._job, code) for code in codes]
        results: dict[Any, Figures] = {}
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                try:
                    figures = ray.get(ref)
                except ray.exceptions.RayError as exc:  # its worker died, or was lost
                    figures = Figures(failure=f"its Ray task failed: {str(exc)[:300]}")
                results[ref] = figures
                if self.on_variant is not None:
                    self.on_variant(figures)
        return [results[ref] for ref in refs]

    def close(self) -> None:
        """Disconnect; a local instance stops, with every process it started. Ray's shutdown
        stops them asynchronously (a worker exits when it sees its raylet gone): they are
        waited for, and killed if they outlast the grace."""
        if self._temp is None:
            self._ray.shutdown()
            return
        seen = set(self._started())
        self._ray.shutdown()
        deadline = time.monotonic() + _STOP_GRACE
        while alive := {p for p in seen | self._marked() if _alive(p)}:
            seen |= alive
            if not any(_name(p) in _SPAWNERS for p in alive):
                deadline = min(deadline, time.monotonic() + _AFTER_RAYLET)
            if time.monotonic() > deadline:  # they outlasted the grace
                for proc in alive:
                    with contextlib.suppress(psutil.NoSuchProcess):
                        proc.kill()
                break
            psutil.wait_procs(alive, timeout=0.2)
        psutil.wait_procs(seen, timeout=5.0)  # and reaps this process's own children
        shutil.rmtree(self._temp, ignore_errors=True)

    def _started(self) -> list[psutil.Process]:
        """The local instance's processes: the children ``ray.init`` started (GCS, raylet,
        ...) and everything under them (the workers), never another child's descendants."""
        found: list[psutil.Process] = []
        for child in psutil.Process().children():
            if child.pid not in self._children_before:
                with contextlib.suppress(psutil.NoSuchProcess):  # gone: nothing to wait for
                    found += [child, *child.children(recursive=True)]
        return found

    def _marked(self) -> set[psutil.Process]:
        """Every process of this user with this instance's mark, orphans included."""
        found = set()
        for proc in psutil.process_iter():
            with contextlib.suppress(psutil.Error):
                if proc.environ().get(_MARK) == self._temp:
                    found.add(proc)
        return found


def _name(proc: psutil.Process) -> str:
    with contextlib.suppress(psutil.Error):
        return str(proc.name())
    return ""


def _alive(proc: psutil.Process) -> bool:
    with contextlib.suppress(psutil.Error):
        return bool(proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE)
    return False
