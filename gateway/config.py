"""Configuration: the TOML file, its defaults, and its validation.

Every option has a default here and only here. The file is read with tomllib, `${VAR}`
references in strings are expanded from the environment, durations ("30s", "1h", "30d") and
sizes ("10GiB", "50MB", plain ints) are converted, unknown keys are errors that name the file
and the key. The result is a tree of frozen dataclasses that the rest of the gateway reads.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from gateway.errors import ConfigError
from gateway.units import format_duration, parse_duration, parse_size, parse_time

FsyncMode = Literal["always", "interval", "never"]
AckMode = Literal["buffer", "upstream"]
UpstreamApi = Literal["v1", "v2", "v3"]
OverflowPolicy = Literal["block", "drop_oldest"]
MissingDatabasePolicy = Literal["retry", "deadletter"]
LogFormat = Literal["auto", "json", "console"]
LogLevel = Literal["debug", "info", "warning", "error"]

CONFIG_ENV = "INFLUX_GATEWAY_CONFIG"
DEFAULT_CONFIG_NAME = "influx-gateway.toml"


class Duration(float):
    """Seconds, written in the file as "500ms", "30s", "5m", "1h", "30d" or a number of seconds."""


class Size(int):
    """Bytes, written in the file as "64KiB", "10GiB", "50MB" or a plain number."""


class Timestamp(int):
    """Nanoseconds since the epoch, written in the file as an RFC3339 string or a TOML datetime."""


@dataclass(frozen=True)
class ServerConfig:
    listen: str = "127.0.0.1:8086"
    max_body_bytes: Size = Size(50_000_000)
    partial_writes: bool = True
    ack: AckMode = "buffer"
    tls_cert: str = ""
    tls_key: str = ""
    read_timeout: Duration = Duration(30)
    max_line_bytes: Size = Size(1_048_576)
    max_lines: int = 1_000_000
    max_header_bytes: Size = Size(65_536)
    shutdown_timeout: Duration = Duration(10)
    max_concurrent_requests: int = 256
    workers: int = 1
    validation_nice: int = 0  # added to the nice value of the body validation threads


@dataclass(frozen=True)
class AuthConfig:
    policy_file: str = ""  # empty: <data_dir>/policy.toml; relative: to the config file's folder


@dataclass(frozen=True)
class PrecisionOverride:
    databases: tuple[str, ...] = ("*",)
    guard: bool | None = None
    max_future: Duration | None = None
    min_time: Timestamp | None = None
    round_to: Duration | None = None


@dataclass(frozen=True)
class PrecisionConfig:
    guard: bool = True
    max_future: Duration = Duration(3600)
    min_time: Timestamp = Timestamp(31_536_000 * 10**9)  # 1971-01-01T00:00:00Z
    overrides: tuple[PrecisionOverride, ...] = ()


@dataclass(frozen=True)
class RewriteConfig:
    match: str = ""
    database: str = ""


@dataclass(frozen=True)
class BufferConfig:
    dir: str = "buffer"
    max_bytes: Size = Size(10 * 2**30)
    fsync: FsyncMode = "always"
    fsync_interval: Duration = Duration(1)
    segment_bytes: Size = Size(64 * 2**20)


@dataclass(frozen=True)
class StoreConfig:
    enabled: bool | None = None  # None: enabled exactly when no upstream is configured
    dir: str = "store"
    databases: tuple[str, ...] = ("*",)
    retention: Duration = Duration(30 * 86400)  # 0: keep forever


@dataclass(frozen=True)
class UpstreamConfig:
    name: str = ""
    url: str = ""
    api: UpstreamApi = "v2"
    token: str = ""
    token_file: str = ""
    username: str = ""
    org: str = ""
    databases: tuple[str, ...] = ("*",)
    gzip: bool = True
    batch_max_lines: int = 10_000
    batch_max_bytes: Size = Size(10_000_000)
    flush_interval: Duration = Duration(1)
    timeout: Duration = Duration(30)
    concurrency: int = 4
    retry_max_delay: Duration = Duration(60)
    on_overflow: OverflowPolicy = "block"
    on_missing_database: MissingDatabasePolicy = "retry"
    tls_verify: bool = True
    ca_file: str = ""


@dataclass(frozen=True)
class LogConfig:
    level: LogLevel = "info"
    format: LogFormat = "auto"


@dataclass(frozen=True)
class Config:
    data_dir: str = "gateway-data"
    server: ServerConfig = field(default_factory=ServerConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    precision: PrecisionConfig = field(default_factory=PrecisionConfig)
    rewrite: tuple[RewriteConfig, ...] = ()
    buffer: BufferConfig = field(default_factory=BufferConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    upstreams: tuple[UpstreamConfig, ...] = ()
    log: LogConfig = field(default_factory=LogConfig)
    # Where the file came from (None: built-in defaults); relative paths resolve against it.
    source: str | None = None
    base_dir: str = "."
    # Which worker's data shard this is (`run --workers N`): 0 is the data dir's own buffer,
    # store and dead letters; worker K > 0 keeps its own beside them, named `<dir>.worker-K`.
    worker: int = 0

    @property
    def data_path(self) -> Path:
        """The data directory as a path."""
        return Path(self.data_dir)

    @property
    def policy_path(self) -> Path:
        """The token policy file."""
        if not self.auth.policy_file:
            return self.data_path / "policy.toml"
        return _under(Path(self.base_dir), self.auth.policy_file)

    @property
    def buffer_path(self) -> Path:
        """The write-ahead buffer directory (of this worker's shard)."""
        return self._shard(_under(self.data_path, self.buffer.dir))

    @property
    def store_path(self) -> Path:
        """The local store directory (of this worker's shard)."""
        return self._shard(_under(self.data_path, self.store.dir))

    @property
    def deadletter_path(self) -> Path:
        """The dead-letter directory (of this worker's shard)."""
        return self._shard(self.data_path / "deadletter")

    def _shard(self, path: Path) -> Path:
        return path if self.worker == 0 else path.with_name(f"{path.name}.worker-{self.worker}")

    def for_worker(self, worker: int) -> Config:
        """The same configuration, on worker `worker`'s data shard."""
        return dataclasses.replace(self, worker=worker)

    def shards(self) -> list[Config]:
        """This config on every data shard that exists: 0, then each `*.worker-K` found."""
        base = self.for_worker(0)
        found: set[int] = set()
        for path in (base.buffer_path, base.store_path, base.deadletter_path):
            for sibling in path.parent.glob(f"{path.name}.worker-*"):
                suffix = sibling.name.rsplit("-", 1)[1]
                if suffix.isdigit() and int(suffix) > 0 and sibling.is_dir():
                    found.add(int(suffix))
        return [base] + [base.for_worker(k) for k in sorted(found)]

    @functools.cached_property
    def gzip_upstreams(self) -> frozenset[str]:
        """The names of the upstreams sent gzip bodies (`gzip = true`)."""
        return frozenset(up.name for up in self.upstreams if up.gzip)

    @property
    def store_enabled(self) -> bool:
        """Whether accepted writes go to the local store."""
        if self.store.enabled is None:
            return not self.upstreams
        return self.store.enabled


def _under(base: Path, path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() else base / p


# --------------------------------------------------------------------------------------------
# Value conversion (the units themselves: units.py)

_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def expand_env(value: str, env: Mapping[str, str]) -> str:
    """Replace every ${VAR} with the environment variable's value; a missing one is an error."""

    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in env:
            raise ValueError(f"environment variable {name} is not set (referenced as ${{{name}}})")
        return env[name]

    return _ENV_RE.sub(sub, value)


# --------------------------------------------------------------------------------------------
# Generic, type-driven loading of the dataclass tree


def _convert(tp: Any, value: object, key: str, env: Mapping[str, str]) -> object:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(args[0], value, key, env)
    if isinstance(value, str):
        value = expand_env(value, env)
    if tp is Duration:
        return Duration(parse_duration(value))
    if tp is Size:
        return Size(parse_size(value))
    if tp is Timestamp:
        return Timestamp(parse_time(value))
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            choices = ", ".join(f'"{a}"' for a in allowed)
            raise ValueError(f"must be one of {choices}, got {value!r}")
        return value
    if origin is tuple:
        item_tp = typing.get_args(tp)[0]
        if isinstance(value, str) and item_tp is str:
            value = [value]
        if not isinstance(value, list):
            raise ValueError(f"expected a list, got {value!r}")
        return tuple(_convert(item_tp, v, f"{key}[{i}]", env) for i, v in enumerate(value))
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ValueError(f"expected a table, got {value!r}")
        return _build(tp, value, key, env)
    if tp is bool:
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected an integer, got {value!r}")
        if value < 0:
            raise ValueError(f"must not be negative, got {value}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ValueError(f"expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {tp!r}")  # pragma: no cover - a bug in this module


_INTERNAL_FIELDS = {"source", "base_dir", "worker"}


def _build(cls: Any, table: dict[str, Any], prefix: str, env: Mapping[str, str]) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.name not in _INTERNAL_FIELDS]
    kwargs: dict[str, object] = {}
    for key, value in table.items():
        full = f"{prefix}.{key}" if prefix else key
        if key not in names:
            known = ", ".join(names)
            raise ConfigError(f"unknown key (known keys here: {known})", key=full)
        try:
            kwargs[key] = _convert(hints[key], value, full, env)
        except ConfigError:
            raise
        except ValueError as e:
            raise ConfigError(str(e), key=full) from None
    return cls(**kwargs)


# --------------------------------------------------------------------------------------------
# Entry points


def find_config_file(explicit: str | None, env: Mapping[str, str]) -> Path | None:
    """-c FILE, else $INFLUX_GATEWAY_CONFIG, else ./influx-gateway.toml if present, else None."""
    if explicit:
        return Path(explicit)
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV])
    default = Path(DEFAULT_CONFIG_NAME)
    return default if default.is_file() else None


def load_config(
    path: Path | None,
    *,
    env: Mapping[str, str] | None = None,
    data_dir: str | None = None,
) -> Config:
    """Load and validate the config file (None: defaults); `data_dir` overrides the file's."""
    env = os.environ if env is None else env
    table: dict[str, Any] = {}
    source = None
    base_dir = "."
    if path is not None:
        source = str(path)
        base_dir = str(path.parent)
        try:
            table = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError("config file not found", file=source) from None
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"cannot read config file: {e}", file=source) from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"invalid TOML: {e}", file=source) from None
    try:
        config: Config = _build(Config, table, "", env)
        config = dataclasses.replace(config, source=source, base_dir=base_dir)
        if path is not None and "data_dir" in table:
            config = dataclasses.replace(
                config, data_dir=str(_under(Path(base_dir), config.data_dir))
            )
        if data_dir is not None:
            config = dataclasses.replace(config, data_dir=data_dir)
        validate(config)
    except ConfigError as e:
        if e.file is None and source is not None:
            raise ConfigError(str(e), file=source) from None
        raise
    return config


def validate(config: Config) -> None:
    """Cross-field checks that the types alone cannot express."""
    _host, sep, port = config.server.listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f'must be HOST:PORT, got "{config.server.listen}"', key="server.listen")
    if bool(config.server.tls_cert) != bool(config.server.tls_key):
        raise ConfigError("tls_cert and tls_key must be set together", key="server.tls_cert")
    if config.server.workers < 1:
        raise ConfigError("must be at least 1", key="server.workers")
    if config.server.max_concurrent_requests < 1:
        raise ConfigError("must be at least 1", key="server.max_concurrent_requests")
    if config.server.validation_nice > 19:
        raise ConfigError(
            f"must be from 0 to 19, got {config.server.validation_nice}",
            key="server.validation_nice",
        )
    for i, rule in enumerate(config.rewrite):
        key = f"rewrite[{i}]"
        if not rule.match or not rule.database:
            raise ConfigError("needs both match and database", key=key)
        try:
            pattern = re.compile(rule.match)
        except re.error as e:
            raise ConfigError(f"invalid regular expression: {e}", key=f"{key}.match") from None
        for group in re.findall(r"\\(\d+)", rule.database):
            if int(group) > pattern.groups:
                raise ConfigError(
                    f"refers to group \\{group} but the pattern has {pattern.groups} group(s)",
                    key=f"{key}.database",
                )
    names: set[str] = set()
    for i, up in enumerate(config.upstreams):
        key = f"upstreams[{i}]"
        if not up.name:
            raise ConfigError("name is required", key=f"{key}.name")
        if up.name in names:
            raise ConfigError(f'duplicate upstream name "{up.name}"', key=f"{key}.name")
        names.add(up.name)
        if not re.match(r"^https?://[^/\s]+", up.url):
            raise ConfigError(
                f'must be an http:// or https:// URL, got "{up.url}"', key=f"{key}.url"
            )
        if up.token and up.token_file:
            raise ConfigError("set token or token_file, not both", key=f"{key}.token")
        if up.concurrency < 1:
            raise ConfigError("must be at least 1", key=f"{key}.concurrency")
        if up.batch_max_lines < 1:
            raise ConfigError("must be at least 1", key=f"{key}.batch_max_lines")


SECRET_KEYS = frozenset({"token", "password"})


def redacted(config: Config) -> dict[str, Any]:
    """The effective config as plain data, every secret replaced by "<redacted>"."""

    def plain(value: object, key: str) -> object:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {
                f.name: plain(getattr(value, f.name), f.name)
                for f in dataclasses.fields(value)
                if f.name not in _INTERNAL_FIELDS and getattr(value, f.name) is not None
            }
        if isinstance(value, tuple):
            return [plain(v, key) for v in value]
        if key in SECRET_KEYS and value:
            return "<redacted>"
        if isinstance(value, Timestamp):
            return datetime.fromtimestamp(value / 1e9, tz=UTC)
        if isinstance(value, Duration):
            return format_duration(value)
        if isinstance(value, Size | bool | int | float | str):
            return value
        return str(value)

    data = plain(config, "")
    assert isinstance(data, dict)
    return data
