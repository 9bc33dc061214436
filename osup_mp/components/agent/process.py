"""One agent process as its manager holds it: the ``Popen``, its pidfd and life lock, the
buffers of its pipes, and their watches in the manager's loop. The main agent and its
standby are each one, and a promotion hands the standby's over to the main as it is.

Decision: the pipes are non-blocking and only the manager's loop reads or writes them,
when it says they are ready; output leaves in one write per wake-up, and a full pipe is
watched for room, never waited on.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable
from typing import Any

from osup_mp.components.agent.launch import (
    Launch,
    agent_argv,
    agent_env,
    pre_exec,
    spawn_agent,
)
from osup_mp.components.agent.pipes import AgentPipes, widen_pipe
from osup_mp.components.agent.restore import discard
from osup_mp.config import Config
from osup_mp.lowlevel.lifelock import LifeLock
from osup_mp.lowlevel.proc import close_pipes, signal_group
from osup_mp.runtime.component import Component
from osup_mp.wire.launch import RESTORE_FLAG

Callback = Callable[[], None]


class AgentProcess:
    def __init__(
        self,
        host: Component,
        proc: subprocess.Popen[bytes],
        life: LifeLock | None,
        pipes: AgentPipes,
    ) -> None:
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        self.stdin, self.stdout, self.stderr = (
            proc.stdin.fileno(),
            proc.stdout.fileno(),
            proc.stderr.fileno(),
        )
        for fd in (self.stdin, self.stdout, self.stderr):
            os.set_blocking(fd, False)
        widen_pipe(self.stdin)
        self.host = host
        self.proc = proc
        self.pid = proc.pid
        self.life = life
        self.pipes = pipes
        self.pidfd = os.pidfd_open(proc.pid)
        self._writable = False  # watched for room: the last write left output behind

    @classmethod
    def start(
        cls,
        host: Component,
        cfg: Config,
        launch: Launch,
        restore: dict[str, Any] | None,
    ) -> tuple[AgentProcess, list[str]]:
        """Start the agent ``launch`` describes (see :mod:`.launch`), with pipes of its own
        and ``--restore`` when ``restore`` is planned; the process and its argv. Raises
        OSError if it cannot be (the plan's segment descriptors are closed then)."""
        try:
            argv = agent_argv(cfg, launch.role, launch.command)  # OSError: no such executable
            if restore is not None:
                argv += [RESTORE_FLAG, restore["checkpoint_id"] or "wal"]
            env = agent_env(cfg, launch.shm_name, launch.instance_id, launch.slot, launch.role)
            proc, life = spawn_agent(argv, env, pre_exec(cfg, launch.role, launch.deadlines))
        except OSError:
            if restore is not None:
                discard(restore)
            raise
        return cls(host, proc, life, AgentPipes(cfg.agent.max_frame)), argv

    @property
    def life_watched(self) -> bool:
        """Its life lock is watched: its death is noticed before the kernel reports it."""
        return self.life is not None and self.life.watching

    def watch_life(self, ready: dict[str, Any], notify_fd: int) -> None:
        """Wait on its life lock (notices to ``notify_fd``) once its ``ready`` frame says it
        holds it."""
        if ready.get("life_lock") is True and self.life is not None:
            self.life.watch(self.pid, notify_fd)

    def fds(self) -> set[int]:
        return {self.pidfd, self.stdin, self.stdout, self.stderr}

    def watch(self, on_stdout: Callback, on_stderr: Callback, on_exit: Callback) -> None:
        self.host.watch_fd(self.stdout, on_stdout)
        self.host.watch_fd(self.stderr, on_stderr)
        self.host.watch_fd(self.pidfd, on_exit)

    def unwatch(self) -> None:
        """Out of the loop (a promotion: the new owner watches it again)."""
        for fd in (self.pidfd, self.stdin, self.stdout, self.stderr):
            self.host.unwatch_fd(fd)
        self._writable = False

    def read_frames(self) -> tuple[list[dict[str, Any]], str | None, bool]:
        """The frames its stdout holds now, a malformed-frame error, and whether it closed
        (then it is no longer watched: the pidfd reports the exit)."""
        messages, error, eof = self.pipes.read_frames(self.stdout)
        if eof:
            self.host.unwatch_fd(self.stdout)
        return messages, error, eof

    def stderr_lines(self, *, final: bool = False) -> list[str]:
        """The whole lines its stderr holds now (``final``: the rest too). At EOF it is no
        longer watched: a dying process's closed pipe stays readable, and a loop that kept
        waking for it would spin, on the CPUs the dying process needs to finish exiting."""
        lines, eof = self.pipes.read_stderr(self.stderr, final=final)
        if eof:
            self.host.unwatch_fd(self.stderr)
        return lines

    def flush(self) -> None:
        """Write what is queued; what the pipe cannot take waits for room."""
        if not self.pipes.out:
            return
        want = self.pipes.write(self.stdin)
        if want != self._writable:
            self.host.watch_writable(self.stdin, self.flush if want else None)
            self._writable = want

    def exit_status(self) -> int | None:
        """Its exit status, reaping it; None while it runs. Its pidfd's readiness means it
        has exited, so a None there is an event that was not this process's: never wait."""
        return self.proc.poll()

    def signal(self, sig: int = signal.SIGKILL) -> None:
        """Signal its process group: what it spawned too."""
        signal_group(self.pid, sig)

    def close(self, *, reaped: bool = True) -> None:
        """It exited (its output read): out of the loop, pipes closed; the pidfd too, unless
        it is not ``reaped`` yet (:mod:`.dying` reaps it through the pidfd)."""
        if reaped:
            self.host.unwatch_fd(self.pidfd)
            os.close(self.pidfd)
        for fd in (self.stdin, self.stdout, self.stderr):
            self.host.unwatch_fd(fd)
        close_pipes(self.proc)
        self._writable = False
