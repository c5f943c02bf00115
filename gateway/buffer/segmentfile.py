"""Segment files on disk: names, listing, chunked scanning, per-segment summaries, atomic files.

A segment is `%020d.seg`, a plain concatenation of record frames. When a segment is closed its
summary (size, record and line counts, time range) is written beside it as `%020d.idx` (JSON,
written atomically); the summary is an optimisation only, recomputed by a scan when missing or
stale. OSError is translated into our StorageError family here, at the boundary.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import orjson

from gateway.buffer.record import Record, decode_stream, next_frame_size
from gateway.errors import StorageError, StorageFullError

SEGMENT_SUFFIX = ".seg"
INDEX_SUFFIX = ".idx"
TEMP_SUFFIX = ".tmp"
SPARE_SUFFIX = ".spare"  # a consumed segment's file, kept to be reused (segmentwriter.py)
_SEGMENT_NAME = re.compile(r"^(\d{20})\.seg$")
READ_CHUNK = 1 << 20
_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})

Fsync = Callable[[int], None]
ScanState = Literal["clean", "incomplete", "corrupt"]


def storage_error(error: OSError, doing: str) -> StorageError:
    """Our error for a failed system call: StorageFullError for ENOSPC/EDQUOT."""
    message = f"{doing}: {error.strerror or error}"
    if error.errno in _FULL_ERRNOS:
        return StorageFullError(message)
    return StorageError(message)


def segment_path(directory: Path, segment_id: int) -> Path:
    """The file of segment `segment_id`."""
    return directory / f"{segment_id:020d}{SEGMENT_SUFFIX}"


def index_path(directory: Path, segment_id: int) -> Path:
    """The summary sidecar of segment `segment_id`."""
    return directory / f"{segment_id:020d}{INDEX_SUFFIX}"


def spare_path(directory: Path, segment_id: int) -> Path:
    """Where the file of consumed segment `segment_id` waits to be reused."""
    return directory / f"{segment_id:020d}{SPARE_SUFFIX}"


def list_segments(directory: Path) -> list[tuple[int, Path, int]]:
    """(id, path, size) of every segment file, oldest first; [] when the directory is missing."""
    found: list[tuple[int, Path, int]] = []
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return []
    except OSError as e:
        raise storage_error(e, f"cannot list {directory}") from e
    for entry in entries:
        match = _SEGMENT_NAME.match(entry.name)
        if match is None:
            continue
        try:
            size = entry.stat().st_size
        except FileNotFoundError:  # deleted since the listing
            continue
        except OSError as e:
            raise storage_error(e, f"cannot stat {entry.path}") from e
        found.append((int(match.group(1)), Path(entry.path), size))
    found.sort()
    return found


def list_segment_ids(directory: Path, *, after: int = -1) -> list[int]:
    """Ids of the segment files above `after`, oldest first (names only, no stat)."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    except OSError as e:
        raise storage_error(e, f"cannot list {directory}") from e
    ids = [int(m.group(1)) for m in map(_SEGMENT_NAME.match, names) if m is not None]
    return sorted(i for i in ids if i > after)


@dataclass(frozen=True, slots=True)
class ScanEnd:
    """Where a scan stopped: the valid end, and whether the bytes after it are torn or corrupt."""

    offset: int
    state: ScanState


def scan_segment(fd: int, start: int, segment: int) -> Generator[tuple[int, Record], None, ScanEnd]:
    """Yield (end offset, record) for each valid frame of segment `segment` from `start`;
    return where it stopped.

    Reads in chunks (a frame larger than a chunk is read in one go once its size is known), so
    memory stays bounded by the largest record, never by the segment.
    """
    base = start  # file offset of buf[0]
    buf = b""
    pos = 0
    while True:
        for end, record in decode_stream(buf, pos, segment):
            pos = end
            yield base + end, record
        available = len(buf) - pos
        needed = next_frame_size(buf, pos)
        if needed is None or needed <= available:
            return ScanEnd(base + pos, "corrupt")
        chunk = _read_more(fd, base + len(buf), max(READ_CHUNK, needed - available))
        if not chunk:
            return ScanEnd(base + pos, "clean" if available == 0 else "incomplete")
        buf = buf[pos:] + chunk  # copies at most one partial frame
        base += pos
        pos = 0


@dataclass(frozen=True, slots=True)
class SegmentSummary:
    """What retention and stats need to know about a segment without reading its payloads."""

    bytes: int
    records: int = 0
    lines: int = 0
    min_time_ns: int | None = None
    max_time_ns: int | None = None

    def plus(self, records: Iterable[Record], size: int) -> SegmentSummary:
        """This summary extended by `records`, now `size` bytes long."""
        count, lines = self.records, self.lines
        low, high = self.min_time_ns, self.max_time_ns
        for record in records:
            count += 1
            lines += record.lines
            low = record.min_time_ns if low is None else min(low, record.min_time_ns)
            high = record.max_time_ns if high is None else max(high, record.max_time_ns)
        return SegmentSummary(size, count, lines, low, high)


def summarize_fd(fd: int, segment: int) -> tuple[SegmentSummary, ScanEnd]:
    """Scan a whole open segment: the summary of its valid frames and where the scan stopped."""
    scan = scan_segment(fd, 0, segment)
    summary = SegmentSummary(0)
    while True:
        try:
            end, record = next(scan)
        except StopIteration as stop:
            result: ScanEnd = stop.value
            return summary, result
        summary = summary.plus((record,), end)


def summarize_segment(path: Path, segment: int) -> tuple[SegmentSummary, ScanEnd]:
    """Scan a whole segment file: the summary of its valid frames and where the scan stopped."""
    fd = open_read(path)
    try:
        return summarize_fd(fd, segment)
    finally:
        os.close(fd)


def read_index(directory: Path, segment_id: int, size: int) -> SegmentSummary | None:
    """The sidecar summary of a segment, or None when missing, unreadable or stale."""
    try:
        data = orjson.loads(index_path(directory, segment_id).read_bytes())
        summary = SegmentSummary(
            bytes=int(data["bytes"]),
            records=int(data["records"]),
            lines=int(data["lines"]),
            min_time_ns=None if data["min_time_ns"] is None else int(data["min_time_ns"]),
            max_time_ns=None if data["max_time_ns"] is None else int(data["max_time_ns"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return summary if summary.bytes == size else None


def index_bytes(summary: SegmentSummary) -> bytes:
    """The sidecar file content for `summary`."""
    return orjson.dumps(
        {
            "version": 1,
            "bytes": summary.bytes,
            "records": summary.records,
            "lines": summary.lines,
            "min_time_ns": summary.min_time_ns,
            "max_time_ns": summary.max_time_ns,
        }
    )


def write_atomic(path: Path, data: bytes, fsync: Fsync = os.fsync) -> None:
    """Write temp in the same directory, fsync it, rename over `path` (caller fsyncs the dir)."""
    temp = path.with_name(path.name + TEMP_SUFFIX)
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        fsync(fd)
    finally:
        os.close(fd)
    os.replace(temp, path)


def fsync_directory(directory: Path, fsync: Fsync = os.fsync) -> None:
    """Make creations, renames and deletions in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fsync(fd)
    finally:
        os.close(fd)


def _read_more(fd: int, offset: int, wanted: int) -> bytes:
    """Up to `wanted` bytes at `offset`, never past the current end of the file."""
    try:
        readable = os.fstat(fd).st_size - offset
        return os.pread(fd, min(wanted, readable), offset) if readable > 0 else b""
    except OSError as e:
        raise storage_error(e, "cannot read a segment") from e


def open_read(path: Path) -> int:
    """A read-only descriptor for `path`; FileNotFoundError passes through untranslated."""
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as e:
        raise storage_error(e, f"cannot open {path}") from e
