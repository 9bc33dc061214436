"""``osup-mp agent-check -- EXECUTABLE [ARGS...]``: check an agent against the wire protocol.

A thin click wrapper around :class:`osup_mp.agent_check.checker.AgentChecker`, which holds the logic
and documents every check. Output is one ``PASS <check>`` / ``FAIL <check>: <reason>`` line per
check and a ``N passed, M failed`` summary, or with ``--json`` a JSON list of
``{check, ok, detail}``. Exit status: 0 when every check passes, 1 otherwise, 2 for usage
errors (no command, an executable that cannot be found or started) — one line, no traceback.

Design decisions:

* The executable is resolved like the supervisor resolves ``gerbil_executable`` (beside this
  Python first, then on PATH), so ``agent-check -- osup-mp-agent`` checks what a tree would
  run. The lookup is imported lazily, to keep ``--help`` fast.
* Options must come before the command; everything from the first argument that is not an
  option (or after ``--``) belongs to the agent, unknown options included.
"""

from __future__ import annotations

import json
import sys

import click

from osup_mp.cli.common import EXIT_FAILED, EXIT_USAGE, fail


@click.command(
    "agent-check",
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=5.0,
    show_default=True,
    metavar="SECONDS",
    help="Time allowed for each check.",
)
@click.option(
    "--heartbeat-interval",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    metavar="MS",
    help="Heartbeat interval given to the agent (OSUP_HEARTBEAT_INTERVAL_MS).",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of {check, ok, detail}.")
@click.argument(
    "argv", nargs=-1, required=True, type=click.UNPROCESSED, metavar="-- EXECUTABLE [ARGS]..."
)
def command(timeout: float, heartbeat_interval: int, as_json: bool, argv: tuple[str, ...]) -> None:
    """Run an agent executable through the protocol and report each check.

    The agent is started as EXECUTABLE [ARGS]... --role main --elixir-mode. Checks: starts,
    frames, heartbeats, requests, checkpoint, hot_reload, restore, shutdown. Exit 0 when all
    pass, 1 when any fails, 2 for usage errors.
    """
    from osup_mp.agent_check import AgentChecker, AgentStartError
    from osup_mp.lowlevel.proc import resolve_executable

    try:
        executable = resolve_executable(argv[0])
    except FileNotFoundError as exc:
        fail(str(exc).replace(" (set gerbil_executable)", ""), EXIT_USAGE)
    checker = AgentChecker(
        [executable, *argv[1:]], timeout=timeout, heartbeat_interval_ms=heartbeat_interval
    )
    try:
        results = checker.run()
    except AgentStartError as exc:
        fail(str(exc.strerror), EXIT_USAGE)
    if as_json:
        click.echo(json.dumps([r.as_dict() for r in results], indent=2))
    else:
        for result in results:
            click.echo(result.line())
        passed = sum(r.ok for r in results)
        click.echo(f"{passed} passed, {len(results) - passed} failed")
    if not all(r.ok for r in results):
        sys.exit(EXIT_FAILED)
