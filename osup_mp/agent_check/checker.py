"""The checks themselves: :class:`AgentChecker` drives one agent through the protocol, check
by check, over an :class:`~.session.AgentSession` (what each check asks and accepts: the
package's docstring).

Decision: every check returns the text that explains its verdict (or raises
:class:`~.session.CheckFailed` with it), so a report says why, not only whether.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from osup_mp.agent_check.plan import (
    CHECKS,
    EMPTY_SNAPSHOT,
    HEARTBEAT_GAP_FACTOR,
    MIN_HEARTBEATS,
    RELOAD_CODE,
    REQUEST_BURST,
    CheckResult,
)
from osup_mp.agent_check.session import (
    AgentGone,
    AgentSession,
    CheckFailed,
    Frame,
    StreamBroken,
)
from osup_mp.lowlevel.proc import describe_exit
from osup_mp.wire import DEFAULT_MAX_FRAME
from osup_mp.wire.frames import FromAgent, ToAgent
from osup_mp.wire.launch import LaunchEnv, agent_args

_LIST_MAX = 10


def _limited(values: Sequence[Any]) -> str:
    """``[a, b, ...]`` with at most ``_LIST_MAX`` items shown."""
    shown = ", ".join(repr(v) for v in values[:_LIST_MAX])
    more = len(values) - _LIST_MAX
    return f"[{shown}, ... {more} more]" if more > 0 else f"[{shown}]"


@dataclass(slots=True)
class _Answers:
    """What came back for a batch of request ids."""

    missing: list[int]
    unexpected: list[Any] = field(default_factory=list)
    errors: int = 0
    elapsed: float = 0.0


class AgentChecker:
    """Runs every check in :data:`CHECKS` against one agent command.

    ``argv`` is the agent command *without* the seed's ``--role main --elixir-mode``, which
    the checker appends. ``timeout`` is the time allowed per check in seconds.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        timeout: float = 5.0,
        heartbeat_interval_ms: int = 1000,
        env: Mapping[str, str] | None = None,
        max_frame: int = DEFAULT_MAX_FRAME,
    ) -> None:
        if not argv:
            raise ValueError("no agent command given")
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0, got {timeout}")
        if heartbeat_interval_ms < 1:
            raise ValueError(f"heartbeat interval must be >= 1 ms, got {heartbeat_interval_ms}")
        self.argv = [*argv, *agent_args("main")]
        self.timeout = timeout
        self.heartbeat_interval = heartbeat_interval_ms / 1000
        # A tree's segment and manager, inherited from a shell an agent started, stay out.
        leave_out = LaunchEnv(shm_name="", shm_slot=0, manager_pid=0).to_env().keys()
        environ = dict(os.environ if env is None else env)
        for name in leave_out:
            environ.pop(name, None)
        given = LaunchEnv(
            instance_id="main", heartbeat_interval_ms=heartbeat_interval_ms, max_frame=max_frame
        )
        environ.update(given.to_env())
        self.session = AgentSession(self.argv, environ, max_frame=max_frame)
        self._ids = iter(range(1, 1 << 62))
        self._issued: set[int] = set()
        self._start_frame: Frame | None = None
        self._checkpoint: tuple[str, dict[str, Any]] | None = None
        self._gone_during: str | None = None

    def run(self) -> list[CheckResult]:
        """Run every check; the agent is killed and reaped whatever happens.

        Raises :class:`AgentStartError` if the executable cannot be started at all.
        """
        session = self.session
        results: dict[str, CheckResult] = {}
        steps: list[tuple[str, Callable[[], str]]] = [
            ("starts", self.check_starts),
            ("heartbeats", self.check_heartbeats),
            ("requests", self.check_requests),
            ("checkpoint", self.check_checkpoint),
            ("hot_reload", self.check_hot_reload),
            ("restore", self.check_restore),
            ("shutdown", self.check_shutdown),
        ]
        try:
            session.start()
            for name, step in steps:
                results[name] = self._run_step(name, step)
            results["frames"] = self._frames_result()
        finally:
            session.close()
        return [results[name] for name in CHECKS]

    def _run_step(self, name: str, step: Callable[[], str]) -> CheckResult:
        session = self.session
        if name != "starts":
            if session.gone_reason is not None and (
                name != "shutdown" or session.exit_code is not None
            ):
                return CheckResult(name, False, f"cannot run: {self._gone_text()}")
            if self._start_frame is None and name != "shutdown":
                return CheckResult(name, False, "cannot run: the agent never started")
            if session.frame_error is not None and name != "shutdown":
                return CheckResult(
                    name, False, "cannot run: the agent's frame stream is broken (see frames)"
                )
        try:
            return CheckResult(name, True, step())
        except StreamBroken:
            return CheckResult(name, False, "the agent's frame stream is broken (see frames)")
        except AgentGone:
            self._gone_during = name
            return CheckResult(name, False, self._gone_text())
        except CheckFailed as exc:
            return CheckResult(name, False, str(exc))

    def _gone_text(self) -> str:
        """How the agent went away: exit status, the check that noticed, last stderr line."""
        text = self.session.gone_reason or "agent exited"
        if self._gone_during:
            text += f" during {self._gone_during}"
        stderr = self.session.last_stderr()
        return f"{text} (last stderr line: {stderr})" if stderr else text

    def _frames_result(self) -> CheckResult:
        session = self.session
        error = session.frame_error or session.truncated_frame()
        if error is not None:
            return CheckResult("frames", False, error)
        return CheckResult("frames", True, f"{len(session.frames)} frames, all well formed")

    # -- 1. starts ---------------------------------------------------------------------------

    def check_starts(self) -> str:
        started = time.monotonic()
        frame = self.session.expect(
            lambda m: m["type"] in (FromAgent.READY, FromAgent.HEARTBEAT), self.timeout
        )
        if frame is None:
            raise CheckFailed(f"no ready (or heartbeat) within {self.timeout:g} s")
        self._start_frame = frame
        return f"{frame.type} after {(frame.at - started) * 1000:.0f} ms"

    # -- 3. heartbeats -----------------------------------------------------------------------

    def check_heartbeats(self) -> str:
        """Wait for MIN_HEARTBEATS heartbeats; fail as soon as a gap grows over the limit."""
        assert self._start_frame is not None
        session = self.session
        interval = self.heartbeat_interval
        limit = HEARTBEAT_GAP_FACTOR * interval
        start = self._start_frame.at
        deadline = time.monotonic() + max(self.timeout, MIN_HEARTBEATS * limit)
        rule = f"limit {HEARTBEAT_GAP_FACTOR:g} x {interval * 1000:g} ms = {limit * 1000:g} ms"
        while True:
            beats = [
                f.at for f in session.frames if f.type == FromAgent.HEARTBEAT and f.at >= start
            ]
            previous = start
            longest = 0.0
            for n, at in enumerate(beats[:MIN_HEARTBEATS], 1):
                gap = at - previous
                if gap > limit:
                    where = "the start" if n == 1 else f"heartbeat {n - 1}"
                    raise CheckFailed(
                        f"heartbeat {n} came {gap * 1000:.0f} ms after {where} ({rule})"
                    )
                longest = max(longest, gap)
                previous = at
            if len(beats) >= MIN_HEARTBEATS:
                return f"{MIN_HEARTBEATS} heartbeats, longest gap {longest * 1000:.0f} ms"
            now = time.monotonic()
            if now - previous > limit or now >= deadline:
                since = "the start" if not beats else f"heartbeat {len(beats)}"
                raise CheckFailed(
                    f"{len(beats)} of {MIN_HEARTBEATS} heartbeats: none for "
                    f"{(now - previous) * 1000:.0f} ms after {since} ({rule})"
                )
            wait = min(deadline, previous + limit) - now
            session.expect(lambda m: m["type"] == FromAgent.HEARTBEAT, wait + 0.001)

    # -- 4. requests -------------------------------------------------------------------------

    def check_requests(self) -> str:
        ids = self._new_ids(REQUEST_BURST)
        self.session.send(*(self._request(i) for i in ids))
        answers = self._collect(ids, self.timeout)
        if answers.missing or answers.unexpected:
            raise CheckFailed(self._describe_failure(ids, answers))
        return (
            f"{len(ids)} of {len(ids)} answered in {answers.elapsed * 1000:.1f} ms "
            f"({answers.errors} error responses)"
        )

    # -- 5. checkpoint -----------------------------------------------------------------------

    def check_checkpoint(self) -> str:
        session = self.session
        session.send({"type": ToAgent.CHECKPOINT_REQUEST})
        frame = session.expect(lambda m: m["type"] == FromAgent.CHECKPOINT, self.timeout)
        if frame is None:
            raise CheckFailed(f"no checkpoint frame within {self.timeout:g} s")
        data = frame.msg.get("data")
        if not isinstance(data, dict):
            raise CheckFailed(f"checkpoint 'data' is {_kind(data)}, not a map")
        checkpoint_id = str(uuid.uuid4())
        session.send(
            {
                "type": ToAgent.CHECKPOINT_ACK,
                "checkpoint_id": checkpoint_id,
                "timestamp": int(time.time()),
            }
        )
        self._checkpoint = (checkpoint_id, data)
        self._still_answers("after checkpoint_ack")
        keys = ", ".join(sorted(map(str, data))) or "no keys"
        return f"checkpoint ({keys}) acknowledged as {checkpoint_id}"

    # -- 6. hot_reload -----------------------------------------------------------------------

    def check_hot_reload(self) -> str:
        session = self.session
        session.send({"type": ToAgent.HOT_RELOAD, "code": RELOAD_CODE, "timestamp": time.time()})
        frame = session.expect(lambda m: m["type"] == FromAgent.RELOAD_RESULT, self.timeout)
        if frame is None:
            raise CheckFailed(f"no reload_result within {self.timeout:g} s")
        ok = frame.msg.get("ok")
        if not isinstance(ok, bool):
            raise CheckFailed(f"reload_result 'ok' is {_kind(ok)}, not a boolean")
        self._still_answers("after hot_reload")
        if ok:
            return "reload accepted"
        return f"reload rejected: {frame.msg.get('error')}"

    # -- 7. restore --------------------------------------------------------------------------

    def check_restore(self) -> str:
        session = self.session
        if self._checkpoint is not None:
            checkpoint_id: str | None
            checkpoint_id, snapshot = self._checkpoint
            note = f"checkpoint {checkpoint_id} restored"
        else:
            checkpoint_id, snapshot = None, EMPTY_SNAPSHOT
            note = "an empty snapshot restored (the checkpoint check produced none)"
        first = len(session.frames)
        session.send(
            {
                "type": ToAgent.RESTORE,
                "checkpoint_id": checkpoint_id,
                "snapshot": snapshot,
                "wal_entries": [],
            }
        )
        self._still_answers("after restore")
        if any(f.type == FromAgent.READY for f in session.frames[first:]):
            note += ", ready sent again"
        return note

    # -- 8. shutdown -------------------------------------------------------------------------

    def check_shutdown(self) -> str:
        session = self.session
        session.close_stdin()
        code = session.wait_exit(self.timeout)
        if code is None:
            raise CheckFailed(f"still running {self.timeout:g} s after its stdin was closed")
        if code < 0:
            raise CheckFailed(f"{describe_exit(code)} after its stdin was closed")
        return describe_exit(code)

    # -- requests ----------------------------------------------------------------------------

    def _new_ids(self, count: int) -> list[int]:
        ids = [next(self._ids) for _ in range(count)]
        self._issued.update(ids)
        return ids

    @staticmethod
    def _request(req_id: int) -> dict[str, Any]:
        return {"type": ToAgent.PROCESS_REQUEST, "id": req_id, "data": {"op": "stats"}}

    def _collect(self, ids: Sequence[int], timeout: float) -> _Answers:
        """Wait for responses to ``ids``; stop early once as many answers as ids arrived."""
        started = time.monotonic()
        answers = _Answers(missing=[])
        pending = set(ids)
        counted = 0

        def is_last(msg: dict[str, Any]) -> bool:
            nonlocal counted
            if msg["type"] != FromAgent.RESPONSE:
                return False
            rid = msg.get("id")
            if type(rid) is int and rid in pending:
                pending.discard(rid)
                answers.errors += "error" in msg
                counted += 1
            elif type(rid) is int and rid in self._issued:
                return False  # a late or repeated answer to an earlier request
            else:
                answers.unexpected.append(rid)
                counted += 1
            return not pending or counted >= len(ids)

        self.session.expect(is_last, timeout)
        answers.missing = sorted(pending)
        answers.elapsed = time.monotonic() - started
        return answers

    def _describe_failure(self, ids: Sequence[int], answers: _Answers) -> str:
        parts = [
            f"{len(answers.missing)} of {len(ids)} requests unanswered "
            f"(ids sent {ids[0]}..{ids[-1]})"
        ]
        if answers.missing:
            parts.append(f"missing ids {_limited(answers.missing)}")
        if answers.unexpected:
            parts.append(f"responses with unknown ids {_limited(answers.unexpected)}")
        return "; ".join(parts)

    def _still_answers(self, when: str) -> None:
        ids = self._new_ids(1)
        self.session.send(self._request(ids[0]))
        answers = self._collect(ids, self.timeout)
        if answers.missing or answers.unexpected:
            detail = f"no response to process_request id {ids[0]} within {self.timeout:g} s"
            if answers.unexpected:
                detail = f"response with unknown id {answers.unexpected[0]!r} to id {ids[0]}"
            raise CheckFailed(f"{when}: {detail}")


def _kind(value: object) -> str:
    return "missing" if value is None else f"a {type(value).__name__}"


def run_checks(
    argv: Sequence[str],
    *,
    timeout: float = 5.0,
    heartbeat_interval_ms: int = 1000,
    env: Mapping[str, str] | None = None,
) -> list[CheckResult]:
    """Run every check against ``argv`` (see :class:`AgentChecker`)."""
    checker = AgentChecker(
        argv, timeout=timeout, heartbeat_interval_ms=heartbeat_interval_ms, env=env
    )
    return checker.run()
