"""``osup-mp checkpoint create|list|show|restore|delete``: the main agent's checkpoints."""

from __future__ import annotations

import json
import time
from typing import Any

import click

from osup_mp.cli.common import load, request, to_json


@click.group("checkpoint")
def command() -> None:
    """Checkpoints of the main agent (stored in diskcache and as checksummed files)."""


def _show(data: Any, as_json: bool) -> None:
    click.echo(to_json(data) if as_json else _text(data))


def _text(meta: dict[str, Any]) -> str:
    created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(meta["created"]))
    return f"{meta['id']}  LSN {meta['lsn']:<8} {meta['bytes']:>10} bytes  {created}"


@command.command("create", short_help="Checkpoint the main agent now.")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@click.pass_context
def create(ctx: click.Context, as_json: bool) -> None:
    """Ask the main agent for a checkpoint now; print it once it is durable."""
    _show(request(load(ctx), "checkpoint_create", timeout=90.0), as_json)


@command.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@click.pass_context
def list_(ctx: click.Context, as_json: bool) -> None:
    """Checkpoints kept, oldest first."""
    metas = request(load(ctx), "checkpoint_list")
    if as_json:
        click.echo(json.dumps(metas, indent=2))
    elif not metas:
        click.echo("no checkpoints")
    for meta in [] if as_json else metas:
        click.echo(_text(meta) + ("  UNREADABLE" if meta.get("unreadable") else ""))


@command.command("show", short_help="Verify and show one checkpoint.")
@click.argument("checkpoint_id")
@click.option("--json", "as_json", is_flag=True, help="Include the whole snapshot.")
@click.pass_context
def show(ctx: click.Context, checkpoint_id: str, as_json: bool) -> None:
    """Verify and show one checkpoint (a summary of its snapshot; all of it with --json)."""
    data = request(load(ctx), "checkpoint_show", id=checkpoint_id)
    if as_json:
        _show(data, True)
        return
    click.echo(_text(data))
    for key, about in (data.get("summary") or {}).items():
        size = "" if about.get("size") is None else f" ({about['size']})"
        click.echo(f"  {key}: {about.get('type')}{size}")
    if data.get("snapshot_omitted"):
        click.echo(f"  snapshot not shown: {data['snapshot_omitted']}")


@command.command("restore", short_help="Restart the main agent from a checkpoint.")
@click.argument("checkpoint_id")
@click.pass_context
def restore(ctx: click.Context, checkpoint_id: str) -> None:
    """Restart the main agent from CHECKPOINT_ID plus every WAL entry after it."""
    request(load(ctx), "checkpoint_restore", id=checkpoint_id)
    click.echo(f"main agent restarting from checkpoint {checkpoint_id}")


@command.command("delete")
@click.argument("checkpoint_id")
@click.pass_context
def delete(ctx: click.Context, checkpoint_id: str) -> None:
    """Delete one checkpoint (both copies)."""
    if not request(load(ctx), "checkpoint_delete", id=checkpoint_id):
        click.echo(f"no checkpoint {checkpoint_id}", err=True)
        raise SystemExit(1)
    click.echo(f"deleted {checkpoint_id}")
