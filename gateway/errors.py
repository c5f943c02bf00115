"""The one exception hierarchy of influx-gateway.

    GatewayError                 base of everything we raise on purpose
    ├── ConfigError              invalid config file or option (CLI exit 2); names file and key
    ├── PolicyError              invalid token policy (CLI exit 2, or reload refused); names file
    ├── StartupError             cannot start: port in use, data dir not writable (CLI exit 3)
    ├── LineProtocolBodyError    the body as a whole is not line protocol (e.g. invalid UTF-8)
    └── StorageError             the durable log could not take a write (I/O error)
        ├── StorageFullError     no space left / buffer full: answer 503, retry later
        └── CorruptRecordError   a record failed its checksum where a torn tail is not possible

Foreign exceptions (OSError, aiohttp client errors, tomllib errors) are translated into these at
the boundary where they occur, so callers only ever catch our own types.
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base class of every error influx-gateway raises on purpose."""


class ConfigError(GatewayError):
    """The configuration is invalid; the message names the file, the key and the problem."""

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None) -> None:
        self.file = file
        self.key = key
        where = ""
        if file:
            where += f"{file}: "
        if key:
            where += f"{key}: "
        super().__init__(f"{where}{message}")


class PolicyError(GatewayError):
    """The token policy file is invalid; the message names the file and the problem."""

    def __init__(self, message: str, *, file: str | None = None) -> None:
        self.file = file
        super().__init__(f"{file}: {message}" if file else message)


class StartupError(GatewayError):
    """The gateway cannot start (port in use, data dir not writable)."""


class LineProtocolBodyError(GatewayError):
    """The request body as a whole cannot be line protocol (e.g. it is not valid UTF-8)."""


class StorageError(GatewayError):
    """The durable log could not take or give back a record."""


class StorageFullError(StorageError):
    """No room to append (disk full or buffer at its limit); the write may be retried later."""


class CorruptRecordError(StorageError):
    """A record failed its checksum somewhere a torn tail cannot explain. In a segment log:
    `segment` and `offset` say where; `resume` is the (segment, offset) after the one bad record
    when reading can go on there, None when the rest of the segment is unreadable."""

    def __init__(
        self,
        message: str,
        *,
        segment: int | None = None,
        offset: int | None = None,
        resume: tuple[int, int] | None = None,
        lines: int = 0,
    ) -> None:
        super().__init__(message)
        self.segment = segment
        self.offset = offset
        self.resume = resume
        self.lines = lines  # of the one bad record, when `resume` is known
