"""``osup-mp wal stats|tail|verify``: the running tree's write-ahead log."""

from __future__ import annotations

import click

from osup_mp.cli.common import load, request, to_json


@click.group("wal")
def command() -> None:
    """Inspect the write-ahead log of the running tree (offline: tools/wal_dump.py)."""


@command.command("stats")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@click.pass_context
def stats(ctx: click.Context, as_json: bool) -> None:
    """Segments, LSN range, size, fsync policy and counters."""
    data = request(load(ctx), "wal_stats")
    if as_json:
        click.echo(to_json(data))
        return
    click.echo(
        f"{data['dir']}: {data['entries']} entries in {data['segments']} segment(s), "
        f"{data['bytes']} bytes, LSN {data['first_lsn']}..{data['last_lsn']}, "
        f"fsync {data['fsync']}, {data['appends']} appends / {data['syncs']} syncs"
    )
    for f in data["files"]:
        click.echo(
            f"  {f['name']}  LSN {f['first_lsn']}..{f['last_lsn']}  "
            f"{f['entries']} entries  {f['bytes']} bytes"
        )


@command.command("tail")
@click.option(
    "-n",
    "count",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="How many of the newest records to show.",
)
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@click.pass_context
def tail(ctx: click.Context, count: int, as_json: bool) -> None:
    """The last N entries."""
    records = request(load(ctx), "wal_tail", n=count)
    if as_json:
        click.echo(to_json(records))
        return
    for r in records:
        entry = r["entry"]
        op = entry.get("operation", "?") if isinstance(entry, dict) else "?"
        params = entry.get("params", entry) if isinstance(entry, dict) else entry
        text = to_json(params, indent=None)
        click.echo(f"{r['lsn']:>10}  {op}  {text[:200]}")


@command.command("verify")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@click.pass_context
def verify(ctx: click.Context, as_json: bool) -> None:
    """Check every record's CRC and LSN; exit 1 on a problem."""
    data = request(load(ctx), "wal_verify", timeout=180.0)
    if as_json:
        click.echo(to_json(data))
    else:
        for f in data["files"]:
            click.echo(
                f"{f['name']}: {f['records']} records, LSN {f['first_lsn']}..{f['last_lsn']}"
            )
        for p in data["problems"]:
            click.echo(f"{p['kind'].upper()}: {p['file']} at offset {p['offset']}: {p['problem']}")
        click.echo("ok" if data["ok"] else "problems found")
    raise SystemExit(0 if data["ok"] else 1)
