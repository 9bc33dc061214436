"""``osup-mp config``: print the effective configuration (file + overlay + environment).

Every key whose value is not the base's, because the selected ``[<env>.*]`` overlay or an
environment variable set it, is marked: a TOML comment naming where it was set and the base
value it replaced, and in ``--json`` an ``overridden`` map. The first line says how the
environment was chosen (``--env``, ``OSUP_ENV`` or the default).
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

import click

from osup_mp.cli.common import load

if TYPE_CHECKING:
    from osup_mp.config import Config


@click.command("config")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of TOML.")
@click.pass_context
def command(ctx: click.Context, as_json: bool) -> None:
    """Show the merged configuration the tree would run with.

    Keys set by the selected overlay (--env, $OSUP_ENV, else dev) or by an environment
    variable are marked with where they were set and the base value they replace.
    """
    cfg = load(ctx)
    data = cfg.to_dict()
    overridden = _overridden(cfg)
    if as_json:
        data["overridden"] = overridden
        click.echo(json.dumps(data, indent=2))
        return
    obj = ctx.find_root().obj or {}
    if obj.get("env") is not None:
        chosen = "chosen by --env"
    elif os.environ.get("OSUP_ENV"):
        chosen = "chosen by OSUP_ENV"
    else:
        chosen = "the default environment"
    click.echo(to_toml(data, {"env": chosen}, overridden))


def _overridden(cfg: Config) -> dict[str, dict[str, Any]]:
    """``{"section.key": {"by": where, "base": value}}`` for every key not from the base."""
    if not cfg.overridden:
        return {}
    from osup_mp.config import load_config

    base = load_config(cfg.source, cfg.env, {}, cwd=cfg.base_dir, overlay=False).to_dict()
    found: dict[str, dict[str, Any]] = {}
    for dotted, by in sorted(cfg.overridden.items()):
        section, key = dotted.split(".", 1)
        found[dotted] = {"by": by, "base": base[section][key]}
    return found


def _note(about: dict[str, Any], value: Any) -> str:
    by = str(about["by"])
    # An overlay key (prod.logger.level -> [prod.logger]) or a variable's name.
    where = f"[{by.rsplit('.', 1)[0]}] overlay" if "." in by else f"environment variable {by}"
    if about["base"] == value:
        return f"set by the {where} (same as the base)"
    return f"set by the {where}; base value {_value(about['base'])}"


def to_toml(
    data: dict[str, Any],
    top_notes: dict[str, str] | None = None,
    overridden: dict[str, dict[str, Any]] | None = None,
) -> str:
    """TOML for the config's shape: scalars first, then one table per section; keys in
    ``overridden`` get a comment saying where they were set."""
    top_notes = top_notes or {}
    overridden = overridden or {}

    def line(key: str, value: Any, note: str | None) -> str:
        text = f"{key} = {_value(value)}"
        return f"{text}  # {note}" if note else text

    lines = [line(k, v, top_notes.get(k)) for k, v in data.items() if not isinstance(v, dict)]
    for section, values in data.items():
        if isinstance(values, dict):
            lines += ["", f"[{section}]"]
            for k, v in values.items():
                about = overridden.get(f"{section}.{k}")
                lines.append(line(k, v, _note(about, v) if about else None))
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
