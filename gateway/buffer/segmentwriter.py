"""The writing side of a segment log: recovery, vectored writes, fsync, rolling, deletion.

Every method here does blocking file I/O and is meant for a worker thread (SegmentLog runs it in
an executor, one write at a time). It owns the active segment's descriptor and the bookkeeping
(sizes, per-segment summaries) that deleters on other threads share under a lock.

Invariant that readers and recovery rely on: a segment is fsynced, and cut to its valid end,
before the next one is created, so a torn tail can only exist in the last segment; `recover`
scans only that one.

Reusing files (`recycle`, the write-ahead log): a consumed segment's file is not deleted but
kept (`%020d.spare`, at most MAX_SPARES) and renamed to the next segment's name at a roll.
With `fsync = "always"` every flush is a write plus an fdatasync: appending to a growing file
makes each fdatasync also commit the file system's journal (new blocks, a new size), while
overwriting blocks that exist, the size unchanged, is a data flush alone (ext4 here: 2.3 ms
against 1.2 ms for a 2.4 MB flush under load; `bench/README.md`). What such a file holds past
the valid end is the old segment's frames; they fail the checksum of the new segment (record.py,
placed frames), and each flush that ends inside them also writes END_MARK (a zero prefix) after
its records, so that recovery tells "the end of the records" (marker) from "a torn write"
(anything else). Only files of segments this writer created are reused (never older frames,
which carry no segment in their checksum), and spares are removed at start-up.

A closed segment is also dropped from the page cache (its pages are clean once it is fsynced):
consumers that keep up read new records from the tail cache, and one that lags reads the file
back from disk. Left cached, every segment written grows the page cache, and each write then
costs more to place (while an upstream was down, 1.3 M instead of 2.7-3.0 M lines/s accepted in
the benchmark, `bench/README.md`). Except, with `recycle`, while less than CACHED_BACKLOG
segments wait to be consumed: that file is likely to be reused soon, and a file is overwritten
fastest while its pages are still cached.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from gateway.buffer.record import PREFIX_SIZE, Record, encode_parts, place
from gateway.buffer.segmentfile import (
    SPARE_SUFFIX,
    SegmentSummary,
    fsync_directory,
    index_bytes,
    index_path,
    list_segments,
    segment_path,
    spare_path,
    storage_error,
    summarize_fd,
    write_atomic,
)
from gateway.errors import StorageError

if TYPE_CHECKING:
    from gateway.buffer.tailcache import TailCache

FsyncMode = Literal["always", "interval", "never"]
_IOV_MAX = 1024  # Linux's limit of buffers per pwritev; larger batches take several calls
END_MARK = bytes(PREFIX_SIZE)  # after the records of a flush into a reused file
MAX_SPARES = 1
CACHED_BACKLOG = 2  # a closed segment stays cached while less than this many segments wait


@dataclass(frozen=True, order=True)
class Position:
    """A place in the log: the byte offset within a segment (a resumable cursor value)."""

    segment: int
    offset: int


START = Position(0, 0)


@dataclass(frozen=True)
class RecoveryReport:
    """What `open` found: segment count, the valid end, and the torn tail it cut off (if any)."""

    segments: int
    end: Position
    records: int  # valid records in the last segment (the only one scanned)
    torn_bytes: int
    torn_tails: int  # 0 or 1: add it to the torn-tail counter


def drop_cached(fd: int) -> None:
    """Ask the kernel to drop a file's clean pages from the page cache (where it can)."""
    if hasattr(os, "posix_fadvise"):
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


@dataclass(frozen=True)
class Syscalls:
    """The system calls at the write boundary, injectable to count fsyncs or simulate ENOSPC.

    `datasync` makes a segment's records durable (each flush, a roll, a close); `fsync`
    everything else (directories, sidecars, a file whose size changed by truncation).
    """

    pwritev: Callable[[int, Sequence[bytes | memoryview], int], int] = os.pwritev
    fsync: Callable[[int], None] = os.fsync
    datasync: Callable[[int], None] = os.fdatasync
    drop_cached: Callable[[int], None] = drop_cached


WriteResult = Position | StorageError | ValueError


class SegmentWriter:
    """Appends frames to the active segment of one directory; rolls to a new one when full."""

    def __init__(
        self,
        directory: Path,
        *,
        segment_bytes: int,
        fsync_mode: FsyncMode,
        syscalls: Syscalls,
        recycle: bool = False,
    ) -> None:
        self._directory = directory
        self._segment_bytes = segment_bytes
        self._fsync_mode = fsync_mode
        self._sys = syscalls
        self._io_lock = threading.Lock()  # one write, sync, roll or close at a time
        self._meta_lock = threading.Lock()  # bookkeeping shared with deleters and summary readers
        self._delete_lock = threading.Lock()  # one deleter at a time
        self._fd = -1
        self._active = 0
        self._size = 0
        self._file_size = 0  # of the active segment: beyond _size in a reused file
        self._recycle = recycle
        self._first_own = 1  # segments from this id on were created here (reusable)
        self._spares: list[Path] = []
        self._summary = SegmentSummary(0)
        self._closed_bytes = 0
        self._summaries: dict[int, SegmentSummary] = {}
        self._truncate_pending = False  # a failed write left bytes past _size
        self._dir_sync_pending = False  # a created segment is not yet durable in the directory
        self.dirty = False  # written but not fsynced ("interval" / "never")
        self.tail: TailCache | None = None  # every durable record is added to it

    @property
    def end(self) -> Position:
        """The position after the last written record."""
        with self._meta_lock:
            return Position(self._active, self._size)

    @property
    def total_bytes(self) -> int:
        """Bytes in all segments, from bookkeeping (no listing)."""
        with self._meta_lock:
            return self._closed_bytes + self._size

    def recover(self) -> RecoveryReport:
        """Create the directory or find its segments; cut a torn tail off the last one."""
        try:
            return self._recover()
        except OSError as e:
            raise storage_error(e, f"cannot open the log in {self._directory}") from e

    def _recover(self) -> RecoveryReport:
        if not self._directory.is_dir():
            self._directory.mkdir(parents=True)
            fsync_directory(self._directory.parent, self._sys.fsync)
        for temp in self._directory.glob("*.tmp"):  # an atomic write that never got renamed
            temp.unlink()
        for spare in self._directory.glob(f"*{SPARE_SUFFIX}"):  # ids can repeat after a wipe
            spare.unlink()
        found = list_segments(self._directory)
        if not found:
            self._active = self._first_own = 1
            self._fd = self._create_segment(self._active)
            fsync_directory(self._directory, self._sys.fsync)
            return RecoveryReport(1, self.end, 0, 0, 0)
        self._active = found[-1][0]
        self._first_own = self._active + 1
        self._closed_bytes = sum(size for _, _, size in found[:-1])
        self._fd = os.open(found[-1][1], os.O_RDWR | os.O_CLOEXEC)
        self._summary, scan_end = summarize_fd(self._fd, self._active)
        self._size = scan_end.offset
        self._file_size = os.fstat(self._fd).st_size
        torn = 0
        if self._file_size > self._size and not self._marked_end():
            torn = self._file_size - self._size
            os.ftruncate(self._fd, self._size)
            self._sys.fsync(self._fd)
            self._file_size = self._size
        return RecoveryReport(len(found), self.end, self._summary.records, torn, int(torn > 0))

    def _marked_end(self) -> bool:
        """Whether the records of the active segment end with END_MARK (a reused file's tail)."""
        return os.pread(self._fd, len(END_MARK), self._size) == END_MARK

    def write_batch(self, batches: list[Sequence[Record]]) -> list[WriteResult]:
        """One vectored write (+ fsync in "always" mode) for a flush; one result per append."""
        with self._io_lock:
            try:
                self._repair()
                if self._size >= self._segment_bytes:
                    self._roll()
            except OSError as e:
                return [storage_error(e, f"cannot write to {self._directory}") for _ in batches]
            frames: list[bytes | memoryview] = []
            written: list[Record] = []
            segment = self._active
            sizes: list[int] = []
            ends: list[int | ValueError] = []
            total = 0
            for records in batches:
                try:
                    encoded = [encode_parts(record) for record in records]
                except ValueError as e:  # the caller's bug; only its own append fails
                    ends.append(e)
                    continue
                for head, payload in encoded:
                    frames += (place(head, segment), payload)
                    sizes.append(len(head) + len(payload))
                    total += sizes[-1]
                written.extend(records)
                ends.append(total)
            start = self._size
            marked = bool(frames) and start + total < self._file_size  # ends inside old frames
            if marked:
                frames.append(END_MARK)
            try:
                self._write_all(frames, start)
                if frames and self._fsync_mode == "always":
                    self._sys.datasync(self._fd)
            except OSError as e:
                self._truncate_to(start)
                return [
                    end if isinstance(end, ValueError) else storage_error(e, "cannot append")
                    for end in ends
                ]
            summary = self._summary.plus(written, start + total)
            if self.tail is not None and written:
                self.tail.add(_placed(self._active, start, sizes, written))
            with self._meta_lock:
                self._size, self._summary = start + total, summary
            self._file_size = max(self._file_size, self._size + len(END_MARK) * marked)
            self.dirty = self.dirty or (bool(frames) and self._fsync_mode != "always")
            active = self._active
            if self._size >= self._segment_bytes:
                with contextlib.suppress(OSError):  # retried before the next write
                    self._roll()
            return [
                end if isinstance(end, ValueError) else Position(active, start + end)
                for end in ends
            ]

    def _write_all(self, frames: list[bytes | memoryview], offset: int) -> None:
        index = 0
        while index < len(frames):
            written = self._sys.pwritev(self._fd, frames[index : index + _IOV_MAX], offset)
            if written <= 0:
                raise OSError(0, "write made no progress")
            offset += written
            while written > 0:  # advance past what was written; a short write resumes mid-frame
                head = len(frames[index])
                if written >= head:
                    written -= head
                    index += 1
                else:
                    frames[index] = memoryview(frames[index])[written:]
                    written = 0

    def _truncate_to(self, size: int) -> None:
        try:
            os.ftruncate(self._fd, size)
            self._file_size = size
            self._truncate_pending = False
        except OSError:
            self._truncate_pending = True  # _repair retries before anything else is written

    def _repair(self) -> None:
        if self._truncate_pending:
            os.ftruncate(self._fd, self._size)
            self._file_size = self._size
            self._truncate_pending = False
        if self._dir_sync_pending:
            fsync_directory(self._directory, self._sys.fsync)
            self._dir_sync_pending = False

    def _create_segment(self, segment_id: int) -> int:
        """The new segment's descriptor: a spare renamed, when there is one, else a new file."""
        path = segment_path(self._directory, segment_id)
        with self._meta_lock:
            spare = self._spares.pop(0) if self._spares else None
        if spare is not None:
            try:
                os.rename(spare, path)
                fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
                self._file_size = os.fstat(fd).st_size
                return fd
            except OSError:
                with contextlib.suppress(OSError):
                    spare.unlink()
        self._file_size = 0
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)

    def _finish(self, fd: int) -> None:
        """Complete the active segment on disk: its records durable, nothing after them."""
        if self._file_size > self._size:
            os.ftruncate(fd, self._size)
            self._sys.fsync(fd)  # the new size too
            self._file_size = self._size
        else:
            self._sys.datasync(fd)

    def _roll(self) -> None:
        """Close the active segment (fsynced, summary beside it) and start the next one."""
        self._finish(self._fd)  # complete before a later segment exists: see the invariant
        old_id, old_fd, old_summary, old_size = self._active, self._fd, self._summary, self._size
        with self._meta_lock:
            backlog = self._closed_bytes  # in closed segments not yet consumed
        if not self._recycle or backlog >= CACHED_BACKLOG * self._segment_bytes:
            with contextlib.suppress(OSError):  # only advice: the data is durable either way
                self._sys.drop_cached(old_fd)
        new_fd = self._create_segment(old_id + 1)
        with self._meta_lock:
            self._summaries[old_id] = old_summary
            self._closed_bytes += old_size
            self._active, self._fd, self._size = old_id + 1, new_fd, 0
            self._summary = SegmentSummary(0)
        self.dirty = False
        self._dir_sync_pending = True
        with contextlib.suppress(OSError):
            os.close(old_fd)
        index = index_path(self._directory, old_id)
        with contextlib.suppress(OSError):  # the sidecar is optional: rebuilt by a scan
            write_atomic(index, index_bytes(old_summary), self._sys.fsync)
        fsync_directory(self._directory, self._sys.fsync)
        self._dir_sync_pending = False

    def sync(self) -> None:
        """fsync the active segment if anything was written since the last fsync."""
        with self._io_lock:
            if not self.dirty or self._fd < 0:
                return
            try:
                self._sys.datasync(self._fd)
            except OSError as e:
                raise storage_error(e, f"cannot fsync {self._directory}") from e
            self.dirty = False

    def close(self) -> None:
        """fsync what is not yet durable and close the active segment (cut to its records)."""
        with self._io_lock:
            fd, self._fd = self._fd, -1
            if fd < 0:
                return
            try:
                if self.dirty or self._file_size > self._size:
                    self._finish(fd)
                    self.dirty = False
            except OSError as e:
                raise storage_error(e, f"cannot fsync {self._directory}") from e
            finally:
                os.close(fd)

    def known_summary(self, segment_id: int) -> SegmentSummary | None:
        """The in-memory summary of the active or a recently closed segment, if there is one."""
        with self._meta_lock:
            if segment_id == self._active:
                return self._summary
            return self._summaries.get(segment_id)

    def remember_summary(self, segment_id: int, summary: SegmentSummary) -> None:
        """Cache the summary of a closed segment (computed by a scan or read from its sidecar)."""
        with self._meta_lock:
            if segment_id < self._active:
                self._summaries[segment_id] = summary

    def delete(self, segment_ids: list[int]) -> int:
        """Delete closed segments (the active one is skipped); returns the bytes freed.

        With `recycle`, a file this writer created is kept as a spare instead while there are
        fewer than MAX_SPARES. Deleters take turns on their own lock; the bookkeeping lock is
        held only to update the numbers, never across an unlink (freeing a 64 MB file can take
        milliseconds, and the event loop reads `end` and `total_bytes` on every append).
        """
        freed = 0
        try:
            with self._delete_lock:
                for segment_id in segment_ids:
                    with self._meta_lock:
                        if segment_id >= self._active:  # the active id only grows
                            continue
                    path = segment_path(self._directory, segment_id)
                    try:
                        size = path.stat().st_size
                        self._recycle_or_unlink(segment_id, path)
                    except FileNotFoundError:
                        continue
                    index_path(self._directory, segment_id).unlink(missing_ok=True)
                    with self._meta_lock:
                        self._summaries.pop(segment_id, None)
                        self._closed_bytes -= size
                    freed += size
                if freed:
                    fsync_directory(self._directory, self._sys.fsync)
        except OSError as e:
            raise storage_error(e, f"cannot delete segments in {self._directory}") from e
        return freed

    def _recycle_or_unlink(self, segment_id: int, path: Path) -> None:
        with self._meta_lock:
            keep = (
                self._recycle and segment_id >= self._first_own and len(self._spares) < MAX_SPARES
            )
        if not keep:
            path.unlink()
            return
        spare = spare_path(self._directory, segment_id)
        os.rename(path, spare)
        fd = os.open(spare, os.O_WRONLY | os.O_CLOEXEC)
        try:  # as a new segment it has no records yet: they end at 0
            os.pwrite(fd, END_MARK, 0)
            self._sys.datasync(fd)
        finally:
            os.close(fd)
        with self._meta_lock:
            self._spares.append(spare)


def _placed(
    segment: int, offset: int, sizes: list[int], records: list[Record]
) -> list[tuple[Position, Position, Record]]:
    """(start, end, record) of records written back to back from `offset`."""
    out = []
    for size, record in zip(sizes, records, strict=True):
        out.append((Position(segment, offset), Position(segment, offset + size), record))
        offset += size
    return out
