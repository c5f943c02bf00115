"""What every subcommand shares: exit codes, -c/--data-dir, loading the config, errors, tables."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from datetime import datetime
from typing import Any, NoReturn, TypeVar

import click

from gateway.config import Config, find_config_file, load_config
from gateway.errors import ConfigError
from gateway.units import format_time, parse_when

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


def when(value: str | None, now_ns: int) -> int | None:
    """A --start/--end/--expires value in nanoseconds (None when not given), exiting 2 when it
    is neither RFC3339 nor a duration."""
    if value is None:
        return None
    try:
        return parse_when(value, now_ns)
    except ValueError as e:
        fail(str(e))


def format_ns(ns: int | None) -> str:
    """RFC3339 UTC for a nanosecond timestamp (or "-")."""
    return "-" if ns is None else format_time(ns)


def rfc3339(moment: datetime) -> str:
    """An aware datetime as RFC3339 with Z for UTC."""
    return moment.isoformat().replace("+00:00", "Z")


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    """A plain aligned text table on stdout."""
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    for row in [headers, *rows]:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def known_upstream(config: Config, upstream: str | None) -> None:
    """Exit 2 naming the configured upstreams when `upstream` is not one of them."""
    if upstream is not None and upstream not in {up.name for up in config.upstreams}:
        known = ", ".join(up.name for up in config.upstreams) or "none"
        fail(f'no upstream named "{upstream}" in the config (upstreams: {known})')
