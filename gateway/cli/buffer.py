"""`buffer status` and `deadletter list | replay | purge`: the write-ahead buffer and what
upstreams refused, read from the files (the gateway may be running)."""

from __future__ import annotations

import time
from typing import Any

import click
import orjson

from gateway.cli.common import config_options, fail, known_upstream, load, print_table
from gateway.config import Config
from gateway.errors import StorageError


@click.group("buffer")
def buffer_group() -> None:
    """Inspect the write-ahead buffer."""


@buffer_group.command("status")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@config_options
def buffer_status(as_json: bool, config_file: str | None, data_dir: str | None) -> None:
    """Per upstream: pending records/bytes, oldest pending age, dead letters."""
    from gateway.destinations import build_wal
    from gateway.forward import deadletter
    from gateway.forward.storesink import STORE_CONSUMER

    config = load(config_file, data_dir)
    now = time.time_ns()
    names = [up.name for up in config.upstreams]
    if config.upstreams and config.store_enabled:
        names.append(STORE_CONSUMER)
    rows: list[dict[str, Any]] = [
        {
            "upstream": "store" if name == STORE_CONSUMER else name,
            "pending_records": 0,
            "pending_bytes": 0,
            "oldest_pending_age_seconds": None,
            "deadletter_entries": 0,
            "deadletter_lines": 0,
        }
        for name in names
    ]
    try:
        for shard in config.shards() if config.upstreams else []:
            if shard.worker and not shard.buffer_path.is_dir():
                continue
            wal = build_wal(shard, read_only=True)
            wal.open()
            for name, row in zip(names, rows, strict=True):
                status = wal.status(name)
                letters = deadletter.list_letters(shard.deadletter_path, name)
                row["pending_records"] += status.pending_records
                row["pending_bytes"] += status.pending_bytes
                if status.oldest_pending_ns is not None:
                    age = round(max(0.0, (now - status.oldest_pending_ns) / 1e9), 3)
                    row["oldest_pending_age_seconds"] = max(
                        age, row["oldest_pending_age_seconds"] or 0.0
                    )
                row["deadletter_entries"] += len(letters)
                row["deadletter_lines"] += sum(x.lines for x in letters)
    except StorageError as e:
        fail(str(e), 1)
    health = _live_health(config)
    for row in rows:
        check = health.get(str(row["upstream"]), {})
        row["health"] = check.get("status", "not running" if not health else "-")
        row["health_message"] = check.get("message")
    if as_json:
        click.echo(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
        return
    if not rows:
        click.echo("no upstream configured: accepted writes go straight to the local store")
        return
    print_table(
        [
            "UPSTREAM",
            "HEALTH",
            "PENDING_RECORDS",
            "PENDING_BYTES",
            "OLDEST_PENDING",
            "DEAD_LETTERS",
        ],
        [
            [
                str(r["upstream"]),
                str(r["health"]),
                str(r["pending_records"]),
                str(r["pending_bytes"]),
                "-"
                if r["oldest_pending_age_seconds"] is None
                else f"{r['oldest_pending_age_seconds']:.1f}s",
                f"{r['deadletter_entries']} ({r['deadletter_lines']} lines)",
            ]
            for r in rows
        ],
    )


def _live_health(config: Config) -> dict[str, dict[str, str]]:
    """The running gateway's /health checks by name ({} when it does not answer)."""
    import ssl
    import urllib.error
    import urllib.request

    host, _, port = config.server.listen.rpartition(":")
    if host in ("0.0.0.0", "", "::", "[::]"):
        host = "127.0.0.1"
    scheme = "https" if config.server.tls_cert else "http"
    context = ssl._create_unverified_context() if scheme == "https" else None  # our own listener
    try:
        with urllib.request.urlopen(
            f"{scheme}://{host}:{port}/health", timeout=2, context=context
        ) as response:
            body = response.read()
    except urllib.error.HTTPError as e:  # 503 while refusing writes still has the checks
        body = e.read()
    except (OSError, ValueError):
        return {}
    try:
        checks = orjson.loads(body).get("checks", [])
    except (orjson.JSONDecodeError, AttributeError):
        return {}
    return {str(c.get("name")): c for c in checks if isinstance(c, dict)}


@click.group("deadletter")
def deadletter_group() -> None:
    """List, replay or purge writes that upstreams refused for good."""


@deadletter_group.command("list")
@click.option("--upstream", default=None, help="Only this upstream.")
@click.option("--json", "as_json", is_flag=True, help="JSON output (with the data).")
@config_options
def deadletter_list(
    upstream: str | None, as_json: bool, config_file: str | None, data_dir: str | None
) -> None:
    """List dead letters: when, where, why, how many lines."""
    from dataclasses import asdict

    from gateway.forward import deadletter

    config = load(config_file, data_dir)
    known_upstream(config, upstream)
    try:
        letters = [
            letter
            for shard in config.shards()
            for letter in deadletter.list_letters(shard.deadletter_path, upstream)
        ]
        letters.sort(key=lambda x: x.time)
    except StorageError as e:
        fail(str(e), 1)
    if as_json:
        click.echo(orjson.dumps([asdict(x) for x in letters], option=orjson.OPT_INDENT_2).decode())
        return
    print_table(
        ["TIME", "UPSTREAM", "DATABASE", "STATUS", "LINES", "MESSAGE"],
        [
            [x.time, x.upstream, x.database, str(x.status), str(x.lines), x.message[:120]]
            for x in letters
        ],
    )


@deadletter_group.command("replay")
@click.option("--upstream", default=None, help="Only this upstream.")
@config_options
def deadletter_replay(upstream: str | None, config_file: str | None, data_dir: str | None) -> None:
    """Send dead letters to their upstream again (now if the gateway runs, else at its start)."""
    from gateway.forward import deadletter

    config = load(config_file, data_dir)
    known_upstream(config, upstream)
    try:
        count = sum(
            deadletter.queue_replay(shard.deadletter_path, upstream) for shard in config.shards()
        )
    except StorageError as e:
        fail(str(e), 1)
    click.echo(f"queued {count} dead letter(s) for replay", err=True)


@deadletter_group.command("purge")
@click.option("--upstream", default=None, help="Only this upstream.")
@config_options
def deadletter_purge(upstream: str | None, config_file: str | None, data_dir: str | None) -> None:
    """Delete dead letters."""
    from gateway.forward import deadletter

    config = load(config_file, data_dir)
    known_upstream(config, upstream)
    try:
        count = sum(deadletter.purge(shard.deadletter_path, upstream) for shard in config.shards())
    except StorageError as e:
        fail(str(e), 1)
    click.echo(f"purged {count} dead letter(s)", err=True)
