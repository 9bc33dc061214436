"""``osup-mp request JSON``: send one request to the main agent over the data plane."""

from __future__ import annotations

import json
from typing import Any

import click

from osup_mp.cli.common import EXIT_NOT_RUNNING, EXIT_USAGE, fail, load


@click.command("request")
@click.argument("payload", metavar="JSON")
@click.option("--json", "as_json", is_flag=True, help="Print the answer as one line of JSON.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=30.0,
    show_default=True,
    help="Seconds to wait for the answer.",
)
@click.pass_context
def command(ctx: click.Context, payload: str, as_json: bool, timeout: float) -> None:
    """Send JSON (e.g. '{"op": "stats"}') to the main agent and print its response."""
    cfg = load(ctx)
    try:
        data: Any = json.loads(payload)
    except json.JSONDecodeError as exc:
        fail(f"the request is not valid JSON: {exc}", EXIT_USAGE)
    from osup_mp.client import Client, ClientError, ErrorAnswer, NotRunning

    path = cfg.data_socket("main")
    try:
        with Client(path, timeout=timeout + 1, max_frame=cfg.agent.max_frame) as client:
            answer = client.request("request", data=data, timeout=timeout)
    except NotRunning:
        fail(f"not running (no data-plane socket at {path})", EXIT_NOT_RUNNING)
    except ErrorAnswer as exc:
        fail(f"the agent answered with an error: {exc}")
    except ClientError as exc:
        fail(f"data plane: {exc}")
    click.echo(
        json.dumps(answer, default=_bytes)
        if as_json
        else json.dumps(answer, indent=2, default=_bytes)
    )


def _bytes(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return value.hex()
    raise TypeError(f"cannot show {type(value).__name__}")
