"""The influx-gateway command line: parse arguments, then delegate. Exit codes 0 / 2 / 3."""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
import orjson
import tomlkit

from gateway.config import Config, find_config_file, load_config, parse_duration, redacted
from gateway.errors import ConfigError, PolicyError, StartupError, StorageError

EXIT_USAGE = 2
EXIT_STARTUP = 3

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print an error on stderr and exit with `code`."""
    click.echo(f"influx-gateway: error: {message}", err=True)
    sys.exit(code)


def config_options(func: F) -> F:
    """-c/--config and --data-dir, on every subcommand."""
    func = click.option(
        "--data-dir", "data_dir", default=None, help="Data directory (overrides data_dir)."
    )(func)
    func = click.option("-c", "--config", "config_file", default=None, help="Config file (TOML).")(
        func
    )
    return func


def load(config_file: str | None, data_dir: str | None) -> Config:
    """Load the config the way every subcommand does, exiting 2 on error."""
    try:
        return load_config(find_config_file(config_file, os.environ), data_dir=data_dir)
    except ConfigError as e:
        fail(str(e))


def parse_when(value: str | None, now_ns: int) -> int | None:
    """RFC3339, or a duration relative to now ("-1h"), to nanoseconds since the epoch."""
    if value is None:
        return None
    text = value.strip()
    if re.match(r"^[-+]?\d+(\.\d+)?(ns|us|ms|s|m|h|d|w)$", text):
        sign = -1 if text.startswith("-") else 1
        return now_ns + sign * int(parse_duration(text.lstrip("+-")) * 1e9)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        fail(f'invalid time "{value}": use RFC3339 (2024-01-01T00:00:00Z) or a duration like -1h')
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86400 + delta.seconds) * 10**9 + delta.microseconds * 1000


def format_ns(ns: int | None) -> str:
    """RFC3339 UTC for a nanosecond timestamp (or "-")."""
    if ns is None:
        return "-"
    seconds, frac = divmod(ns, 10**9)
    text = datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{frac:09d}".rstrip("0").rstrip(".") + "Z"


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    """A plain aligned text table on stdout."""
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    for row in [headers, *rows]:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="influx-gateway")
def main() -> None:
    """influx-gateway: an InfluxDB write gateway (v2 and v1 write API)."""


# ---------------------------------------------------------------------------------- run


@main.command()
@config_options
@click.option("--listen", default=None, help="HOST:PORT to listen on (overrides server.listen).")
@click.option("--workers", type=int, default=None, help="Worker processes (SO_REUSEPORT).")
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default=None,
    help="Log level (overrides [log] level).",
)
def run(
    config_file: str | None,
    data_dir: str | None,
    listen: str | None,
    workers: int | None,
    log_level: str | None,
) -> None:
    """Run the gateway."""
    import dataclasses

    from gateway.server import serve

    config = load(config_file, data_dir)
    if log_level is not None:
        config = dataclasses.replace(
            config,
            log=dataclasses.replace(config.log, level=log_level),  # type: ignore[arg-type]  # a click.Choice of the Literal's values
        )
    try:
        code = serve(config, listen=listen, workers=workers)
    except (ConfigError, PolicyError) as e:
        fail(str(e))
    except StartupError as e:
        fail(str(e), EXIT_STARTUP)
    sys.exit(code)


# ---------------------------------------------------------------------------------- config


@main.group("config")
def config_group() -> None:
    """Inspect the configuration."""


@config_group.command("check")
@config_options
def config_check(config_file: str | None, data_dir: str | None) -> None:
    """Validate config and policy; print the effective config with secrets redacted."""
    from gateway.auth.policyfile import load_policy

    config = load(config_file, data_dir)
    policy_note = "does not exist yet (run creates it)"
    if config.policy_path.exists():
        try:
            policy = load_policy(config.policy_path)
        except PolicyError as e:
            fail(str(e))
        policy_note = f"{len(policy.tokens)} token(s)"
    click.echo(f"# config: {config.source or 'built-in defaults'}")
    click.echo(f"# policy: {config.policy_path}: {policy_note}")
    click.echo(tomlkit.dumps(redacted(config)), nl=False)


# ---------------------------------------------------------------------------------- token


@main.group("token")
def token_group() -> None:
    """Create, list and revoke tokens in the policy file."""


def _policy_path(policy: str | None, config_file: str | None, data_dir: str | None) -> Path:
    return Path(policy) if policy else load(config_file, data_dir).policy_path


@token_group.command("create")
@click.argument("name")
@click.option("--write", "write", multiple=True, help="Database glob the token may write (repeat).")
@click.option("--read", "read", multiple=True, help="Database glob the token may read (repeat).")
@click.option("--expires", default=None, help="RFC3339 time or duration from now (30d).")
@click.option("--rate-limit", type=int, default=None, help="Lines per second.")
@click.option("--policy", default=None, help="Policy file (default: from the config).")
@config_options
def token_create(
    name: str,
    write: tuple[str, ...],
    read: tuple[str, ...],
    expires: str | None,
    rate_limit: int | None,
    policy: str | None,
    config_file: str | None,
    data_dir: str | None,
) -> None:
    """Create a token; prints the token alone on stdout."""
    from gateway.auth.policyfile import add_token

    path = _policy_path(policy, config_file, data_dir)
    expires_at = None
    if expires:
        relative = expires if expires[0] in "+-" else f"+{expires}"
        is_duration = re.match(r"^\+\d+(\.\d+)?(ns|us|ms|s|m|h|d|w)$", relative)
        when = parse_when(relative if is_duration else expires, time.time_ns())
        assert when is not None
        expires_at = datetime.fromtimestamp(when // 10**9, tz=UTC)
        if when <= time.time_ns():
            fail(
                f"--expires {expires}: {_rfc3339(expires_at)} is in the past; "
                "the token would never work"
            )
    try:
        token = add_token(
            path,
            name,
            write=list(write),
            read=list(read),
            expires=expires_at,
            rate_limit=rate_limit,
        )
    except PolicyError as e:
        fail(str(e))
    click.echo(token)
    scopes = f"write: {', '.join(write) or '-'}; read: {', '.join(read) or '-'}"
    until = _rfc3339(expires_at) if expires_at else "never"
    click.echo(
        f'created token "{name}" in {path} ({scopes}; expires: {until}).\n'
        "The token (on stdout) is shown only this once; only its hash is stored. Keep it safe.\n"
        "A running gateway accepts it within 2 s (or at once after SIGHUP). Clients send it as\n"
        '"Authorization: Token <token>".',
        err=True,
    )
    if not write and not read:
        click.echo("note: this token may neither write nor read (add --write/--read)", err=True)


def _rfc3339(moment: datetime) -> str:
    """An aware datetime as RFC3339 with Z for UTC."""
    return moment.isoformat().replace("+00:00", "Z")


@token_group.command("list")
@click.option("--policy", default=None, help="Policy file (default: from the config).")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@config_options
def token_list(
    policy: str | None, as_json: bool, config_file: str | None, data_dir: str | None
) -> None:
    """List token names, scopes and expiry (never a token or its hash)."""
    from gateway.auth.policyfile import load_policy

    path = _policy_path(policy, config_file, data_dir)
    try:
        loaded = load_policy(path)
    except PolicyError as e:
        fail(str(e))
    rows = [
        {
            "name": t.name,
            "write": list(t.write),
            "read": list(t.read),
            "expires": _rfc3339(t.expires) if t.expires else None,
            "rate_limit": t.rate_limit,
        }
        for t in loaded.tokens
    ]
    if as_json:
        click.echo(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
        return
    print_table(
        ["NAME", "WRITE", "READ", "EXPIRES", "RATE_LIMIT"],
        [
            [
                t.name,
                ",".join(t.write) or "-",
                ",".join(t.read) or "-",
                _rfc3339(t.expires) if t.expires else "never",
                str(t.rate_limit or "-"),
            ]
            for t in loaded.tokens
        ],
    )


@token_group.command("revoke")
@click.argument("name")
@click.option("--policy", default=None, help="Policy file (default: from the config).")
@config_options
def token_revoke(
    name: str, policy: str | None, config_file: str | None, data_dir: str | None
) -> None:
    """Remove a token from the policy file."""
    from gateway.auth.policyfile import remove_token

    path = _policy_path(policy, config_file, data_dir)
    try:
        remove_token(path, name)
    except PolicyError as e:
        fail(str(e))
    click.echo(f'revoked token "{name}" in {path}', err=True)


# ---------------------------------------------------------------------------------- store


@main.group("store")
def store_group() -> None:
    """Read the local store."""


def _open_store(config: Config) -> Any:
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


def _report_damage(store: Any) -> None:
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
    store = _open_store(load(config_file, data_dir))
    try:
        stats = store.stats()
    except StorageError as e:
        fail(str(e), 1)
    _show_stats(stats, as_json)
    _report_damage(store)


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
    start_ns, end_ns = parse_when(start, now), parse_when(end, now)
    store = _open_store(config)
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
    _report_damage(store)


# ---------------------------------------------------------------------------------- buffer


@main.group("buffer")
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


# ---------------------------------------------------------------------------------- deadletter


@main.group("deadletter")
def deadletter_group() -> None:
    """List, replay or purge writes that upstreams refused for good."""


def _known_upstream(config: Config, upstream: str | None) -> None:
    if upstream is not None and upstream not in {up.name for up in config.upstreams}:
        known = ", ".join(up.name for up in config.upstreams) or "none"
        fail(f'no upstream named "{upstream}" in the config (upstreams: {known})')


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
    _known_upstream(config, upstream)
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
    _known_upstream(config, upstream)
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
    _known_upstream(config, upstream)
    try:
        count = sum(deadletter.purge(shard.deadletter_path, upstream) for shard in config.shards())
    except StorageError as e:
        fail(str(e), 1)
    click.echo(f"purged {count} dead letter(s)", err=True)


# ---------------------------------------------------------------------------------- replay


@main.command("replay")
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
        store = _open_store(config)
        if from_store not in store.databases():
            fail(f'no database "{from_store}" in the store at {config.store_path}')
        now = time.time_ns()
        start_ns, end_ns = parse_when(start, now), parse_when(end, now)
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
        _report_damage(store)
    sys.exit(0 if not done.deadlettered and not done.invalid else 1)


if __name__ == "__main__":  # pragma: no cover
    main()
