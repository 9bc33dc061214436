"""The ``osup-mp`` command line: one module per command, all built on the client library.

Operator mistakes (bad config, unknown component, tree not running) end with one line on
stderr and a documented exit status, never a traceback:

* 0 — done; 1 — the operation failed (message says why); 2 — usage or configuration error;
  3 — no tree is running (``status``, ``restart``…).
"""

from __future__ import annotations

import sys

import click

from osup_mp.cli.main import cli

__all__ = ["cli", "main"]


def main(argv: list[str] | None = None) -> None:
    """The ``osup-mp`` entry point: click's usage errors become one ``osup-mp:`` line."""
    try:
        cli.main(argv, prog_name="osup-mp", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.Abort:
        sys.exit(130)  # Ctrl-C at a prompt
    except click.ClickException as exc:
        hint = ""
        if isinstance(exc, click.UsageError) and exc.ctx is not None:
            hint = f" (see '{exc.ctx.command_path} --help')"
        click.echo(f"osup-mp: {exc.format_message()}{hint}", err=True)
        sys.exit(exc.exit_code)
    sys.exit(0)
