"""``osup-mp traffic --file REQUESTS.jsonl``: replay requests to the main agent, report the
rate achieved and latency percentiles (``osup-mp traffic record`` is in :mod:`.record`).

Requests go out on one data-plane connection, paced by a schedule (request i is due at
``start + i / rate``) and capped at ``--concurrency`` in flight: an open-loop load whose
rate does not sag when answers slow down, until the cap is reached. Latency is measured
from the send to the answer, so time queued behind the cap is not counted; ``late`` says
how many requests left after their due time.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import click

from osup_mp.cli import record
from osup_mp.cli.common import EXIT_NOT_RUNNING, EXIT_USAGE, fail, load

EXIT_INTERRUPTED = 130


class Sender(Protocol):
    def send(self, command: str, /, **args: Any) -> int: ...

    def poll(self, timeout: float) -> list[dict[str, Any]]: ...


@dataclass(frozen=True, slots=True)
class TrafficReport:
    sent: int
    ok: int
    errors: int
    late: int
    seconds: float
    rate: float  # answers per second
    latency_ms: dict[str, float]  # p50, p90, p99, max
    first_error: str | None
    interrupted: bool = False


def read_requests(path: Path) -> list[Any]:
    """One JSON value per non-empty line; a line that is not JSON names file and line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read: {exc}") from None
    requests = []
    for number, line in enumerate(lines, start=1):
        if line.strip():
            try:
                requests.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not JSON: {exc.msg}") from None
    if not requests:
        raise ValueError(f"{path}: no requests in it")
    return requests


class _Replay:
    """The state of one replay: what was sent when, what came back."""

    def __init__(self, requests: list[Any], rate: float | None, timeout: float) -> None:
        self.requests, self.rate, self.timeout = requests, rate, timeout
        self.in_flight: dict[int, float] = {}
        self.latencies: list[float] = []
        self.sent = self.errors = self.late = 0
        self.first_error: str | None = None
        self.interrupted = False

    def error(self, count: int, why: str) -> None:
        self.errors += count
        self.first_error = self.first_error or why

    def expire(self, now: float) -> None:
        """Requests in flight for longer than the timeout count as errors."""
        old = [i for i, at in self.in_flight.items() if now - at >= self.timeout]
        for req_id in old:
            del self.in_flight[req_id]
        if old:
            self.error(len(old), f"no answer within {self.timeout:g} s")

    def answered(self, answers: list[dict[str, Any]], now: float) -> None:
        for answer in answers:
            sent_at = self.in_flight.pop(answer.get("id"), None)  # type: ignore[arg-type]
            if sent_at is None:
                continue
            if answer.get("ok"):
                self.latencies.append((now - sent_at) * 1000)
            else:
                self.error(1, str(answer.get("error")))


def replay(
    client: Sender,
    requests: list[Any],
    *,
    rate: float | None,
    duration: float | None,
    concurrency: int,
    timeout: float,
    clock: Callable[[], float] = time.monotonic,
) -> TrafficReport:
    """Send ``requests`` in turn (once through, or cycling for ``duration`` seconds) at
    ``rate`` per second (None: as fast as ``concurrency`` allows); wait for every answer.
    Ctrl-C stops the sending; the answers in flight are still collected and reported."""
    r = _Replay(requests, rate, timeout)
    start = clock()
    held = False  # the request due now waits for room under the cap
    while True:
        try:
            now = clock()
            if duration is None:
                done = r.interrupted or r.sent >= len(requests)
            else:
                done = r.interrupted or now - start >= duration
            due = start + r.sent / rate if rate else now
            waiting = not done and due <= now  # the next request is due
            if waiting and len(r.in_flight) < concurrency:
                r.late += held  # it was due while the cap held it back
                held = False
                data = requests[r.sent % len(requests)]
                r.in_flight[client.send("request", data=data, timeout=timeout)] = now
                r.sent += 1
                continue
            if done and not r.in_flight:
                break
            full = done or len(r.in_flight) >= concurrency
            held = held or (waiting and rate is not None)
            answers = client.poll(timeout if full else max(0.0, due - now))
            r.answered(answers, clock())
            if not answers:
                r.expire(clock())
        except KeyboardInterrupt:
            if r.interrupted:
                raise  # a second Ctrl-C: give up on the answers in flight
            r.interrupted = True
    seconds = max(clock() - start, 1e-9)
    return TrafficReport(
        r.sent, len(r.latencies), r.errors, r.late, seconds, len(r.latencies) / seconds,
        percentiles(r.latencies), r.first_error, r.interrupted,
    )  # fmt: skip


def percentiles(values: list[float]) -> dict[str, float]:
    """Nearest-rank p50, p90, p99 and the maximum (zeros for no values)."""
    if not values:
        return {"p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0}
    ranked = sorted(values)

    def rank(q: float) -> float:
        return ranked[min(len(ranked) - 1, max(0, int(q * len(ranked) + 0.999999) - 1))]

    return {"p50": rank(0.5), "p90": rank(0.9), "p99": rank(0.99), "max": ranked[-1]}


@click.group("traffic", invoke_without_command=True)
@click.option(
    "--file",
    "path",
    type=click.Path(path_type=Path, dir_okay=False),
    help='Requests to send, one JSON value per line (e.g. {"op": "stats"}).',
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    help="Requests per second (default: as fast as --concurrency allows).",
)
@click.option(
    "--duration",
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds to keep sending, cycling through the file (default: the file once).",
)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="Most requests in flight at once.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=30.0,
    show_default=True,
    help="Seconds to wait for an answer.",
)
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@click.pass_context
def command(
    ctx: click.Context,
    path: Path | None,
    rate: float | None,
    duration: float | None,
    concurrency: int,
    timeout: float,
    as_json: bool,
) -> None:
    """Replay requests to the main agent (--file) and print the rate and latency
    percentiles; or record live read-only requests to a file (traffic record)."""
    if ctx.invoked_subcommand is not None:
        if path is not None:
            sub = ctx.invoked_subcommand
            raise click.UsageError(f"--file is for a replay, not an option of {sub}")
        return
    if path is None:
        raise click.UsageError("Missing option '--file' (or a command: record).")
    cfg = load(ctx)
    try:
        requests = read_requests(path)
    except ValueError as exc:
        fail(str(exc), EXIT_USAGE)
    from osup_mp.client import Client, ClientError, NotRunning

    socket_path = cfg.data_socket("main")
    try:
        with Client(socket_path, timeout=timeout + 1, max_frame=cfg.agent.max_frame) as client:
            report = replay(
                client,
                requests,
                rate=rate,
                duration=duration,
                concurrency=concurrency,
                timeout=timeout,
            )
    except NotRunning:
        fail(f"not running (no data-plane socket at {socket_path})", EXIT_NOT_RUNNING)
    except ClientError as exc:
        fail(f"data plane: {exc}")
    if as_json:
        click.echo(json.dumps(asdict(report)))
    else:
        lat = report.latency_ms
        click.echo(
            f"{report.sent} sent, {report.ok} ok, {report.errors} errors in "
            f"{report.seconds:.2f} s: {report.rate:.0f} answers/s"
            + (f" (target {rate:g}/s, {report.late} late)" if rate else "")
        )
        click.echo(
            f"latency ms: p50 {lat['p50']:.2f}  p90 {lat['p90']:.2f}  "
            f"p99 {lat['p99']:.2f}  max {lat['max']:.2f}"
        )
        if report.first_error:
            click.echo(f"first error: {report.first_error}")
    if report.interrupted:
        ctx.exit(EXIT_INTERRUPTED)


command.add_command(record.command)
