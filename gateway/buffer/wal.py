"""The write-ahead buffer: one segmented log, appended once per accepted write, and one durable
cursor per consumer (each upstream, and the local store when upstreams exist).

Fan-out costs no extra writes: every consumer reads the same records from its own cursor.
Segments are deleted once every cursor has passed them. The buffer is bounded by `max_bytes`:
when full, a consumer with `drop_oldest` gives up its oldest segment (counted), otherwise new
appends are refused with StorageFullError (the HTTP layer answers 503).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import structlog

from gateway.buffer.cursor import (
    Cursor,
    CursorDamaged,
    ensure_directory,
    load_cursor,
    store_cursor,
)
from gateway.buffer.record import Record
from gateway.buffer.segmentlog import FsyncMode, Position, RecoveryReport, SegmentLog
from gateway.buffer.tailcache import Limits
from gateway.errors import CorruptRecordError, StorageFullError

log = structlog.get_logger("gateway.buffer")
LOG_DIR = "log"
CURSOR_DIR = "cursors"
# The newest records stay in memory too (tailcache.py): consumers that keep up never read them
# back from disk. Bounded, and released as soon as every consumer has passed them.
TAIL_CACHE_BYTES = 32 * 2**20


@dataclass(frozen=True, slots=True)
class Consumer:
    """One reader of the log: an upstream or the local store."""

    name: str
    drop_oldest: bool = False


@dataclass(frozen=True, slots=True)
class ConsumerStatus:
    """What is pending for one consumer."""

    name: str
    pending_bytes: int
    pending_records: int
    oldest_pending_ns: int | None  # receive time of the oldest pending record


@dataclass(frozen=True, slots=True)
class Dropped:
    """What a drop_oldest consumer gave up to make room."""

    consumer: str
    records: int
    lines: int


@dataclass(frozen=True, slots=True)
class Damaged:
    """What a consumer skipped at damage in the log: `records`/`lines` never delivered to it
    (at least: a segment without its summary sidecar may have held more)."""

    consumer: str
    segment: int
    offset: int
    records: int
    lines: int
    reason: str


class WriteAheadLog:
    """The segmented log plus the cursors of its consumers."""

    def __init__(
        self,
        directory: Path,
        consumers: Sequence[Consumer],
        *,
        max_bytes: int,
        fsync: FsyncMode = "always",
        fsync_interval: float = 1.0,
        segment_bytes: int = 64 * 2**20,
        tail_cache_bytes: int = TAIL_CACHE_BYTES,
        tail_keeps_gzip: bool = False,
        read_only: bool = False,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.directory = directory
        self.consumers = {c.name: c for c in consumers}
        self.max_bytes = max_bytes
        self._read_only = read_only
        self._clock = clock
        self._cursor_dir = directory / CURSOR_DIR
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="wal")
        self.log = SegmentLog(
            directory / LOG_DIR,
            segment_bytes=segment_bytes,
            fsync=fsync,
            fsync_interval=fsync_interval,
            read_only=read_only,
            executor=None if read_only else self._executor,
            tail_cache_bytes=tail_cache_bytes,
            tail_keeps_gzip=tail_keeps_gzip,
            recycle=True,
        )
        self._cursors: dict[str, Cursor] = {}
        self._wakeups: dict[str, asyncio.Event] = {}
        self.on_drop: Callable[[Dropped], None] = lambda dropped: None

    # -- lifecycle -------------------------------------------------------------------------------

    def open(self) -> RecoveryReport:
        """Recover the log (torn tail cut off) and load every consumer's cursor.

        A consumer seen for the first time starts at the current end of the log: it receives
        writes accepted from now on (backfill older data with `influx-gateway replay`).
        """
        if not self._read_only:
            ensure_directory(self._cursor_dir)
        report = self.log.open()
        oldest = self._oldest_segment()
        for name in self.consumers:
            try:
                cursor = load_cursor(self._cursor_dir, name)
            except CursorDamaged as e:
                log.warning("damaged cursor: resending from the oldest buffered data", error=str(e))
                cursor = Cursor(Position(oldest, 0))
            if cursor is None:
                cursor = Cursor(self.log.end)
                if not self._read_only:
                    store_cursor(self._cursor_dir, name, cursor, durable=True)
            elif cursor.position.segment < oldest:  # its segments were deleted (dropped)
                cursor = Cursor(Position(oldest, 0))
            self._cursors[name] = cursor
        return report

    async def close(self) -> None:
        """Finish pending appends and release the log."""
        await self.log.close()
        self._executor.shutdown(wait=False)

    # -- writing ---------------------------------------------------------------------------------

    async def append(self, record: Record) -> Position:
        """Append one accepted write; durable (per fsync mode) when it returns."""
        if self.log.total_bytes >= self.max_bytes:
            self._make_room()
        position = await self.log.append((record,))
        self.appended()
        return position

    def submit(
        self, record: Record, future: asyncio.Future[Position], loop: asyncio.AbstractEventLoop
    ) -> bool:
        """Start `append` from another thread (the write path's validation thread), when there
        is room without dropping anything: False, doing nothing, otherwise (then `append`).
        `future` gets the position once durable; the caller then calls `appended` on the loop.
        """
        if self.log.total_bytes >= self.max_bytes:
            return False
        return self.log.submit((record,), future, loop)

    def appended(self) -> None:
        """Wake the consumers: records were appended (on the loop)."""
        for event in self._wakeups.values():
            event.set()

    def _make_room(self) -> None:
        """Drop the oldest segment of drop_oldest consumers; refuse when still full."""
        while self.log.total_bytes >= self.max_bytes:
            oldest = self._oldest_segment()
            if oldest >= self.log.active_segment:
                break
            holders = [n for n, c in self._cursors.items() if c.position.segment <= oldest]
            if not holders or any(not self.consumers[n].drop_oldest for n in holders):
                break
            summary = self.log.segment_summary(oldest)
            for name in holders:
                cursor = self._cursors[name]
                self.on_drop(
                    Dropped(
                        name,
                        summary.records - cursor.records_in_segment,
                        summary.lines - cursor.lines_in_segment,
                    )
                )
                self._cursors[name] = Cursor(Position(oldest + 1, 0))
                store_cursor(self._cursor_dir, name, self._cursors[name])
            self.log.delete_segments_before(oldest + 1)
        if self.log.total_bytes >= self.max_bytes:
            raise StorageFullError(
                f"{self.log.total_bytes} bytes pending, the limit (buffer.max_bytes) is "
                f"{self.max_bytes}"
            )

    # -- consuming -------------------------------------------------------------------------------

    def cursor(self, name: str) -> Cursor:
        """Where a consumer has got to."""
        return self._cursors[name]

    def wakeup(self, name: str) -> asyncio.Event:
        """An event set whenever a record is appended (the consumer clears it before reading)."""
        event = self._wakeups.get(name)
        if event is None:
            event = self._wakeups[name] = asyncio.Event()
        return event

    def read(
        self,
        start: Position,
        *,
        max_records: int,
        max_lines: int,
        max_bytes: int,
        as_stored: Callable[[Record], bool] | None = None,
    ) -> list[tuple[Position, Record]]:
        """Records from `start` on, up to the limits (at least one when any is there).

        Records read back with their lines still a stored gzip stream are inflated here, in the
        reading thread, except those `as_stored` says the caller sends as the stream they are.
        Damage (a closed segment's record failing its checksum, or a stream that does not
        inflate) ends the result before it; met at `start`, it raises CorruptRecordError, for
        the caller to `skip_damage`.
        """
        out: list[tuple[Position, Record]] = []
        lines = size = 0
        previous = start
        try:
            for position, record in self.log.read(start):
                if not record.inflated and (as_stored is None or not as_stored(record)):
                    try:
                        record.inflate()
                    except CorruptRecordError as e:
                        raise CorruptRecordError(
                            str(e),
                            segment=position.segment,
                            offset=previous.offset if previous.segment == position.segment else 0,
                            resume=(position.segment, position.offset),
                            lines=record.lines,
                        ) from None
                out.append((position, record))
                previous = position
                lines += record.lines
                size += record.size
                if len(out) >= max_records or lines >= max_lines or size >= max_bytes:
                    break
        except CorruptRecordError:
            if out:  # what precedes the damage first; the next read starts at it (and raises)
                return out
            raise
        return out

    async def read_async(
        self,
        start: Position,
        *,
        max_records: int,
        max_lines: int,
        max_bytes: int,
        as_stored: Callable[[Record], bool] | None = None,
    ) -> list[tuple[Position, Record]]:
        """`read`: from the tail cache when it holds `start` (its records made by the write
        path, lines in memory), else in a worker thread."""
        cached = self.log.read_cached(start, Limits(max_records, max_lines, max_bytes))
        if cached is not None:
            return cached
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor,
            lambda: self.read(
                start,
                max_records=max_records,
                max_lines=max_lines,
                max_bytes=max_bytes,
                as_stored=as_stored,
            ),
        )

    async def skip_damage(self, name: str, error: CorruptRecordError) -> Damaged:
        """Move a consumer past damage that its read (from its cursor) ran into: past the one bad
        record when reading can resume after it, else to the next segment. Committed like any
        cursor, and logged as an error; returns what the consumer will never get."""
        cursor = self._cursors[name]
        segment = cursor.position.segment if error.segment is None else error.segment
        offset = cursor.position.offset if error.offset is None else error.offset
        if error.resume is not None:
            new = cursor.advanced(Position(*error.resume), 1, error.lines)
            records, lines = 1, error.lines
        else:
            loop = asyncio.get_running_loop()
            summary = await loop.run_in_executor(self._executor, self.log.segment_summary, segment)
            passed = cursor if cursor.position.segment == segment else Cursor(Position(segment, 0))
            records = max(0, summary.records - passed.records_in_segment)
            lines = max(0, summary.lines - passed.lines_in_segment)
            new = Cursor(Position(segment + 1, 0))
        await self.commit(name, new)
        log.error(
            "damaged record in the buffer (checksum or gzip stream): skipped, never delivered",
            consumer=name,
            segment=segment,
            offset=offset,
            records=records,
            lines=lines,
            reason=str(error),
        )
        return Damaged(name, segment, offset, records, lines, str(error))

    async def commit(self, name: str, cursor: Cursor) -> None:
        """Store a consumer's new cursor (never backwards), then delete passed segments."""
        current = self._cursors[name]
        if cursor.position <= current.position:
            return
        self._cursors[name] = cursor
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._persist, name, cursor)

    def _persist(self, name: str, cursor: Cursor) -> None:
        store_cursor(self._cursor_dir, name, cursor)
        slowest = min(c.position for c in self._cursors.values())
        if self.log.tail is not None:
            self.log.tail.release(slowest)
        lowest = slowest.segment
        if lowest > self._oldest_segment():
            self.log.delete_segments_before(lowest)

    # -- status ----------------------------------------------------------------------------------

    def _oldest_segment(self) -> int:
        segments = self.log.segments()
        return segments[0][0] if segments else self.log.end.segment

    def status(self, name: str) -> ConsumerStatus:
        """Pending bytes, records and the oldest pending receive time of one consumer."""
        cursor = self._cursors[name]
        segments = [(sid, size) for sid, _, size in self.log.segments()]
        pending_bytes = pending_records = 0
        for sid, size in segments:
            if sid < cursor.position.segment:
                continue
            summary = self.log.segment_summary(sid)
            if sid == cursor.position.segment:
                pending_bytes += max(0, size - cursor.position.offset)
                pending_records += max(0, summary.records - cursor.records_in_segment)
            else:
                pending_bytes += size
                pending_records += summary.records
        oldest = None
        if pending_records:
            try:
                first = next(self._records_from(cursor.position), None)
            except CorruptRecordError:  # damage at the cursor: its consumer skips it
                first = None
            oldest = first.received_ns if first is not None else None
        return ConsumerStatus(name, pending_bytes, pending_records, oldest)

    def _records_from(self, position: Position) -> Iterator[Record]:
        for _, record in self.log.read(position):
            yield record
