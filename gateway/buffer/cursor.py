"""Durable per-consumer cursors: where each consumer of the write-ahead log has got to.

A cursor is a log position plus how many records and lines the consumer has passed inside that
position's segment (so pending counts need no scan). It lives in `<dir>/<consumer>.cursor`,
replaced atomically (temp, rename) but not fsynced: it moves many times a second, and a cursor
that a power cut sets back, or damages, only means a resend (at-least-once), never a loss --
a damaged cursor makes its consumer start again from the oldest segment kept. A cursor is
never moved backwards while running.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import orjson

from gateway.buffer.segmentfile import fsync_directory, storage_error, write_atomic
from gateway.buffer.segmentwriter import Position
from gateway.errors import StorageError

CURSOR_SUFFIX = ".cursor"
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass(frozen=True, slots=True)
class Cursor:
    """A consumer's place: the position after its last finished record, and what it passed in
    that segment."""

    position: Position
    records_in_segment: int = 0
    lines_in_segment: int = 0

    def advanced(self, position: Position, records: int, lines: int) -> Cursor:
        """This cursor moved to `position` after passing `records`/`lines` more records."""
        if position.segment != self.position.segment:
            return Cursor(position, records, lines)
        return Cursor(position, self.records_in_segment + records, self.lines_in_segment + lines)


def cursor_path(directory: Path, consumer: str) -> Path:
    """The file holding a consumer's cursor (the name made file-system safe)."""
    return directory / f"{_SAFE.sub('_', consumer)}{CURSOR_SUFFIX}"


class CursorDamaged(Exception):
    """The cursor file exists but cannot be read: resend from the oldest data."""


def load_cursor(directory: Path, consumer: str) -> Cursor | None:
    """The stored cursor of a consumer, None when it has none; CursorDamaged when unreadable."""
    path = cursor_path(directory, consumer)
    try:
        data = orjson.loads(path.read_bytes())
        return Cursor(
            Position(int(data["segment"]), int(data["offset"])),
            int(data.get("records", 0)),
            int(data.get("lines", 0)),
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CursorDamaged(f"{path}: {e}") from None


def store_cursor(directory: Path, consumer: str, cursor: Cursor, *, durable: bool = False) -> None:
    """Replace a consumer's cursor file atomically; durably only when asked (a consumer's first
    cursor: a missing file would make it start at the end of the log)."""
    data = orjson.dumps(
        {
            "segment": cursor.position.segment,
            "offset": cursor.position.offset,
            "records": cursor.records_in_segment,
            "lines": cursor.lines_in_segment,
        }
    )
    try:
        write_atomic(
            cursor_path(directory, consumer), data, fsync=os.fsync if durable else _no_fsync
        )
        if durable:
            fsync_directory(directory)
    except OSError as e:
        raise storage_error(e, f"cannot store the cursor of {consumer}") from e


def _no_fsync(fd: int) -> None:
    """Cursor files are not fsynced (see the module docstring)."""


def ensure_directory(directory: Path) -> None:
    """Create the cursor directory."""
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as e:
        raise StorageError(f"cannot create {directory}: {e.strerror or e}") from e
