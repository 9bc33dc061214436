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
* Liveness does not depend on how busy the agent is: a heartbeat thread stamps the agent's
  shared-memory slot while the main loop progresses (:mod:`osup_mp.agent.liveness`).
* A restore runs with the cyclic garbage collector paused: decoding and applying a long WAL
  tail allocates hundreds of thousands of containers that all stay alive, and each
  collection would walk them again (about half the restore's time). At ``ready`` the
  collector resumes and the restored objects are frozen out of its generations
  (``gc.freeze``): they are long-lived state, not garbage.
* Hot reload builds the new module beside the old one and swaps only when it imports and
  passes :meth:`Agent.validate_module` (:mod:`osup_mp.agent.frames`); if the new code raises
  later, :meth:`Agent.call_module` rolls back to the previous version and answers the
  request with it.

Split by concern, each a module: :mod:`.options` (what the manager told the agent),
:mod:`.process` (dying with the manager, the life lock, resident memory), :mod:`.liveness`
(heartbeats, the heartbeat thread, metrics) and :mod:`.frames` (what each frame from the
manager does) — the last two mixins of :class:`Agent`. This one is the agent as its author
sees it: the hooks, the helpers, and the loop that runs them; every public name of the SDK
is importable from here.
"""

from __future__ import annotations

import gc
import os
import selectors
import sys
import threading
import time
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from osup_mp.agent.frames import FrameHandlers, RequestError
from osup_mp.agent.liveness import Liveness, Window
from osup_mp.agent.options import AgentOptions
from osup_mp.agent.process import die_with_manager, hold_life_lock
from osup_mp.lowlevel.schedstat import RunDelay
from osup_mp.lowlevel.spin import Spinner
from osup_mp.wire import FrameDecoder, FrameError, FrameTooLarge, pack
from osup_mp.wire.frames import FromAgent

__all__ = ["Agent", "AgentOptions", "RequestError", "accepted_keywords", "run_agent"]

_READ_SIZE = 256 * 1024


class Agent(FrameHandlers, Liveness):
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
        self._window = Window()
        self._run_delay = RunDelay()  # this thread's; run() opens the serving thread's
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
        die_with_manager()
        self._life_lock = hold_life_lock()
        self._in_fd = sys.stdin.fileno()
        self._out_fd = os.dup(1)
        self._run_delay.close()
        self._run_delay = RunDelay()  # this thread's: it serves the requests
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


def run_agent(factory: Callable[[AgentOptions], Agent], argv: list[str] | None = None) -> int:
    """Entry-point helper: parse options, build the agent, run it."""
    return factory(AgentOptions.parse(argv)).run()


def accepted_keywords(function: Any) -> frozenset[str]:
    """The parameter names ``function`` (a plain Python function) accepts; empty for
    anything else."""
    code = getattr(function, "__code__", None)
    if code is None:
        return frozenset()
    return frozenset(code.co_varnames[: code.co_argcount + code.co_kwonlyargcount])
