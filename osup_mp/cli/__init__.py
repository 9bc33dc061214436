"""The ``osup-mp`` command line: one module per command, all built on the client library.

Operator mistakes (bad config, unknown component, tree not running) end with one line on
stderr and a documented exit status, never a traceback:

* 0 — done; 1 — the operation failed (message says why); 2 — usage or configuration error;
  3 — no tree is running (``status``, ``restart``…); 130 — interrupted (Ctrl-C).
"""

from __future__ import annotations

import os
import sys

import click

from osup_mp.cli import main as main_module
from osup_mp.cli.main import cli

__all__ = ["cli", "main", "main_module"]


def main(argv: list[str] | None = None) -> None:
    """The ``osup-mp`` entry point: click's usage errors, and any error nothing else caught,
    become one ``osup-mp:`` line (``OSUP_DEBUG=1`` shows the traceback of the latter)."""
    try:
        cli.main(argv, prog_name="osup-mp", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except (click.Abort, KeyboardInterrupt):
        sys.exit(130)  # Ctrl-C
    except BrokenPipeError:
        sys.exit(1)  # stdout went away (piped into head): nothing to say
    except click.ClickException as exc:
        hint = ""
        if isinstance(exc, click.UsageError) and exc.ctx is not None:
            hint = f" (see '{exc.ctx.command_path} --help')"
        click.echo(f"osup-mp: {exc.format_message()}{hint}", err=True)
        sys.exit(exc.exit_code)
    except Exception as exc:  # a bug: still one line for the operator
        if os.environ.get("OSUP_DEBUG"):
            raise
        click.echo(
            f"osup-mp: unexpected error: {type(exc).__name__}: {exc} "
            "(run again with OSUP_DEBUG=1 for the traceback)",
            err=True,
        )
        sys.exit(1)
    sys.exit(0)
