"""Drive one agent process over the wire protocol, recording every frame it sends.

:class:`AgentSession` is the transport half of ``agent-check`` (:mod:`osup_mp.agent_check`):
one thread and one ``selectors`` loop over non-blocking pipes plus a pidfd. The agent's
stdout is decoded as it arrives and every frame is recorded with its arrival time; its
stderr is drained on every wake-up (a short tail is kept for failure reasons) so the agent
never blocks on a full pipe; output to the agent is written only when its stdin is writable.
A malformed frame breaks the stream for good and is kept with its byte offset. The agent
runs in its own session with ``PR_SET_PDEATHSIG``, and :meth:`AgentSession.close` kills the
whole process group and reaps it.
"""

from __future__ import annotations

import os
import selectors
import subprocess
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from osup_mp.lowlevel.proc import (
    close_pipes,
    describe_exit,
    die_with_parent,
    signal_group,
    spawn_piped,
)
from osup_mp.wire import DEFAULT_MAX_FRAME, HEADER, FrameDecoder, FrameError, pack

_READ_SIZE = 64 * 1024  # os.read allocates this much per call first
_READS_PER_WAKEUP = 16  # more than a full pipe buffer, so an exited agent is drained at once
_STDERR_LINES = 20
_STDERR_LINE_MAX = 500


# --------------------------------------------------------------------------
# Frames and errors
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame received from the agent and when (``time.monotonic()``)."""

    at: float
    msg: dict[str, Any]

    @property
    def type(self) -> str:
        kind: str = self.msg["type"]
        return kind


class CheckFailed(Exception):
    """A check failed; the message is the reason shown after ``FAIL <check>:``."""


class AgentGone(CheckFailed):
    """The agent exited (or closed its stdout) while a check needed it."""


class StreamBroken(CheckFailed):
    """The agent sent a malformed frame; nothing after it can be decoded."""


class AgentStartError(OSError):
    """The executable could not be started at all (a usage error, not a failed check)."""


# --------------------------------------------------------------------------
# The agent process
# --------------------------------------------------------------------------


class AgentSession:
    """One agent subprocess spoken to through framed MessagePack on its stdin/stdout."""

    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        *,
        max_frame: int = DEFAULT_MAX_FRAME,
        pre_exec: Callable[[], None] = die_with_parent,
    ) -> None:
        self.argv = list(argv)
        self.pre_exec = pre_exec  # runs in the child before exec (rlimits, say)
        self.env = dict(env)
        self.frames: list[Frame] = []
        self.frame_error: str | None = None
        self.exit_code: int | None = None
        self.gone_reason: str | None = None
        self.stdout_eof = False
        self._decoder = FrameDecoder(max_frame=max_frame, require_type=True)
        self._tail = bytearray()  # the bytes of the incomplete frame the decoder holds
        self._boundary = 0  # stream offset of _tail[0] (the start of the next frame)
        self._fed = 0  # bytes of stdout decoded so far
        self._cursor = 0  # frames before it have been offered to an expect() predicate
        self._out = bytearray()
        self._stderr_partial = bytearray()
        self._stderr_eof = False
        self._stderr_tail: deque[str] = deque(maxlen=_STDERR_LINES)
        self._proc: subprocess.Popen[bytes] | None = None
        self._selector: selectors.BaseSelector | None = None
        self._pidfd = -1
        self._stdin_fd = -1
        self._stdin_watched = False

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the agent; :class:`AgentStartError` if the executable cannot be run."""
        try:
            proc = spawn_piped(self.argv, self.env, pre_exec=self.pre_exec)
        except OSError as exc:
            raise AgentStartError(exc.errno, f"cannot start {self.argv[0]!r}: {exc}") from exc
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        self._proc = proc
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            os.set_blocking(stream.fileno(), False)
        self._stdin_fd = proc.stdin.fileno()
        self._pidfd = os.pidfd_open(proc.pid)
        selector = selectors.DefaultSelector()
        selector.register(proc.stdout.fileno(), selectors.EVENT_READ, "stdout")
        selector.register(proc.stderr.fileno(), selectors.EVENT_READ, "stderr")
        selector.register(self._pidfd, selectors.EVENT_READ, "exit")
        self._selector = selector

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def close_stdin(self) -> None:
        """Close the agent's stdin (its signal to shut down); unsent output is dropped."""
        self._out.clear()
        self._unwatch_stdin()
        proc = self._proc
        if proc is not None and proc.stdin is not None and not proc.stdin.closed:
            self._stdin_fd = -1
            try:
                proc.stdin.close()
            except OSError:
                pass

    def wait_exit(self, timeout: float) -> int | None:
        """Keep draining the agent's output until it exits; its exit code, or None."""
        deadline = time.monotonic() + timeout
        while self.exit_code is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self._pump(remaining)
        return self.exit_code

    def close(self) -> None:
        """Kill the agent's process group, reap it and release every descriptor."""
        proc = self._proc
        if proc is not None:
            signal_group(proc.pid)  # the agent and anything it left behind in its session
            if proc.returncode is None:
                proc.wait()
            close_pipes(proc)
        if self._selector is not None:
            self._selector.close()
            self._selector = None
        if self._pidfd >= 0:
            os.close(self._pidfd)
            self._pidfd = -1

    # -- talking -----------------------------------------------------------------------------

    def send(self, *messages: Mapping[str, Any]) -> None:
        """Queue frames for the agent and write as much as its stdin takes now."""
        for msg in messages:
            self._out += pack(msg, max_frame=self._decoder.max_frame)
        self._write()

    def expect(self, predicate: Callable[[dict[str, Any]], bool], timeout: float) -> Frame | None:
        """The first new frame for which ``predicate`` is true, or None after ``timeout`` s.

        Frames already offered to an earlier predicate are not offered again. Raises
        :class:`StreamBroken` after a malformed frame and :class:`AgentGone` once the agent
        has exited, in both cases only after every frame received before it was offered.
        """
        deadline = time.monotonic() + timeout
        while True:
            while self._cursor < len(self.frames):
                frame = self.frames[self._cursor]
                self._cursor += 1
                if predicate(frame.msg):
                    return frame
            if self.frame_error is not None:
                raise StreamBroken(f"the agent's frame stream is broken ({self.frame_error})")
            if self.gone_reason is not None:
                raise AgentGone(self.gone_reason)
            remaining = deadline - time.monotonic()
            if self.stdout_eof:  # usually the agent is exiting: give it a moment for its status
                if self.wait_exit(1.0) is None:
                    self.gone_reason = "agent closed its stdout (still running)"
                continue
            if remaining <= 0:
                return None
            self._pump(remaining)

    def last_stderr(self) -> str | None:
        """The agent's last non-empty stderr line, if any."""
        lines = [*self._stderr_tail]
        if self._stderr_partial.strip():
            lines.append(self._stderr_partial.decode("utf-8", "replace"))
        for line in reversed(lines):
            if line.strip():
                return line.strip()[:_STDERR_LINE_MAX]
        return None

    def truncated_frame(self) -> str | None:
        """After the agent exited: a description of a frame its stdout ended inside."""
        if not self.stdout_eof or self.frame_error is not None or self._decoder.at_boundary:
            return None
        held = self._decoder.buffered
        if held >= HEADER.size:
            (length,) = HEADER.unpack_from(self._tail, 0)
            have = f"{held} of {HEADER.size + length} bytes"
        else:
            have = f"{held} of {HEADER.size} header bytes"
        return f"stdout ended in the middle of a frame at byte {self._boundary} ({have})"

    # -- the loop ----------------------------------------------------------------------------

    def _pump(self, timeout: float) -> None:
        """Wait up to ``timeout`` s for the agent and handle everything that is ready."""
        selector = self._selector
        if selector is None:
            raise RuntimeError("agent not started")
        for key, _events in selector.select(max(0.0, timeout)):
            if key.data == "stdout":
                self._read_stdout()
            elif key.data == "stderr":
                self._read_stderr()
            elif key.data == "stdin":
                self._write()
            elif key.data == "exit":
                self._on_exit()

    def _write(self) -> None:
        if not self._out or self._stdin_fd < 0:
            return
        try:
            n = os.write(self._stdin_fd, self._out)
            del self._out[:n]
        except BlockingIOError:
            pass
        except OSError:  # EPIPE: the agent closed stdin or died; its exit is on the way
            self._out.clear()
        if self._out and not self._stdin_watched and self._selector is not None:
            self._selector.register(self._stdin_fd, selectors.EVENT_WRITE, "stdin")
            self._stdin_watched = True
        elif not self._out:
            self._unwatch_stdin()

    def _unwatch_stdin(self) -> None:
        if self._stdin_watched and self._selector is not None:
            self._selector.unregister(self._stdin_fd)
        self._stdin_watched = False

    def _read_stdout(self) -> None:
        proc = self._proc
        if proc is None or proc.stdout is None or self.stdout_eof:
            return
        fd = proc.stdout.fileno()
        for _ in range(_READS_PER_WAKEUP):  # bounded: a flooding agent cannot stall the loop
            try:
                data = os.read(fd, _READ_SIZE)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self.stdout_eof = True
                if self._selector is not None:
                    self._selector.unregister(fd)
                return
            self._decode(data)

    def _decode(self, data: bytes) -> None:
        if self.frame_error is not None:
            return  # the stream cannot be resynchronised; keep draining, decode nothing
        now = time.monotonic()
        self._tail += data
        try:
            messages = self._decoder.feed(data)
        except FrameError as exc:
            self._record(now, exc.messages)
            offset = self._offset_after(len(exc.messages))
            sample = bytes(self._tail[offset : offset + 16])
            self.frame_error = (
                f"frame #{len(self.frames) + 1} at byte {self._boundary + offset} of stdout: "
                f"{exc} (bytes there: {sample!r})"
            )
            self._tail = bytearray()
            return
        self._record(now, messages)
        self._fed += len(data)
        held = self._decoder.buffered
        del self._tail[: len(self._tail) - held]
        self._boundary = self._fed - held

    def _offset_after(self, count: int) -> int:
        """Offset in ``_tail`` just past its first ``count`` (well-formed) frames."""
        offset = 0
        for _ in range(count):
            (length,) = HEADER.unpack_from(self._tail, offset)
            offset += HEADER.size + length
        return offset

    def _record(self, at: float, messages: Iterable[dict[str, Any]]) -> None:
        self.frames.extend(Frame(at, msg) for msg in messages)

    def _read_stderr(self) -> None:
        proc = self._proc
        if proc is None or proc.stderr is None or self._stderr_eof:
            return
        fd = proc.stderr.fileno()
        for _ in range(_READS_PER_WAKEUP):
            try:
                chunk = os.read(fd, _READ_SIZE)
            except BlockingIOError:
                break
            except OSError:
                chunk = b""
            if not chunk:
                self._stderr_eof = True
                if self._selector is not None:
                    self._selector.unregister(fd)
                break
            self._stderr_partial += chunk
            *lines, rest = self._stderr_partial.split(b"\n")
            for line in lines:
                self._stderr_tail.append(line[:_STDERR_LINE_MAX].decode("utf-8", "replace"))
            self._stderr_partial = bytearray(rest[-_STDERR_LINE_MAX:])

    def _on_exit(self) -> None:
        proc = self._proc
        if proc is None or self.exit_code is not None:
            return
        self.exit_code = proc.wait()
        if self._selector is not None:
            self._selector.unregister(self._pidfd)
        self._read_stdout()  # frames written just before exiting still count
        self._read_stderr()
        if not self.stdout_eof:  # a child it left behind still holds the pipe open
            self.stdout_eof = True
            if proc.stdout is not None and self._selector is not None:
                self._selector.unregister(proc.stdout.fileno())
        self.gone_reason = f"agent {describe_exit(self.exit_code)}"


# --------------------------------------------------------------------------
# The checks
# --------------------------------------------------------------------------
