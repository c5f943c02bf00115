"""The newest records of a segment log, kept in memory for consumers that keep up with it.

Every record the writer makes durable is also added here, in log order, with the position it
ends at. A consumer whose cursor points into this tail reads the records from memory: no
read-back from disk, no second CRC check, no thread hop. A consumer further behind (after a
restart, or after an upstream outage longer than the cache holds) misses and reads the files;
once it has caught up, its cursor lands in the cache again.

A cached record keeps its line protocol, and the gzip stream it was stored as
(Record.stored_gzip) only when some consumer sends such streams on as they are (a gzip
upstream); never its frame head.
The cache is bounded by the bytes its records hold (the oldest entries go first) and entries
every consumer has passed are released early, so memory does not grow with what is buffered on
disk.

An entry is found by the position a cursor holds before reading it: the record's own start
and, for the first record of a new segment, also the end of the previous segment's last record
(where the cursor of a consumer that read that record stands). Thread-safe: the writer adds
from its worker thread, consumers read on the event loop.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, replace

from gateway.buffer.record import Record
from gateway.buffer.segmentwriter import Position


@dataclass(frozen=True, slots=True)
class Limits:
    """How much one read may return (it returns at least one record when any is there)."""

    max_records: int
    max_lines: int
    max_bytes: int


@dataclass(slots=True)
class _Entry:
    keys: tuple[Position, ...]
    end: Position
    record: Record


class TailCache:
    """A bounded, ordered, in-memory copy of the newest records of one log."""

    def __init__(self, max_bytes: int, *, keep_gzip: bool = False) -> None:
        self.max_bytes = max_bytes
        self.keep_gzip = keep_gzip
        self._lock = threading.Lock()
        self._entries: deque[_Entry] = deque()
        self._first = 0  # absolute number of _entries[0]
        self._index: dict[Position, int] = {}  # a cursor position -> absolute entry number
        self._bytes = 0
        self._last_end: Position | None = None  # end of the newest record added, even if evicted

    @property
    def size_bytes(self) -> int:
        """Bytes held (line protocol and stored gzip streams)."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, written: Sequence[tuple[Position, Position, Record]]) -> None:
        """Add records just made durable, in log order: (start, end, record) each."""
        with self._lock:
            for start, end, written_record in written:
                record = self._kept(written_record)
                last = self._last_end
                if last is not None and last > start:  # never expected: restart the tail
                    self._clear()
                    last = None
                keys = (start,) if last is None or last == start else (start, last)
                number = self._first + len(self._entries)
                for key in keys:
                    self._index[key] = number
                self._entries.append(_Entry(keys, end, record))
                self._bytes += _held(record)
                self._last_end = end
            while self._bytes > self.max_bytes and self._entries:
                self._pop_oldest()

    def read(self, start: Position, limits: Limits) -> list[tuple[Position, Record]] | None:
        """Records from `start` on, up to `limits`; None when `start` is not in the cache.

        A cursor at the end of the newest record added gets an empty list: there is nothing
        newer, on disk or here (every durable write is added).
        """
        with self._lock:
            number = self._index.get(start)
            if number is None:
                return [] if start == self._last_end else None
            out: list[tuple[Position, Record]] = []
            lines = size = 0
            for i in range(number - self._first, len(self._entries)):
                entry = self._entries[i]
                out.append((entry.end, entry.record))
                lines += entry.record.lines
                size += entry.record.size
                if (
                    len(out) >= limits.max_records
                    or lines >= limits.max_lines
                    or size >= limits.max_bytes
                ):
                    break
            return out

    def _kept(self, record: Record) -> Record:
        """What is kept of a written record (see the module docstring)."""
        stored_gzip = record.stored_gzip if self.keep_gzip else None
        if record.frame_head is None and record.stored_gzip is stored_gzip:
            return record
        if not record.inflated:  # read back lazily, not made by the write path: its stream is all
            return record  # it holds (and `_held` counts it), so keep it as it is
        return replace(record, frame_head=None, stored_gzip=stored_gzip)

    def release(self, position: Position) -> None:
        """Forget the entries that end at or before `position` (every consumer has passed it)."""
        with self._lock:
            while self._entries and self._entries[0].end <= position:
                self._pop_oldest()

    def clear(self) -> None:
        """Forget everything (the log was cut or reopened)."""
        with self._lock:
            self._clear()

    def _clear(self) -> None:
        self._first += len(self._entries)
        self._entries.clear()
        self._index.clear()
        self._bytes = 0
        self._last_end = None

    def _pop_oldest(self) -> None:
        entry = self._entries.popleft()
        self._first += 1
        for key in entry.keys:
            if self._index.get(key) == self._first - 1:
                del self._index[key]
        self._bytes -= _held(entry.record)


def _held(record: Record) -> int:
    """The bytes a cached record keeps in memory."""
    lines = record.size if record.inflated else 0
    return lines + (0 if record.stored_gzip is None else len(record.stored_gzip))
