"""`store stats | export`: read the local store (every worker's shard, as one)."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

import click
import orjson

from gateway.cli.common import config_options, fail, format_ns, load, print_table, when
from gateway.config import Config
from gateway.errors import StorageError

if TYPE_CHECKING:  # the store is imported only by the commands that read it
    from gateway.store.shards import StoreShards


@click.group("store")
def store_group() -> None:
    """Read the local store."""


def open_store(config: Config) -> StoreShards:
    """The local store of every worker shard, read as one."""
    from gateway.store import LocalStore
    from gateway.store.shards import StoreShards

    stores = []
    for shard in config.shards():
        if shard.worker and not shard.store_path.is_dir():
            continue
        store = LocalStore(shard.store_path, retention_ns=None, read_only=True)
        try:
            store.open()
        except StorageError as e:
            fail(str(e))
        stores.append(store)
    return StoreShards(stores)


def report_damage(store: StoreShards) -> None:
    """After reading the store: a warning per damaged part that was skipped, then exit 1 when
    there was any (what could be read was still output)."""
    for message in dict.fromkeys(map(str, store.damage)):  # a second read meets it again
        click.echo(
            f"influx-gateway: warning: {message}: the rest of that segment could not be read",
            err=True,
        )
    if store.damage:
        sys.exit(1)


@store_group.command("stats")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@config_options
def store_stats(as_json: bool, config_file: str | None, data_dir: str | None) -> None:
    """Per database: points, series, measurements, first/last time, bytes on disk."""
    store = open_store(load(config_file, data_dir))
    try:
        stats = store.stats()
    except StorageError as e:
        fail(str(e), 1)
    _show_stats(stats, as_json)
    report_damage(store)


def _show_stats(stats: list[Any], as_json: bool) -> None:
    if as_json:
        data = [
            {
                "database": s.database,
                "points": s.points,
                "series": s.series,
                "measurements": s.measurements,
                "first": format_ns(s.first_ns) if s.first_ns is not None else None,
                "last": format_ns(s.last_ns) if s.last_ns is not None else None,
                "bytes_on_disk": s.bytes_on_disk,
            }
            for s in stats
        ]
        click.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
        return
    print_table(
        ["DATABASE", "POINTS", "SERIES", "MEASUREMENTS", "FIRST", "LAST", "BYTES"],
        [
            [
                s.database,
                str(s.points),
                str(s.series),
                str(s.measurements),
                format_ns(s.first_ns),
                format_ns(s.last_ns),
                str(s.bytes_on_disk),
            ]
            for s in stats
        ],
    )


@store_group.command("export")
@click.option("--database", required=True, help="Database to export.")
@click.option("--measurement", default=None, help="Only this measurement.")
@click.option("--start", default=None, help="Inclusive start: RFC3339 or relative (-1h).")
@click.option("--end", default=None, help="Exclusive end: RFC3339 or relative (-1h).")
@config_options
def store_export(
    database: str,
    measurement: str | None,
    start: str | None,
    end: str | None,
    config_file: str | None,
    data_dir: str | None,
) -> None:
    """Print stored points as line protocol with ns timestamps."""
    config = load(config_file, data_dir)
    now = time.time_ns()
    start_ns, end_ns = when(start, now), when(end, now)
    store = open_store(config)
    if database not in store.databases():
        known = ", ".join(store.databases()) or "none"
        fail(f'no database "{database}" in the store at {config.store_path} (databases: {known})')
    out = sys.stdout.buffer
    try:
        for line in store.export(
            database, measurement=measurement, start_ns=start_ns, end_ns=end_ns
        ):
            out.write(line)
    except StorageError as e:
        out.flush()
        fail(str(e), 1)
    out.flush()
    report_damage(store)
