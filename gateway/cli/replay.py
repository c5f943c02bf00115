"""`replay`: backfill an upstream from the local store or from line protocol files."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from gateway.cli.common import config_options, fail, load, when
from gateway.cli.store import open_store, report_damage


@click.command("replay")
@click.argument("files", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--from-store", "from_store", default=None, help="Replay this store database.")
@click.option("--to", "to", required=True, help="The upstream (by name) to send to.")
@click.option("--database", default=None, help="Target database for FILEs (required with FILEs).")
@click.option(
    "--precision",
    type=click.Choice(["ns", "us", "ms", "s", "m", "h"]),
    default="ns",
    help="Timestamp precision of FILEs.",
)
@click.option("--start", default=None, help="Inclusive start (store): RFC3339 or -1h.")
@click.option("--end", default=None, help="Exclusive end (store): RFC3339 or -1h.")
@click.option("--rate", type=float, default=None, help="At most this many lines per second.")
@config_options
def replay_command(
    files: tuple[Path, ...],
    from_store: str | None,
    to: str,
    database: str | None,
    precision: str,
    start: str | None,
    end: str | None,
    rate: float | None,
    config_file: str | None,
    data_dir: str | None,
) -> None:
    """Backfill an upstream from the local store or from line protocol files."""
    import asyncio

    from gateway.replay import file_chunks, replay, store_chunks

    config = load(config_file, data_dir)
    upstream = next((up for up in config.upstreams if up.name == to), None)
    if upstream is None:
        known = ", ".join(up.name for up in config.upstreams) or "none"
        fail(f'no upstream named "{to}" in the config (upstreams: {known})')
    if bool(files) == bool(from_store):
        fail("give either --from-store DB or FILE..., not both or neither")
    if rate is not None and rate <= 0:
        fail("--rate must be positive")
    from gateway.replay import ReplayReport

    report = ReplayReport()
    total = None
    if from_store:
        store = open_store(config)
        if from_store not in store.databases():
            fail(f'no database "{from_store}" in the store at {config.store_path}')
        now = time.time_ns()
        start_ns, end_ns = when(start, now), when(end, now)
        total = sum(1 for _ in store.export(from_store, start_ns=start_ns, end_ns=end_ns))
        chunks = store_chunks(
            store.export(from_store, start_ns=start_ns, end_ns=end_ns),
            from_store,
            upstream.batch_max_lines,
        )
    else:
        if not database:
            fail("--database is required when replaying FILEs")
        chunks = file_chunks(files, database, precision, upstream.batch_max_lines, report)
    done = asyncio.run(replay(config, upstream, chunks, rate=rate, total=total))
    done.invalid += report.invalid
    if from_store:
        report_damage(store)
    sys.exit(0 if not done.deadlettered and not done.invalid else 1)
