"""Telemetry component: periodic process sampling and an event API.

Every ``period`` it samples each process of the tree — the supervisor, every component and
their descendants (agents) — with psutil (RSS, CPU %, threads, open fds) plus host-wide
figures, and emits them as events. Other components emit their own events with
:func:`emit`; handlers attached here (``telemetry:attach``-style, by event-name prefix) see
every event. Like ``:telemetry``, a handler that raises is detached and logged so one bad
handler cannot take the component down.

Design decision: psutil ``Process`` objects are cached per pid, so ``cpu_percent`` measures
the interval since the previous sample instead of blocking to measure one.
"""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from loguru import logger

from osup_mp.components.messages import Attach, Detach, Events, Execute, LatestSample, Sample
from osup_mp.lowlevel.proc import descendants_of
from osup_mp.runtime.calls import CallError
from osup_mp.runtime.component import NOREPLY, Caller, Component, on_call, on_cast, on_info
from osup_mp.runtime.messages import WhichChildren

Event = tuple[str, ...]
HandlerFn = Callable[[Event, dict[str, Any], dict[str, Any]], None]

PROCESS_SAMPLE: Event = ("osup", "process", "sample")
HOST_SAMPLE: Event = ("osup", "host", "sample")


@dataclass(slots=True)
class _Handler:
    prefix: Event
    fn: HandlerFn


class EventCounter:
    """Built-in handler: per event name, how many were seen and the last measurements."""

    def __init__(self) -> None:
        self.events: dict[str, dict[str, Any]] = {}

    def __call__(self, event: Event, measurements: dict[str, Any], meta: dict[str, Any]) -> None:
        name = ".".join(event)
        entry = self.events.setdefault(name, {"count": 0})
        entry["count"] += 1
        entry["last"] = measurements
        entry["at"] = time.time()


def log_event(event: Event, measurements: dict[str, Any], metadata: dict[str, Any]) -> None:
    """A handler to attach by name (``osup_mp.components.telemetry:log_event``): events at
    debug level."""
    logger.debug("event {} {} {}", ".".join(event), measurements, metadata)


@dataclass(frozen=True, slots=True)
class _Tick:
    """Time to sample the tree again."""


class Telemetry(Component):
    def __init__(self, period: float, data_dir: Path | None = None) -> None:
        self.period = period
        self.data_dir = data_dir
        self.handlers: dict[str, _Handler] = {}
        self.counter = EventCounter()
        self._procs: dict[int, psutil.Process] = {}
        self.latest: dict[str, Any] = {}

    # -- event API ---------------------------------------------------------------------------

    def attach(self, handler_id: str, prefix: Event, fn: HandlerFn) -> None:
        if handler_id in self.handlers:
            raise ValueError(f"handler {handler_id!r} is already attached")
        self.handlers[handler_id] = _Handler(tuple(prefix), fn)

    def detach(self, handler_id: str) -> bool:
        return self.handlers.pop(handler_id, None) is not None

    def execute(self, event: Event, measurements: dict[str, Any], metadata: dict[str, Any]) -> None:
        for handler_id, handler in list(self.handlers.items()):
            if event[: len(handler.prefix)] != handler.prefix:
                continue
            try:
                handler.fn(event, measurements, metadata)
            except Exception as exc:
                logger.error("telemetry handler {} failed and was detached: {}", handler_id, exc)
                self.handlers.pop(handler_id, None)

    # -- sampling ----------------------------------------------------------------------------

    def sample(self, done: Callable[[dict[str, Any]], None] | None = None) -> None:
        """Ask the supervisor for the tree's pids (without blocking: it may be busy starting
        children), then sample them; ``done(sample)`` gets the result."""

        def with_children(ok: bool, children: Any) -> None:
            named = [("supervisor", os.getppid())]
            if ok:
                named += [tuple(pair) for pair in children]
            result = self.sample_processes(named)
            if done is not None:
                done(result)

        self.parent.call_async(WhichChildren(), with_children, timeout=5.0)

    def sample_processes(self, named: list[tuple[str, int]]) -> dict[str, Any]:
        """Measure ``(name, pid)`` processes and their descendants; emit the events."""
        seen: set[int] = set()
        processes = []
        for name, pid in named:
            proc = self._proc(pid)
            if proc is None:
                continue
            processes.append(self._measure(name, proc, seen))
            # From /proc/PID/task/*/children: psutil's children() reads every process on the
            # host, per component, and made ``status`` cost tens of milliseconds.
            for sub in descendants_of(pid) if name != "supervisor" else []:
                cached = self._proc(sub)
                if cached is not None and sub not in seen:
                    processes.append(self._measure(f"{name}/{_proc_name(cached)}", cached, seen))
        for pid in list(self._procs):
            if pid not in seen:
                del self._procs[pid]
        host = self._host()
        for entry in processes:
            self.execute(PROCESS_SAMPLE, entry, {"name": entry["name"], "pid": entry["pid"]})
        self.execute(HOST_SAMPLE, host, {})
        self.latest = {"at": time.time(), "processes": processes, "host": host}
        return self.latest

    def _proc(self, pid: int) -> psutil.Process | None:
        proc = self._procs.get(pid)
        if proc is None:
            try:
                proc = psutil.Process(pid)
                proc.cpu_percent(None)  # prime: the next call measures from now
            except psutil.Error:
                return None
            self._procs[pid] = proc
        return proc

    def _measure(self, name: str, proc: psutil.Process, seen: set[int]) -> dict[str, Any]:
        seen.add(proc.pid)
        entry: dict[str, Any] = {"name": name, "pid": proc.pid}
        try:
            with proc.oneshot():
                entry["rss_bytes"] = proc.memory_info().rss
                entry["cpu_percent"] = proc.cpu_percent(None)
                entry["threads"] = proc.num_threads()
                entry["fds"] = proc.num_fds()
                entry["cpus"] = sorted(proc.cpu_affinity())
        except psutil.Error:
            entry.update(rss_bytes=None, cpu_percent=None, threads=None, fds=None, cpus=None)
        return entry

    def _host(self) -> dict[str, Any]:
        mem = psutil.virtual_memory()
        load1, load5, load15 = os.getloadavg()
        host: dict[str, Any] = {
            "cpu_percent": psutil.cpu_percent(None),
            "cpu_count": psutil.cpu_count(),
            "load": [load1, load5, load15],
            "mem_total_bytes": mem.total,
            "mem_available_bytes": mem.available,
        }
        if self.data_dir is not None:
            try:
                disk = psutil.disk_usage(str(self.data_dir))
                host["disk_free_bytes"] = disk.free
                host["disk_total_bytes"] = disk.total
            except OSError:
                pass
        return host

    # -- component callbacks -----------------------------------------------------------------

    def init(self) -> None:
        self.attach("osup.counter", (), self.counter)
        psutil.cpu_percent(None)
        self.send_after(0.0, _Tick())

    @on_info(_Tick)
    def _on_tick(self, msg: _Tick) -> None:
        self.sample()
        self.send_after(self.period, _Tick())

    @on_cast(Execute)
    def _on_execute(self, request: Execute) -> None:
        self.execute(tuple(request.event), request.measurements, request.metadata)

    @on_call(Sample)
    def _on_sample(self, request: Sample, caller: Caller) -> Any:
        self.sample(lambda result: self.reply(caller, result))
        return NOREPLY

    @on_call(LatestSample)
    def _on_latest(self, request: LatestSample, caller: Caller) -> Any:
        return self.latest

    @on_call(Events)
    def _on_events(self, request: Events, caller: Caller) -> Any:
        return self.counter.events

    @on_call(Attach)
    def _on_attach(self, request: Attach, caller: Caller) -> bool:
        try:
            handler = _load_handler(request.target)
            self.attach(request.handler_id, tuple(request.prefix), handler)
        except (ImportError, AttributeError, TypeError, ValueError) as exc:
            raise CallError(f"cannot attach {request.target!r}: {exc}") from exc
        return True

    @on_call(Detach)
    def _on_detach(self, request: Detach, caller: Caller) -> bool:
        return self.detach(request.handler_id)


def _proc_name(proc: psutil.Process) -> str:
    try:
        return str(proc.name())
    except psutil.Error:
        return str(proc.pid)


def _load_handler(target: str) -> HandlerFn:
    """Resolve ``"package.module:function"`` to a handler."""
    module_name, _, attr = target.partition(":")
    fn = getattr(importlib.import_module(module_name), attr)
    if not callable(fn):
        raise TypeError(f"{target} is not callable")
    return fn  # type: ignore[no-any-return]
