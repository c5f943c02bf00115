"""The durable segmented append-only log: group commit in a writer thread, readers, housekeeping.

Records of any database go into numbered segment files (segmentfile.py). Callers `append` on
the event loop; appends that arrive while a flush runs wait for the next one, and the log's
writer thread hands all of them to the SegmentWriter (segmentwriter.py): one vectored write
plus one fsync, so N concurrent appends share about one fsync and the loop never blocks on the
disk. The thread flushes back to back, without a round trip through the event loop between
flushes (that round trip was a quarter of a flush cycle under load), and ends when idle. A
failed write is cut back to the last good end, so the log stays consistent and later appends
work once the cause (a full disk) is gone.

Readers (`read`, `segments`, `segment_summary`) only look at files, so a read-only SegmentLog in
another process (the CLI) sees what the writer has made durable, up to the current valid end.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Generator, Iterator, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import structlog

from gateway.buffer.record import Record
from gateway.buffer.segmentfile import (
    ScanEnd,
    SegmentSummary,
    list_segment_ids,
    list_segments,
    open_read,
    read_index,
    scan_segment,
    segment_path,
    storage_error,
    summarize_segment,
)
from gateway.buffer.segmentwriter import (
    START,
    FsyncMode,
    Position,
    RecoveryReport,
    SegmentWriter,
    Syscalls,
    WriteResult,
)
from gateway.buffer.tailcache import Limits, TailCache
from gateway.errors import CorruptRecordError, StorageError

__all__ = [
    "START",
    "FsyncMode",
    "Position",
    "RecoveryReport",
    "SegmentLog",
    "SegmentSummary",
    "Syscalls",
]


FLUSHER_IDLE_S = 5.0  # a log's writer thread ends after this long without appends


@dataclass
class _Append:
    records: Sequence[Record]
    future: asyncio.Future[Position] = field(repr=False)
    loop: asyncio.AbstractEventLoop = field(repr=False)


class SegmentLog:
    """A directory of segments with one writer (this object, unless read-only) and many readers."""

    def __init__(
        self,
        directory: Path,
        *,
        segment_bytes: int = 64 * 2**20,
        fsync: FsyncMode = "always",
        fsync_interval: float = 1.0,
        read_only: bool = False,
        executor: Executor | None = None,
        syscalls: Syscalls | None = None,
        tail_cache_bytes: int = 0,
        tail_keeps_gzip: bool = False,
        recycle: bool = False,
    ) -> None:
        self._directory = directory
        self._fsync_mode: FsyncMode = fsync
        self._fsync_interval = fsync_interval
        self._read_only = read_only
        self._recycle = recycle
        self._executor = executor
        self._owns_executor = False
        self._writer = SegmentWriter(
            directory,
            segment_bytes=segment_bytes,
            fsync_mode=fsync,
            syscalls=syscalls or Syscalls(),
            recycle=recycle,
        )
        self.tail = (
            TailCache(tail_cache_bytes, keep_gzip=tail_keeps_gzip)
            if tail_cache_bytes and not read_only
            else None
        )
        self._writer.tail = self.tail
        self._state: Literal["new", "open", "closing", "closed"] = "new"
        self._queue: list[_Append] = []  # appends waiting for the writer thread
        self._queue_changed = threading.Condition()
        self._flusher: threading.Thread | None = None  # the writer thread, while it runs
        self._flushing = False
        self._syncer: asyncio.Task[None] | None = None

    @property
    def directory(self) -> Path:
        """The directory holding the segments."""
        return self._directory

    @property
    def _writing(self) -> bool:
        return not self._read_only and self._state in ("open", "closing")

    def open(self) -> RecoveryReport:
        """Find the segments; a writer cuts a torn tail off the last one. Reports what it found."""
        if self._state != "new":
            raise StorageError(f"segment log {self._directory} was already opened")
        if self._read_only:
            self._state = "open"
            found = list_segments(self._directory)
            return RecoveryReport(len(found), self.end, 0, 0, 0)
        report = self._writer.recover()
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="segmentlog")
            self._owns_executor = True
        self._state = "open"
        return report

    # -- writing -------------------------------------------------------------------------------

    async def append(self, records: Sequence[Record]) -> Position:
        """Append `records`; returns, durable per the fsync mode, the position after them."""
        if self._read_only or self._state != "open":
            raise StorageError(f"segment log {self._directory} is not open for writing")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Position] = loop.create_future()
        self._enqueue(_Append(records, future, loop))
        if self._fsync_mode == "interval" and self._syncer is None:
            self._syncer = loop.create_task(self._sync_periodically())
        return await future

    def submit(
        self,
        records: Sequence[Record],
        future: asyncio.Future[Position],
        loop: asyncio.AbstractEventLoop,
    ) -> bool:
        """`append` from any thread: queue `records` for the next flush; `future` (of `loop`)
        gets the position after them once durable. False, queuing nothing, when the log is not
        open, when (in "interval" mode) an `append` has not started its syncer yet, or when the
        log's writer thread is not running: the caller's thread does not start it, as it would
        inherit that thread's CPU priority (validation threads can run below the loop's; see
        http/offload.py), so the next `append` does."""
        if self._read_only or self._state != "open":
            return False
        if self._fsync_mode == "interval" and self._syncer is None:
            return False
        return self._enqueue(_Append(records, future, loop), start=False)

    def _enqueue(self, pending: _Append, *, start: bool = True) -> bool:
        """Queue `pending` for the writer thread, starting it if `start` (else, with no writer
        running, queue nothing and return False)."""
        with self._queue_changed:
            if self._flusher is None and not start:
                return False
            self._queue.append(pending)
            if self._flusher is None:
                self._flusher = threading.Thread(
                    target=self._flush_queue, name=f"log-writer:{self._directory.name}", daemon=True
                )
                self._flusher.start()
            else:
                self._queue_changed.notify_all()
            return True

    def _flush_queue(self) -> None:
        """The writer thread: everything queued meanwhile goes in one write (+ one fsync),
        back to back, without waiting for the event loop between flushes. It exits after
        FLUSHER_IDLE_S without work (the next append starts another)."""
        while True:
            with self._queue_changed:
                if not self._queue:
                    self._queue_changed.wait(FLUSHER_IDLE_S)
                if not self._queue:
                    self._flusher = None
                    self._queue_changed.notify_all()  # close() may be waiting for this
                    return
                batch, self._queue = self._queue, []
                self._flushing = True
            try:
                live = [p for p in batch if not p.future.done()]  # skip cancelled callers
                results: list[WriteResult] = []
                if live:
                    try:
                        results = self._writer.write_batch([p.records for p in live])
                    except Exception as e:  # a bug; never leave callers hanging
                        results = [StorageError(f"append failed: {e!r}") for _ in live]
                    _resolve_soon(live, results)
            finally:
                with self._queue_changed:
                    self._flushing = False
                    self._queue_changed.notify_all()

    def _wait_flushed(self) -> None:
        with self._queue_changed:
            while self._queue or self._flushing:
                self._queue_changed.wait()

    async def _sync_periodically(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._fsync_interval)
            if not self._writer.dirty:
                continue
            try:
                await loop.run_in_executor(self._executor, self._writer.sync)
            except StorageError as e:
                structlog.get_logger(__name__).warning(
                    "segment_log_fsync_failed", directory=str(self._directory), error=str(e)
                )

    async def close(self) -> None:
        """Finish pending appends, fsync what is not yet durable, and release the files."""
        if self._state != "open":
            self._state = "closed"
            return
        self._state = "closing"
        try:
            await asyncio.to_thread(self._wait_flushed)
            if self._syncer is not None:
                self._syncer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._syncer
            if not self._read_only:
                loop = asyncio.get_running_loop()
                await loop.run_in_executor(self._executor, self._writer.close)
        finally:
            if self._owns_executor and self._executor is not None:
                self._executor.shutdown(wait=False)
            self._state = "closed"

    # -- reading and housekeeping ----------------------------------------------------------------

    @property
    def end(self) -> Position:
        """The position after the last durable record (for a reader: the last segment's end)."""
        if self._writing:
            return self._writer.end
        found = self.segments()
        return Position(found[-1][0], found[-1][2]) if found else START

    @property
    def active_segment(self) -> int:
        """The id of the segment being appended to (for a reader: the last one)."""
        return self.end.segment

    @property
    def total_bytes(self) -> int:
        """Bytes in all segment files (cheap for the writer: bookkeeping, no listing)."""
        if self._writing:
            return self._writer.total_bytes
        return sum(size for _, _, size in self.segments())

    def segments(self) -> list[tuple[int, Path, int]]:
        """(id, path, size) of every segment, oldest first. The size of the last one is where
        its records end: with `recycle` its file can be longer (segmentwriter.py)."""
        found = list_segments(self._directory)
        if found and self._recycle:
            segment_id, path, size = found[-1]
            end = self._writer.end if self._writing else None
            if end is not None and end.segment == segment_id:
                found[-1] = (segment_id, path, end.offset)
            elif end is None and size:  # a reader: the records end where a scan stops
                with contextlib.suppress(FileNotFoundError):
                    found[-1] = (segment_id, path, summarize_segment(path, segment_id)[1].offset)
        return found

    def read(self, start: Position = START) -> Iterator[tuple[Position, Record]]:
        """Yield (position after it, record) from `start` on, across segments, in append order.

        Works on a log another process is appending to: stops at the current valid end.
        Raises CorruptRecordError for a bad record in a closed segment (no torn tail is
        possible there); resume after it with Position(segment + 1, 0).
        """
        offset = start.offset
        ids = list_segment_ids(self._directory, after=start.segment - 1)
        while ids:
            segment = ids.pop(0)
            if segment != start.segment:  # deleted, or a cursor at the end of the previous one
                offset = 0
            path = segment_path(self._directory, segment)
            try:
                fd = open_read(path)
            except FileNotFoundError:  # deleted since the listing
                ids = ids or list_segment_ids(self._directory, after=segment)
                continue
            try:
                end = yield from _positions(fd, segment, offset)
                if not ids:  # the last known: stop at its end unless it was closed meanwhile
                    ids = list_segment_ids(self._directory, after=segment)
                    if not ids:
                        return
                    end = yield from _positions(fd, segment, end.offset)
                if end.state != "clean":
                    raise CorruptRecordError(
                        f"{path}: invalid record at offset {end.offset}",
                        segment=segment,
                        offset=end.offset,
                    )
            finally:
                os.close(fd)

    def read_cached(self, start: Position, limits: Limits) -> list[tuple[Position, Record]] | None:
        """What `read` would yield from `start`, up to `limits`, if the tail cache holds it.

        None when it does not (the caller reads the files). Never blocks on the disk.
        """
        if self.tail is None or not self._writing:
            return None
        found = self.tail.read(start, limits)
        if found == [] and start != self._writer.end:  # a safety net: trust the files
            return None
        return found

    def segment_summary(self, segment_id: int) -> SegmentSummary:
        """Size, counts and time range of one segment (from memory or its sidecar, else a scan)."""
        if self._writing:
            known = self._writer.known_summary(segment_id)
            if known is not None:
                return known
        path = segment_path(self._directory, segment_id)
        try:
            size = path.stat().st_size
        except OSError as e:
            raise storage_error(e, f"cannot stat {path}") from e
        summary = read_index(self._directory, segment_id, size)
        if summary is None:
            summary, _ = summarize_segment(path, segment_id)
        if self._writing:
            self._writer.remember_summary(segment_id, summary)
        return summary

    def delete_segments_before(self, segment_id: int) -> int:
        """Delete every closed segment with an id below `segment_id`; returns the bytes freed."""
        return self._delete([sid for sid, _, _ in self.segments() if sid < segment_id])

    def delete_segment(self, segment_id: int) -> int:
        """Delete one closed segment (never the active one); returns the bytes freed."""
        return self._delete([segment_id])

    def _delete(self, segment_ids: list[int]) -> int:
        if self._read_only or self._state != "open":
            raise StorageError(f"segment log {self._directory} is not open for writing")
        return self._writer.delete(segment_ids)


def _positions(
    fd: int, segment: int, offset: int
) -> Generator[tuple[Position, Record], None, ScanEnd]:
    scan = scan_segment(fd, offset, segment)
    while True:
        try:
            end, record = next(scan)
        except StopIteration as stop:
            result: ScanEnd = stop.value
            return result
        yield Position(segment, end), record


def _resolve_soon(batch: list[_Append], results: Sequence[WriteResult]) -> None:
    """From the writer thread: hand each caller its result on its own event loop."""
    by_loop: dict[asyncio.AbstractEventLoop, tuple[list[_Append], list[WriteResult]]] = {}
    for pending, result in zip(batch, results, strict=True):
        appends, outcomes = by_loop.setdefault(pending.loop, ([], []))
        appends.append(pending)
        outcomes.append(result)
    for loop, (appends, outcomes) in by_loop.items():
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(_resolve, appends, outcomes)


def _resolve(batch: list[_Append], results: Sequence[WriteResult]) -> None:
    for pending, result in zip(batch, results, strict=True):
        if pending.future.done():
            continue
        if isinstance(result, Position):
            pending.future.set_result(result)
        else:
            pending.future.set_exception(result)
