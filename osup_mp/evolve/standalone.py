"""One variant evaluated away from the tree, with the limits a shadow has: what a Ray task
runs (:mod:`.on_ray`), on any host where osup-mp and the agent are installed.

A :class:`Job` carries everything: the agent to run, the main's state (a checkpoint's
snapshot), the workload with the main's answers, the judge, the limits and the deadlines.
:func:`evaluate` hands it to a keeper (this module run as ``python -m
osup_mp.evolve.standalone``, in a session of its own), which becomes a subreaper, starts the
agent with the shadow's rlimits (and RLIMIT_CPU for the CPU-time deadline) on the CPUs of
``[watchdog] shadow_cpus`` its host has, restores the snapshot, loads the variant, drives
the workload, and samples the agent against the watchdog's limits
(:mod:`osup_mp.lowlevel.limits`) and the wall-clock deadline while it waits; then it kills
the agent's process group and everything the variant left.

The one decision: the limits are enforced by the keeper and the kernel, never by the
scheduler that placed the task (Ray's resources are logical and not enforced).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import resource
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

import msgpack

from osup_mp.agent_check.session import AgentGone, AgentSession, StreamBroken
from osup_mp.client import Client
from osup_mp.config import Config
from osup_mp.evolution.genetic.fitness import Figures
from osup_mp.evolve.judge import Judge, VariantDied, Workload
from osup_mp.lowlevel.limits import Limits, Sampler, cpu_deadline_reason, cpu_rlimit, rss_mb
from osup_mp.lowlevel.proc import (
    ask_in_session,
    become_subreaper,
    die_with_parent,
    kill_descendants,
    pin_cpus,
    resolve_executable,
)
from osup_mp.storage.checkpoints.store import decode
from osup_mp.wire.frames import service_ms
from osup_mp.wire.launch import THREAD_POOL_VARS, LaunchEnv, agent_args

SAMPLE_EVERY = 0.1  # s between two samples of the agent against its limits
READY_TIMEOUT = 60.0  # s for the agent to restore and say ready


@dataclass(frozen=True, slots=True)
class Job:
    """One evaluation's inputs, except the variant's code (the same for a whole run)."""

    executable: str  # as configured: resolved where the job runs
    script: str  # "" or the agent's main script
    target: str  # the module the variant replaces
    snapshot: bytes  # the checkpoint's payload (MessagePack), the main's state
    checkpoint_id: str
    lsn: int
    workload: Workload
    judge: Judge
    limits: Limits
    cpu_seconds: float | None = None
    wall_seconds: float | None = None
    timeout: float = 30.0  # s for one answer
    max_frame: int = 64 << 20
    cpus: tuple[int, ...] = ()  # [watchdog] shadow_cpus: those the keeper's host has

    def data(self) -> dict[str, Any]:
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        workload = {
            "requests": list(self.workload.requests),
            "answers": list(self.workload.answers),
        }
        return fields | {
            "workload": workload,
            "judge": self.judge.data(),
            "limits": asdict(self.limits),
        }

    @classmethod
    def for_tree(
        cls,
        cfg: Config,
        target: str,
        workload: Workload,
        judge: Judge,
        cpu_seconds: float | None = None,
        wall_seconds: float | None = None,
    ) -> Job:
        """A job for the running tree's agent, from a checkpoint of its main taken now and
        read from the vault's file (ClientError, OSError, VaultError: why not)."""
        with Client.for_config(cfg, timeout=90.0) as client:
            record = client.request("checkpoint_create")
        path = cfg.o_supervisor.checkpoint_dir / "files" / f"{record['id']}.ckpt"
        checkpoint = decode(path.read_bytes(), str(path))
        o = cfg.o_supervisor
        return cls(
            o.gerbil_executable, str(o.gerbil_main_script or ""), target, checkpoint.payload,
            checkpoint.id, checkpoint.lsn, workload, judge, cfg.watchdog.limits(),
            cpu_seconds, wall_seconds, max_frame=cfg.agent.max_frame,
            cpus=cfg.watchdog.shadow_cpus,
        )  # fmt: skip

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> Job:
        w = data["workload"]
        return cls(**data | {
            "workload": Workload(tuple(w["requests"]), tuple(w["answers"])),
            "judge": Judge(**data["judge"]), "limits": Limits(**data["limits"]),
            "cpus": tuple(data.get("cpus", ())),
        })  # fmt: skip


def evaluate(job: Job, code: str) -> Figures:
    """The variant's figures, or why it failed; nothing of it outlives the call."""
    request = msgpack.packb({"job": job.data(), "code": code}, use_bin_type=True)
    keeper = [sys.executable, "-m", "osup_mp.evolve.standalone"]
    grace = (job.wall_seconds or 600.0) + READY_TIMEOUT + 30.0  # the keeper keeps its own
    answer, why = ask_in_session(keeper, request, grace)
    if answer is None:
        return Figures(failure=f"its keeper {why}")
    return Figures(**answer | {"latencies_ms": tuple(answer["latencies_ms"])})


# -- the keeper ------------------------------------------------------------------------------


class _Agent:
    """The variant's agent, spoken to over the wire protocol, watched while it works."""

    def __init__(self, job: Job) -> None:
        self.job = job
        argv = [resolve_executable(job.executable), *([job.script] if job.script else [])]
        argv += agent_args("shadow", restore=job.checkpoint_id)
        given = LaunchEnv(max_frame=job.max_frame, busy_poll_us=0, manager_pid=os.getpid())
        env = {k: v for k, v in os.environ.items() if not k.startswith("OSUP_")}
        env |= given.to_env() | dict.fromkeys(THREAD_POOL_VARS, "1")  # one thread, as a shadow
        self.session = AgentSession(argv, env, max_frame=job.max_frame, pre_exec=self._limit)
        # Placed as a shadow is, on the CPUs of the list this host has (none: anywhere).
        self.cpus = set(job.cpus) & os.sched_getaffinity(0)
        self.started = time.monotonic()
        self._ids = itertools.count(1)
        self._sampler: Sampler | None = None

    def _limit(self) -> None:  # in the child, before exec
        die_with_parent()
        pin_cpus(self.cpus)
        for which, value in self.job.limits.rlimits():
            resource.setrlimit(which, (value, value))
        if self.job.cpu_seconds is not None:
            resource.setrlimit(resource.RLIMIT_CPU, cpu_rlimit(self.job.cpu_seconds))

    def start(self) -> None:
        self.session.start()
        assert self.session.pid is not None
        self._sampler = Sampler(self.job.limits, self.session.pid)
        self.wait(lambda m: m["type"] == "ready", READY_TIMEOUT, send={
            "type": "restore", "checkpoint_id": self.job.checkpoint_id, "lsn": self.job.lsn,
            "snapshot": msgpack.unpackb(self.job.snapshot, raw=False), "wal_entries": [],
        })  # fmt: skip

    def load(self, code: str) -> str | None:
        """Load the variant; why the agent refused it, or None."""
        frame = {"type": "hot_reload", "code": code, "module": self.job.target}
        msg = self.wait(lambda m: m["type"] == "reload_result", self.job.timeout, send=frame)
        return None if msg.get("ok") else str(msg.get("error"))

    def ask(self, data: Any) -> tuple[bool, Any, float]:
        req_id = next(self._ids)
        frame = {"type": "process_request", "id": req_id, "data": data, "timed": True}
        sent = time.monotonic()
        msg = self.wait(lambda m: m["type"] == "response" and m.get("id") == req_id,
                        self.job.timeout, send=frame)  # fmt: skip
        timing = service_ms(msg.get("took_ms"), msg.get("waited_ms"))
        ms = (time.monotonic() - sent) * 1000 if timing is None else timing[0]
        return ("error" not in msg), msg.get("error", msg.get("data")), ms

    def wait(self, want: Any, timeout: float, send: dict[str, Any]) -> dict[str, Any]:
        """Send ``send``, then wait for the frame ``want`` accepts, sampling the agent
        against its limits and the deadlines; VariantDied says why it cannot come."""
        self.session.send(send)
        until = time.monotonic() + timeout
        while True:
            try:
                frame = self.session.expect(want, SAMPLE_EVERY)
            except (AgentGone, StreamBroken) as exc:
                raise VariantDied(self._died(str(exc))) from None
            if frame is not None:
                return frame.msg
            self._check(until, timeout)

    def _check(self, until: float, timeout: float) -> None:
        assert self._sampler is not None
        now = time.monotonic()
        wall = self.job.wall_seconds
        breach = self._sampler.check()
        if breach is None and wall is not None and now - self.started > wall:
            breach = f"killed: wall-clock deadline {wall:g} s"
        if breach is None and now > until:
            breach = f"no answer within {timeout:g} s: killed"
        if breach is not None:
            self.close()
            raise VariantDied(breach)

    def _died(self, why: str) -> str:
        code = self.session.exit_code
        reason = None if code is None else cpu_deadline_reason(code, self.job.cpu_seconds)
        if reason is not None:
            return reason
        stderr = self.session.last_stderr()
        return f"its agent died: {why}" + (f" (last stderr line: {stderr})" if stderr else "")

    def memory_mb(self) -> float:
        return rss_mb(self.session.pid) if self.session.pid else 0.0

    def close(self) -> None:
        self.session.close()  # its process group
        kill_descendants()  # what it left outside it (setsid daemons re-parent here)


def _keep(job: Job, code: str) -> Figures:
    become_subreaper()
    agent = _Agent(job)
    try:
        try:
            agent.start()
            refused = agent.load(code)
        except VariantDied as exc:
            return Figures(failure=str(exc))
        if refused is not None:
            return Figures(failure=f"its agent refused the code: {refused}")
        return job.judge.run(job.workload, agent.ask, agent.memory_mb)
    finally:
        agent.close()


if __name__ == "__main__":
    given = msgpack.unpackb(sys.stdin.buffer.read(), raw=False)
    figures = _keep(Job.from_data(given["job"]), given["code"])
    print(json.dumps(asdict(figures)))
