"""What the commands share: loading the config, talking to the tree, failing cleanly.

Every command module is imported for ``osup-mp --help``, so command modules import at the top
only click and this module, and this module imports the config and the client only when a
command runs: ``--help`` then costs the interpreter and click, nothing more.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any, NoReturn

import click

if TYPE_CHECKING:
    from osup_mp.config import Config

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NOT_RUNNING = 3


def to_json(data: Any, *, indent: int | None = 2) -> str:
    """JSON for people: binary values (embeddings, snapshots) shown as ``<N bytes>``."""
    return json.dumps(data, indent=indent, default=_bytes_note)


def _bytes_note(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        return f"<{len(value)} bytes>"
    raise TypeError(f"cannot show {type(value).__name__} as JSON")


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    click.echo(f"osup-mp: {message}", err=True)
    sys.exit(code)


def load(ctx: click.Context) -> Config:
    """The effective config, or exit 2 with the one-line reason."""
    from osup_mp.config import ConfigError, load_config, resolve_config_path, resolve_env

    obj = ctx.find_root().obj or {}
    try:
        env = resolve_env(obj.get("env"))
        return load_config(resolve_config_path(obj.get("config_path")), env)
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)


def request(cfg: Config, command: str, /, *, timeout: float = 30.0, **args: Any) -> Any:
    """One control request; exits 3 when no tree runs and 1 when the tree says no."""
    from osup_mp.client import Client, ClientError, NotRunning

    try:
        with Client.for_config(cfg, timeout=timeout) as client:
            return client.request(command, **args)
    except NotRunning:
        fail(f"not running (no control socket at {cfg.control_socket})", EXIT_NOT_RUNNING)
    except ClientError as exc:
        fail(str(exc))
