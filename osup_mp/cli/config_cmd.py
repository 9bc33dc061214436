"""``osup-mp config``: print the effective configuration (file + overlay + environment)."""

from __future__ import annotations

import json
from typing import Any

import click

from osup_mp.cli.common import load


@click.command("config", short_help="Show the configuration in force.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of TOML.")
@click.pass_context
def command(ctx: click.Context, as_json: bool) -> None:
    """Show the merged configuration the tree would run with."""
    data = load(ctx).to_dict()
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(to_toml(data))


def to_toml(data: dict[str, Any]) -> str:
    """TOML for the config's shape: scalars first, then one table per section."""
    lines = [f"{k} = {_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for section, values in data.items():
        if isinstance(values, dict):
            lines += ["", f"[{section}]"]
            lines += [f"{k} = {_value(v)}" for k, v in values.items()]
    return "\n".join(lines)


def _value(value: Any) -> str:
    if value is None:
        return '""'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    return json.dumps(str(value))
