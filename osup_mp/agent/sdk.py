"""Agent SDK: the protocol loop every Python agent shares.

Subclass :class:`Agent`, implement :meth:`Agent.handle_request` (and, for durable state,
:meth:`~Agent.snapshot`, :meth:`~Agent.restore`, :meth:`~Agent.apply_wal` and, to replay a
long WAL tail in bulk, :meth:`~Agent.apply_wal_batch`), call
:meth:`Agent.run`. The SDK does the rest of the protocol in ``docs/protocol.md``: framing on
stdin/stdout, ``ready``, heartbeats (as frames and in the agent's shared-memory slot), periodic
``metrics`` with the seed's names, pipelined ``process_request`` → ``response`` by id,
checkpoint and WAL messages, ``restore``, and ``hot_reload`` of named modules with rollback.

Design decisions:

* One thread, one ``selectors`` loop: every frame available is handled in one batch and all
  replies leave in one write, so many requests can be in flight from the manager.
* The real stdout is kept private for frames and fd 1 is pointed at stderr, so a stray
  ``print`` in agent code ends up in the log instead of corrupting the protocol stream.
* Liveness does not depend on how busy the agent is: with a shared-memory slot, a small
  daemon thread stamps the slot's heartbeat (``hb_agent_ns``, ``hb_counter``) on a timer,
  also while a long batch of requests runs. It stops stamping when the main loop has made
  no progress (no message handled, no loop turn) for ``OSUP_STALL_TIMEOUT_MS`` (default
  30 s), so an agent stuck in one handler is still reported hung. Heartbeat frames still
  leave between batches (managers without shared memory rely on them).
* A restore runs with the cyclic garbage collector paused: decoding and applying a long WAL
  tail allocates hundreds of thousands of containers that all stay alive, and each
  collection would walk them again (about half the restore's time). At ``ready`` the
  collector resumes and the restored objects are frozen out of its generations
  (``gc.freeze``): they are long-lived state, not garbage.
* Hot reload builds the new module beside the old one and swaps only when it imports and
  passes :meth:`Agent.validate_module`; if the new code raises later, the SDK rolls back to
  the previous version and answers the request with it.
"""

from __future__ import annotations

import argparse
import gc
import os
import selectors
import signal
import sys
import threading
import time
import traceback
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from osup_mp.lowlevel.spin import Spinner
from osup_mp.wire import DEFAULT_MAX_FRAME, FrameDecoder, FrameError, FrameTooLarge, launch, pack
from osup_mp.wire.frames import FromAgent, ToAgent

_READ_SIZE = 256 * 1024


class RequestError(Exception):
    """Raise from a handler to answer a request with an error message (not a crash)."""


@dataclass(slots=True)
class AgentOptions:
    """What the manager told the agent: command line and environment."""

    role: str = "main"
    restore_id: str | None = None
    elixir_mode: bool = False
    script: str | None = None
    instance_id: str = "main"
    shm_name: str | None = None
    shm_slot: int | None = None
    heartbeat_interval: float = 1.0
    metrics_interval: float = 5.0
    max_frame: int = DEFAULT_MAX_FRAME
    busy_poll_us: int = 0
    stall_timeout: float = 30.0
    extra: list[str] = field(default_factory=list)

    @classmethod
    def parse(
        cls, argv: list[str] | None = None, environ: Mapping[str, str] = os.environ
    ) -> AgentOptions:
        parser = argparse.ArgumentParser(add_help=False)
        parser.add_argument("script", nargs="?")
        parser.add_argument(launch.ROLE_FLAG, dest="role", default="main")
        parser.add_argument(launch.RESTORE_FLAG, dest="restore_id")
        parser.add_argument(launch.SEED_MODE_FLAG, dest="elixir_mode", action="store_true")
        ns, extra = parser.parse_known_args(argv)
        env = launch.LaunchEnv.from_env(environ)

        def given(value: int | None, default: int) -> int:
            return default if value is None else value

        return cls(
            role=ns.role,
            restore_id=ns.restore_id,
            elixir_mode=ns.elixir_mode,
            script=ns.script,
            instance_id=env.instance_id or ns.role,
            shm_name=env.shm_name,
            shm_slot=env.shm_slot,
            heartbeat_interval=given(env.heartbeat_interval_ms, 1000) / 1000,
            metrics_interval=given(env.metrics_interval_ms, 5000) / 1000,
            max_frame=given(env.max_frame, DEFAULT_MAX_FRAME),
            busy_poll_us=given(env.busy_poll_us, 0),
            stall_timeout=given(env.stall_timeout_ms, 30000) / 1000,
            extra=extra,
        )


class _Window:
    """Request figures since the last metrics report."""

    __slots__ = ("errors", "latency_total", "requests", "started")

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.latency_total = 0.0
        self.started = time.monotonic()


class Agent:
    """Base class for agents. Override the hooks; call :meth:`run`."""

    #: Module names that ``hot_reload`` may replace, mapped to their current module object.
    modules: dict[str, types.ModuleType]
    #: The module a ``hot_reload`` without a ``module`` field replaces.
    default_reload_module: str | None = None
    #: The requests that change nothing, by the value of their ``op`` field: declared in
    #: ``ready``, so that only these are ever mirrored to a shadow experiment.
    read_only_ops: frozenset[str] = frozenset()

    def __init__(self, options: AgentOptions | None = None) -> None:
        self.options = options or AgentOptions.parse()
        self.modules = {}
        self._previous: dict[str, types.ModuleType] = {}
        self._out = bytearray()
        self._rbuf = bytearray(_READ_SIZE)
        self._decoder = FrameDecoder(max_frame=self.options.max_frame, require_type=True)
        self._window = _Window()
        self._stop = False
        self._ready_sent = False
        self._life_lock = False  # held: ready says so (lowlevel.lifelock)
        self._timers: dict[str, float] = {}
        self.checkpoint_id: str | None = None
        self.shm: Any = None
        self._slot: Any = None
        self._out_fd = -1
        self._in_fd = -1
        self._progress = 0  # bumped by the main loop; the heartbeat thread watches it
        self._beater: threading.Thread | None = None
        self._gc_paused = False
        self._frames = self._frame_table()
        self._proposals = 0
        #: The newest main-agent WAL entry this (shadow) agent has applied from ``wal_apply``.
        self.applied_lsn = 0

    # -- hooks for subclasses ----------------------------------------------------------------

    def on_start(self) -> None:
        """Initialise state (before ``ready``; ``restore`` may follow when restoring)."""

    def handle_request(self, data: Any) -> Any:
        """Answer one ``process_request``; raise :class:`RequestError` for an error reply."""
        raise RequestError("this agent handles no requests")

    def snapshot(self) -> dict[str, Any]:
        """Checkpoint data (the seed's fields: agent_state, memory_blocks, tool_registry)."""
        return {"agent_state": {}, "memory_blocks": [], "tool_registry": {}}

    def restore(self, snapshot: Mapping[str, Any] | None) -> None:
        """Replace state with ``snapshot`` (None: start empty)."""

    def apply_wal(self, entry: Mapping[str, Any]) -> None:
        """Re-apply one logged operation during restore."""

    def apply_wal_batch(self, entries: Sequence[Mapping[str, Any]]) -> None:
        """Re-apply the logged operations of one ``restore`` frame, oldest first.

        The default calls :meth:`apply_wal` for each entry; override it to apply a long
        WAL tail in bulk (and build derived state once per batch, not once per entry).
        The result must be the same as applying the entries one by one."""
        for entry in entries:
            self.apply_wal(entry)

    def validate_module(self, name: str, module: types.ModuleType) -> None:
        """Raise if a hot-reloaded module is unusable (missing functions, failing self-test)."""

    def on_checkpoint_ack(self, msg: Mapping[str, Any]) -> None:
        """The supervisor stored (or could not store) a checkpoint."""

    def on_evolution_result(self, msg: Mapping[str, Any]) -> None:
        """The answer to a :meth:`propose` (``id``, ``success``, and ``error`` or the
        verdict's fields)."""

    def on_promote(self) -> None:
        """This standby has become the main agent (``options.role`` is now ``"main"``):
        from here on it serves requests and logs its writes. Nothing to do by default."""

    def on_message(self, msg: Mapping[str, Any]) -> None:
        """Any other message (wal_flush_ack, wal_ack, additions)."""

    def after_batch(self) -> None:
        """Called after each batch of messages (e.g. publish shared state once per batch)."""

    # -- helpers for subclasses --------------------------------------------------------------

    def send(self, msg: Mapping[str, Any]) -> None:
        """Queue one frame to the manager; it leaves at the end of the batch."""
        self._out += pack(msg, max_frame=self.options.max_frame)

    def log(self, text: str) -> None:
        """A line for the supervisor's log (stderr is collected there)."""
        sys.stderr.write(text.rstrip("\n") + "\n")
        sys.stderr.flush()

    def wal(self, operation: str, params: Mapping[str, Any], **extra: Any) -> None:
        """Log one state-changing operation (the seed's ``wal_entry``)."""
        entry = {"operation": operation, "params": dict(params), "timestamp": time.time()}
        self.send({"type": FromAgent.WAL_ENTRY.value, "data": entry, **extra})

    def checkpoint(self) -> None:
        """Send a checkpoint of :meth:`snapshot`; ``checkpoint_ack`` arrives later. A
        snapshot too large for a frame is not sent: the manager is told why instead, and the
        agent serves on (its state stays safe in the WAL)."""
        try:
            frame = pack(
                {"type": FromAgent.CHECKPOINT.value, "data": self.snapshot()},
                max_frame=self.options.max_frame,
            )
        except FrameTooLarge as exc:
            error = f"snapshot too large to send: {exc}; raise [agent] max_frame"
            self.log(f"checkpoint not sent: {error}")
            self.send({"type": FromAgent.CHECKPOINT.value, "data": None, "error": error})
            return
        self._out += frame

    def module(self, name: str) -> types.ModuleType:
        return self.modules[name]

    def call_module(self, name: str, function: str, *args: Any, **kwargs: Any) -> Any:
        """Call ``modules[name].function``; if hot-reloaded code raises, roll back and retry."""
        try:
            return getattr(self.modules[name], function)(*args, **kwargs)
        except RequestError:
            raise
        except Exception as exc:
            previous = self._previous.pop(name, None)
            if previous is None:
                raise
            self.modules[name] = previous
            self.log(f"hot-reloaded {name}.{function} raised {exc!r}: rolled back")
            self.send(
                {
                    "type": FromAgent.RELOAD_RESULT,
                    "ok": False,
                    "module": name,
                    "error": f"rolled back after {type(exc).__name__}: {exc}",
                }
            )
            retry = getattr(previous, function)
            known = accepted_keywords(retry)  # the new code may take more than the old
            return retry(*args, **{k: v for k, v in kwargs.items() if k in known})

    # -- the loop ----------------------------------------------------------------------------

    def run(self) -> int:
        """Serve until stdin closes or the manager stops us; return the exit status."""
        _die_with_manager()
        self._life_lock = _hold_life_lock()
        self._in_fd = sys.stdin.fileno()
        self._out_fd = os.dup(1)
        os.dup2(2, 1)  # stray prints go to stderr, never into the frame stream
        sys.stdout = sys.stderr
        os.set_blocking(self._in_fd, False)
        self._attach_shm()
        self._start_heartbeat_thread()
        self.on_start()
        if self.options.restore_id is None:
            self._send_ready()
        else:
            self._pause_gc()
        now = time.monotonic()
        self._timers = {"heartbeat": now, "metrics": now + self.options.metrics_interval}
        sel = selectors.DefaultSelector()
        sel.register(self._in_fd, selectors.EVENT_READ)
        spinner = Spinner(self.options.busy_poll_us)
        while not self._stop:
            self._progress += 1
            self._run_timers()
            self._flush()
            due = [t for name, t in self._timers.items() if name != "heartbeat" or self._ready_sent]
            timeout = max(0.0, min(due) - time.monotonic()) if due else None
            if spinner.wait(sel.select, timeout) and not self._read_input():
                break
            self._flush()  # answers first: after_batch may take time (a publish)
            self.after_batch()
        self._flush()
        return 0

    def _read_input(self) -> bool:
        """Handle everything readable; False at EOF (the manager is gone)."""
        try:
            size = os.readv(self._in_fd, [self._rbuf])  # reused: no 256 KiB bytes per read
        except BlockingIOError:
            return True
        if not size:
            return False
        try:
            messages = self._decoder.feed(memoryview(self._rbuf)[:size])
        except FrameError as exc:
            self.log(f"malformed frame from the manager: {exc}")
            raise SystemExit(2) from exc
        for msg in messages:
            self._dispatch(msg)
            self._progress += 1
        return True

    def _dispatch(self, msg: dict[str, Any]) -> None:
        handler = self._frames.get(msg["type"])
        if handler is None:
            self.on_message(msg)  # a frame type this SDK does not know: the subclass may
        else:
            handler(msg)

    def _frame_table(self) -> dict[str, Callable[[dict[str, Any]], None]]:
        """What each frame type from the manager does (docs/protocol.md). Keyed by the plain
        strings: a lookup with the ``"type"`` a frame carries is then an exact-type hit."""
        table: dict[ToAgent, Callable[[dict[str, Any]], None]] = {
            ToAgent.PROCESS_REQUEST: self._on_request,
            ToAgent.RESTORE: self._on_restore,
            ToAgent.HOT_RELOAD: self._on_hot_reload,
            ToAgent.CHECKPOINT_ACK: self._on_checkpoint_ack,
            ToAgent.CHECKPOINT_REQUEST: lambda _msg: self.checkpoint(),
            ToAgent.STOP: self._on_stop,
            ToAgent.EVOLUTION_RESULT: self.on_evolution_result,
            ToAgent.WAL_APPLY: self._on_wal_apply,
            ToAgent.PROMOTE: self._on_promote,
        }
        return {kind.value: handler for kind, handler in table.items()}

    def _on_checkpoint_ack(self, msg: dict[str, Any]) -> None:
        self.checkpoint_id = msg.get("checkpoint_id") or self.checkpoint_id
        self.on_checkpoint_ack(msg)

    def _on_stop(self, msg: dict[str, Any]) -> None:
        self._stop = True

    def _on_wal_apply(self, msg: dict[str, Any]) -> None:
        """A shadow or standby follows the main's writes: apply them as a restore would."""
        entries = msg.get("wal_entries")
        if isinstance(entries, list) and entries:
            self.apply_wal_batch(entries)
            self.applied_lsn = int(msg.get("lsn", 0)) + len(entries) - 1
            self._mark_applied()
            if self.options.role == "standby":
                # Like a restore's state, what it applies is long-lived: no collection walks
                # it (one would, at some first request after a promotion, for milliseconds).
                gc.freeze()

    def _mark_applied(self) -> None:
        """Tell the manager, through the slot, how far this follower has applied (a
        standby's lag is read there, without a frame)."""
        if self._slot is not None:
            self._slot["applied_lsn"] = self.applied_lsn

    def _on_promote(self, msg: dict[str, Any]) -> None:
        """The main died and this standby takes its place, and its slot."""
        slot = msg.get("slot")
        if self.shm is not None and type(slot) is int:
            self.options.shm_slot = slot
            self._slot = self.shm.slot(slot)  # the heartbeat thread reads it on every beat
        self.options.role = "main"
        self.log(f"promoted to main (LSN {self.applied_lsn})")
        self.on_promote()

    def _on_request(self, msg: dict[str, Any]) -> None:
        started = time.perf_counter()
        reply: dict[str, Any] = {"type": FromAgent.RESPONSE.value, "id": msg.get("id")}
        try:
            reply["data"] = self.handle_request(msg.get("data"))
        except RequestError as exc:
            reply["error"] = str(exc)
            self._window.errors += 1
        except Exception as exc:
            reply["error"] = f"{type(exc).__name__}: {exc}"
            self._window.errors += 1
            self.log(f"request failed: {traceback.format_exc().rstrip()}")
        took = time.perf_counter() - started
        window = self._window
        window.requests += 1
        window.latency_total += took
        if msg.get("timed"):  # the manager asks (for an evaluation): how long the handling took
            reply["took_ms"] = took * 1000
        self.send(reply)

    def _on_restore(self, msg: dict[str, Any]) -> None:
        # A long WAL tail arrives as one restore frame followed by "continue" frames.
        if not msg.get("continue"):
            self.restore(msg.get("snapshot"))
            self.checkpoint_id = msg.get("checkpoint_id") or self.checkpoint_id
            self.applied_lsn = int(msg.get("lsn") or 0)
        entries = msg.get("wal_entries")
        if entries:
            self.apply_wal_batch(entries)
            self.applied_lsn += len(entries)  # a restore's entries are consecutive
        if not msg.get("more"):
            self._mark_applied()
            self._send_ready()

    def _on_hot_reload(self, msg: dict[str, Any]) -> None:
        name = msg.get("module") or self.default_reload_module
        code = msg.get("code")
        if not isinstance(name, str) or name not in self.modules:
            known = ", ".join(sorted(self.modules)) or "none"
            reply = {"ok": False, "error": f"no reloadable module {name!r} (reloadable: {known})"}
        elif not isinstance(code, str):
            reply = {"ok": False, "error": "hot_reload needs the module source in 'code'"}
        else:
            reply = self._reload(name, code)
        self.send({"type": FromAgent.RELOAD_RESULT, "module": name, **reply})

    def _reload(self, name: str, code: str) -> dict[str, Any]:
        module = types.ModuleType(name)
        module.__file__ = f"<hot_reload {name}>"
        try:
            exec(compile(code, module.__file__, "exec"), module.__dict__)
            self.validate_module(name, module)
        except Exception as exc:
            self.log(f"hot_reload of {name} rejected: {type(exc).__name__}: {exc}")
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        self._previous[name] = self.modules[name]
        self.modules[name] = module
        self.log(f"hot_reload of {name}: new code active (previous kept for rollback)")
        return {"ok": True}

    @property
    def ready(self) -> bool:
        """``ready`` was sent: start-up (and any restore) is over."""
        return self._ready_sent

    def propose(self, new_code: str, target: str, reason: str = "") -> str:
        """Propose ``new_code`` for module ``target`` (the seed's ``evolution_intent``);
        the answer comes to :meth:`on_evolution_result` with the id returned here."""
        self._proposals += 1
        proposal_id = f"{os.getpid()}-{self._proposals}"
        hypothesis = {"reason": reason, "target": target, "new_code": new_code}
        self.send({"type": FromAgent.EVOLUTION_INTENT, "id": proposal_id, "hypothesis": hypothesis})
        return proposal_id

    def _send_ready(self) -> None:
        if not self._ready_sent:
            self._ready_sent = True
            self._resume_gc()
            ready = {"type": FromAgent.READY, "pid": os.getpid(), "role": self.options.role}
            if self.read_only_ops:
                ready["read_only"] = sorted(self.read_only_ops)
            if self._life_lock:
                ready["life_lock"] = True
            self.send(ready)

    def _pause_gc(self) -> None:
        """No cyclic garbage collection while a restore is decoded and applied: it only
        allocates what it keeps, and every collection would walk all of it again."""
        if gc.isenabled():
            gc.disable()
            self._gc_paused = True

    def _resume_gc(self) -> None:
        if self._gc_paused:
            self._gc_paused = False
            gc.freeze()  # the restored state is long-lived: later collections skip it
            gc.enable()

    # -- heartbeats, metrics, shared memory --------------------------------------------------

    def _attach_shm(self) -> None:
        if self.options.shm_name is None or self.options.shm_slot is None:
            return
        from osup_mp.storage.shm.segment import SharedState, ShmError

        try:
            self.shm = SharedState.attach(self.options.shm_name)
        except ShmError as exc:
            self.log(f"shared memory unavailable, heartbeats by frame only: {exc}")
            return
        self._slot = self.shm.slot(self.options.shm_slot)

    def _run_timers(self) -> None:
        now = time.monotonic()
        # No heartbeat before ready: a seed-style manager would take it for "ready", and a
        # restore must finish within the ready timeout, not race the heartbeat timeout.
        if self._ready_sent and now >= self._timers.get("heartbeat", now + 1):
            self._heartbeat()
            self._timers["heartbeat"] = now + self.options.heartbeat_interval
        if now >= self._timers.get("metrics", now + 1):
            self.send({"type": FromAgent.METRICS, "data": self.metrics()})
            self._timers["metrics"] = now + self.options.metrics_interval

    def _heartbeat(self) -> None:
        self.send({"type": FromAgent.HEARTBEAT.value, "timestamp": time.time()})
        slot = self._slot
        if slot is not None and self._beater is None:  # else the thread is the one writer
            slot["hb_agent_ns"] = time.monotonic_ns()
            slot["hb_counter"] += 1

    def _start_heartbeat_thread(self) -> None:
        if self._slot is None or self._beater is not None:
            return
        self._beater = threading.Thread(
            target=self._beat_forever, name="osup-heartbeat", daemon=True
        )
        self._beater.start()

    def _beat_forever(self) -> None:
        """The heartbeat thread: stamp the slot every interval while the loop progresses."""
        interval = self.options.heartbeat_interval
        seen, seen_at = -1, time.monotonic()
        while not self._stop:
            now = time.monotonic()
            if self._progress != seen:
                seen, seen_at = self._progress, now
            # No heartbeat before ready (see _run_timers), none once the loop is stuck.
            if self._ready_sent and now - seen_at <= self.options.stall_timeout:
                slot = self._slot  # a promotion moves it
                slot["hb_agent_ns"] = time.monotonic_ns()
                slot["hb_counter"] += 1
            time.sleep(interval / 2)  # twice per interval: a late wake-up is still in time

    def metrics(self) -> dict[str, Any]:
        """The seed's metrics over the last window; also written to the shm slot."""
        window, self._window = self._window, _Window()
        elapsed = max(time.monotonic() - window.started, 1e-9)
        avg_ms = window.latency_total / window.requests * 1000 if window.requests else 0.0
        rss = _rss_bytes()
        slot = self._slot
        if slot is not None:
            slot["requests"] += window.requests
            slot["errors"] += window.errors
            slot["latency_us"] = avg_ms * 1000
            slot["rss_bytes"] = rss
        return {
            "avg_latency": avg_ms,
            "error_rate": window.errors / window.requests if window.requests else 0.0,
            "memory_usage": rss,
            "throughput": window.requests / elapsed,
            "requests": window.requests,
        }

    def _flush(self) -> None:
        out = self._out
        while out:
            try:
                n = os.write(self._out_fd, out)
            except BlockingIOError:
                continue
            except BrokenPipeError:
                self._stop = True
                out.clear()
                return
            del out[:n]


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def run_agent(factory: Callable[[AgentOptions], Agent], argv: list[str] | None = None) -> int:
    """Entry-point helper: parse options, build the agent, run it."""
    return factory(AgentOptions.parse(argv)).run()


def _die_with_manager() -> None:
    """SIGKILL this agent when its manager dies. The manager spawns the main agent without a
    pre-exec hook (that keeps the spawn on the fast ``vfork`` path), so the SDK asks the
    kernel itself; a manager that died before this call is caught by its pid."""
    manager = launch.LaunchEnv.from_env(os.environ).manager_pid
    if manager is None:
        return
    from osup_mp.lowlevel.proc import set_parent_death_signal

    set_parent_death_signal(signal.SIGKILL)
    if os.getppid() != manager:
        os._exit(1)


def _hold_life_lock() -> bool:
    """Hold the life lock the manager passed (``OSUP_LIFE_LOCK_FD``), from this, the main
    thread, for as long as the agent lives: the manager then acts on its death before the
    kernel has freed its memory. Without one the manager waits for the kernel."""
    fd = launch.LaunchEnv.from_env(os.environ).life_lock_fd
    if fd is None:
        return False
    from osup_mp.lowlevel.lifelock import hold

    try:
        hold(fd)
    except OSError as exc:
        print(f"agent: life lock not held ({exc})", file=sys.stderr, flush=True)
        return False
    return True


def accepted_keywords(function: Any) -> frozenset[str]:
    """The parameter names ``function`` (a plain Python function) accepts; empty for
    anything else."""
    code = getattr(function, "__code__", None)
    if code is None:
        return frozenset()
    return frozenset(code.co_varnames[: code.co_argcount + code.co_kwonlyargcount])
