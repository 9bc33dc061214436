"""``osup-mp traffic record --out FILE``: a sample of the main agent's live read-only
requests, written as JSONL (one request per line), ready for ``traffic --file`` or
``evolve --requests``.

The traffic splitter keeps the sample (the main casts it copies, off its path, as for a
mirror); this command takes what was kept every ``POLL`` seconds and writes it out, so the
splitter holds little. The one decision: the file appears complete or not at all. Lines go
to ``FILE.part`` and it is renamed at the end; Ctrl-C stops the recording, takes what was
kept and still writes the file, and a recording lost with the splitter keeps what was taken.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any, Protocol

import click

from osup_mp.cli.common import EXIT_NOT_RUNNING, fail, load

POLL = 0.2  # s between takes
EXIT_INTERRUPTED = 130


class Control(Protocol):
    def request(self, command: str, /, **args: Any) -> Any: ...


@dataclass(frozen=True, slots=True)
class RecordReport:
    written: int
    offered: int  # copies drawn for the recording
    dropped: int  # drawn while the splitter's buffer was full
    too_large: int  # requests too large to take
    seconds: float
    interrupted: bool = False
    error: str | None = None  # the recording was lost (what was taken is written)


def record(
    control: Control,
    out: IO[str],
    *,
    share: float,
    count: int,
    seconds: float,
    lost: tuple[type[Exception], ...] = (Exception,),
    clock: Callable[[], float] = time.monotonic,
    wait: Callable[[float], None] = time.sleep,
    progress: Callable[[int], None] = lambda written: None,
) -> RecordReport:
    """Record until ``count`` requests are kept or ``seconds`` pass; write each to ``out``.
    An error of a kind in ``lost`` after the start ends the recording with what was taken."""
    start = clock()
    name = control.request("traffic_record", share=share, count=count, seconds=seconds)["id"]
    written, stop, interrupted, figures = 0, False, False, {}
    error: str | None = None
    while True:
        try:
            figures = control.request("traffic_take", id=name, stop=stop)
        except KeyboardInterrupt:
            interrupted = stop = True  # take again, stopping: what was kept is still written
            continue
        except lost as exc:  # the splitter restarted or the tree stopped: keep what we have
            error = str(exc)
            break
        for data in figures["requests"]:
            out.write(json.dumps(data, separators=(",", ":")) + "\n")
        out.flush()  # FILE.part grows as pages come: what was taken is on disk
        written += len(figures["requests"])
        progress(written)
        if not figures["active"] and not figures["more"]:
            break
        if not figures["more"]:
            try:
                wait(POLL)
            except KeyboardInterrupt:
                interrupted = stop = True
    return RecordReport(
        written, figures.get("offered", 0), figures.get("dropped", 0),
        figures.get("too_large", 0), clock() - start, interrupted, error,
    )  # fmt: skip


@click.command("record", short_help="Record live read-only requests to a JSONL file.")
@click.option(
    "--out",
    "path",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="The JSONL file to write (replaced when the recording ends).",
)
@click.option(
    "--count",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="Requests to record.",
)
@click.option(
    "--share",
    type=click.FloatRange(min=0, max=1, min_open=True),
    default=0.1,
    show_default=True,
    help="The share of the main's read-only requests recorded.",
)
@click.option(
    "--seconds",
    type=click.FloatRange(min=0, min_open=True),
    default=600.0,
    show_default=True,
    help="The longest to record.",
)
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@click.pass_context
def command(
    ctx: click.Context, path: Path, count: int, share: float, seconds: float, as_json: bool
) -> None:
    """Record a sample of the main agent's live read-only requests to a JSONL file."""
    cfg = load(ctx)
    from osup_mp.client import Client, ClientError, NotRunning

    part = path.with_name(path.name + ".part")
    try:
        with Client.for_config(cfg, timeout=30.0) as client:
            _refuse_without_reads(client)
            with part.open("w") as out:
                report = record(
                    client, out, share=share, count=count, seconds=seconds, lost=(ClientError,),
                    progress=_progress(count),
                )  # fmt: skip
                os.fsync(out.fileno())  # record() flushed each page
        part.replace(path)
    except NotRunning:
        part.unlink(missing_ok=True)
        fail(f"not running (no control socket at {cfg.control_socket})", EXIT_NOT_RUNNING)
    except ClientError as exc:  # the recording could not start
        part.unlink(missing_ok=True)
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot write {path}: {exc}")
    if sys.stderr.isatty():
        click.echo("", err=True)  # below the progress line
    if as_json:
        click.echo(json.dumps(asdict(report) | {"file": str(path)}))
    else:
        click.echo(
            f"{report.written} requests recorded to {path} in {report.seconds:.1f} s"
            f" ({report.offered} drawn, {report.dropped} dropped, {report.too_large} too large)"
        )
    if report.error:
        fail(f"the recording was lost: {report.error} ({report.written} requests written)")
    if report.interrupted:
        ctx.exit(EXIT_INTERRUPTED)


def _refuse_without_reads(control: Control) -> None:
    """Exit 1 at once when the main agent declares no read-only operation: nothing would
    ever be recorded."""
    agents = control.request("status").get("agents") or []
    main = next((a for a in agents if a["id"] == "main"), None)
    if main is not None and main["state"] == "RUNNING" and not main.get("read_only"):
        fail(
            "the main agent declares no read-only operation, so nothing can be recorded "
            "(an agent lists them in its ready frame: docs/protocol.md)"
        )


def _progress(count: int) -> Callable[[int], None]:
    """One line on a terminal, rewritten as requests come in; nothing otherwise."""
    if not sys.stderr.isatty():
        return lambda written: None
    return lambda written: click.echo(f"\rrecorded {written} of {count}", err=True, nl=False)
