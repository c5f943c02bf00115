"""Durable per-consumer cursors: where each consumer of the write-ahead log has got to.

A cursor is a log position plus how many records and lines the consumer has passed inside that
position's segment (so pending counts need no scan). It lives in `<dir>/<consumer>.cursor`,
replaced atomically (temp, fsync, rename, fsync dir). A cursor that is lost or behind only
means a resend (at-least-once), never a loss; a cursor is never moved backwards.
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


def load_cursor(directory: Path, consumer: str) -> Cursor | None:
    """The stored cursor of a consumer, or None when it has none (or it is unreadable)."""
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
    except (OSError, ValueError, KeyError, TypeError):
        # A damaged cursor file: the caller starts the consumer from the oldest data (resend).
        return None


def store_cursor(directory: Path, consumer: str, cursor: Cursor) -> None:
    """Replace a consumer's cursor file atomically and durably."""
    data = orjson.dumps(
        {
            "segment": cursor.position.segment,
            "offset": cursor.position.offset,
            "records": cursor.records_in_segment,
            "lines": cursor.lines_in_segment,
        }
    )
    try:
        write_atomic(cursor_path(directory, consumer), data)
        fsync_directory(directory)
    except OSError as e:
        raise storage_error(e, f"cannot store the cursor of {consumer}") from e


def ensure_directory(directory: Path) -> None:
    """Create the cursor directory."""
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as e:
        raise StorageError(f"cannot create {directory}: {e.strerror or e}") from e
