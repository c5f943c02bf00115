"""SegmentLog on real files: appends, rolling, recovery, readers, deletion, disk errors."""

from __future__ import annotations

import asyncio
import errno
import os
import threading
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from gateway.buffer.record import Record, encode
from gateway.buffer.segmentlog import START, Position, SegmentLog, Syscalls
from gateway.errors import CorruptRecordError, StorageError, StorageFullError


def _rec(seq: int, *, size: int = 0) -> Record:
    payload = f"m,seq={seq} v={seq}i {1_000 + seq}\n".encode() + b"x" * size
    return Record("db", "ns", 10**18, "tok", 1, 1_000 + seq, 1_000 + seq, payload)


def _payloads(log: SegmentLog, start: Position = START) -> list[bytes]:
    return [record.payload for _, record in log.read(start)]


class Disk:
    """Real system calls, with fsyncs counted and ENOSPC / EIO on demand."""

    def __init__(self) -> None:
        self.fsyncs = 0
        self.full = False
        self.broken_fsync = False
        self.fsync_threads: set[str] = set()

    def pwritev(self, fd: int, buffers: Sequence[bytes | memoryview], offset: int) -> int:
        if self.full:  # write half, as a real disk filling up mid-write would
            data = b"".join(bytes(b) for b in buffers)
            os.pwrite(fd, data[: len(data) // 2], offset)
            raise OSError(errno.ENOSPC, "No space left on device")
        return os.pwritev(fd, buffers, offset)

    def fsync(self, fd: int) -> None:
        self.fsync_threads.add(threading.current_thread().name)
        if self.broken_fsync:
            raise OSError(errno.EIO, "Input/output error")
        self.fsyncs += 1
        os.fsync(fd)

    def syscalls(self) -> Syscalls:
        return Syscalls(pwritev=self.pwritev, fsync=self.fsync, datasync=self.fsync)


@pytest.fixture(name="log_dir")
def fixture_log_dir(tmp_path: Path) -> Path:
    return tmp_path / "wal"


@pytest.fixture(name="disk")
def fixture_disk() -> Disk:
    return Disk()


@pytest.fixture(name="log")
async def fixture_log(log_dir: Path, disk: Disk) -> AsyncIterator[SegmentLog]:
    log = SegmentLog(log_dir, syscalls=disk.syscalls())
    log.open()
    disk.fsyncs = 0
    yield log
    await log.close()


async def _reopen(log: SegmentLog, **kw: object) -> SegmentLog:
    await log.close()
    again = SegmentLog(log.directory, **kw)  # type: ignore[arg-type]  # test passthrough
    again.open()
    return again


async def test_read_returns_appended_records_in_order(log: SegmentLog) -> None:
    """Records come back from read() in the order they were appended."""
    for seq in range(5):
        await log.append([_rec(seq)])
    assert [_rec(seq).payload for seq in range(5)] == _payloads(log)


async def test_append_returns_the_position_after_its_records(log: SegmentLog) -> None:
    """The position returned is the end offset of the appended frames."""
    first = await log.append([_rec(0), _rec(1)])
    assert Position(1, len(encode(_rec(0))) + len(encode(_rec(1)))) == first


async def test_read_resumes_from_a_returned_position(log: SegmentLog) -> None:
    """Reading from a returned position yields only what was appended after it."""
    cursor = await log.append([_rec(0)])
    await log.append([_rec(1)])
    assert [_rec(1).payload] == _payloads(log, cursor)


async def test_segments_roll_when_full(log_dir: Path) -> None:
    """A segment that reaches segment_bytes is closed and the next append starts a new one."""
    log = SegmentLog(log_dir, segment_bytes=1000)
    log.open()
    for seq in range(10):
        await log.append([_rec(seq, size=300)])
    sizes = [size for _, _, size in log.segments()]
    await log.close()
    assert 4 <= len(sizes)
    assert all(size >= 1000 for size in sizes[:-1])


async def test_reader_crosses_segments_in_order(log_dir: Path) -> None:
    """read() walks every segment in id order and returns all records."""
    log = SegmentLog(log_dir, segment_bytes=500)
    log.open()
    for seq in range(12):
        await log.append([_rec(seq, size=200)])
    payloads = _payloads(log)
    await log.close()
    assert [_rec(seq, size=200).payload for seq in range(12)] == payloads


@pytest.mark.parametrize("refused", [False, True])
async def test_a_closed_segment_is_dropped_from_the_page_cache(
    log_dir: Path, refused: bool
) -> None:
    """Each segment, once closed (fsynced), is dropped from the page cache, after its fsync;
    advice the kernel refuses changes nothing: every record is still read back."""
    calls: list[tuple[str, int]] = []

    def fsync(fd: int) -> None:
        calls.append(("fsync", fd))
        os.fsync(fd)

    def drop_cached(fd: int) -> None:
        calls.append(("drop", fd))
        if refused:
            raise OSError(errno.EINVAL, "Invalid argument")
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)

    log = SegmentLog(
        log_dir,
        segment_bytes=500,
        syscalls=Syscalls(fsync=fsync, datasync=fsync, drop_cached=drop_cached),
    )
    log.open()
    for seq in range(12):
        await log.append([_rec(seq, size=200)])
    closed = len(log.segments()) - 1
    assert closed >= 3
    drops = [i for i, (name, _) in enumerate(calls) if name == "drop"]
    assert len(drops) == closed
    assert all(calls[i - 1] == ("fsync", calls[i][1]) for i in drops)  # right after its fsync
    assert [_rec(seq, size=200).payload for seq in range(12)] == _payloads(log)
    await log.close()


async def test_closed_segment_gets_a_summary_sidecar(log_dir: Path) -> None:
    """Rolling writes the closed segment's summary beside it; the log reads it back."""
    log = SegmentLog(log_dir, segment_bytes=100)
    log.open()
    await log.append([_rec(1, size=100), _rec(2, size=100)])
    await log.append([_rec(3)])
    await log.close()
    reader = SegmentLog(log_dir, read_only=True)
    reader.open()
    summary = reader.segment_summary(1)
    assert (log_dir / f"{1:020d}.idx").exists()
    assert (2, 2, 1_001, 1_002) == (
        summary.records,
        summary.lines,
        summary.min_time_ns,
        summary.max_time_ns,
    )


async def test_recovery_truncates_a_garbage_tail(log: SegmentLog) -> None:
    """Garbage after the last frame is cut off on open and reported."""
    await log.append([_rec(0), _rec(1)])
    segment = log.segments()[-1][1]
    await log.close()
    with segment.open("ab") as f:
        f.write(b"\xc1garbage that is not a frame")
    again = SegmentLog(log.directory)
    report = again.open()
    await again.close()
    assert (len(b"\xc1garbage that is not a frame"), 1, 2) == (
        report.torn_bytes,
        report.torn_tails,
        report.records,
    )


async def test_recovery_truncates_a_half_written_frame(log: SegmentLog) -> None:
    """A frame cut in half (a torn write) is removed; the records before it remain."""
    await log.append([_rec(0)])
    end = await log.append([_rec(1)])
    segment = log.segments()[-1][1]
    await log.close()
    half = encode(_rec(2))[:20]
    with segment.open("ab") as f:
        f.write(half)
    again = SegmentLog(log.directory)
    report = again.open()
    payloads = _payloads(again)
    await again.close()
    assert (end, len(half)) == (report.end, report.torn_bytes)
    assert [_rec(0).payload, _rec(1).payload] == payloads


async def test_appends_after_recovery_are_readable(log: SegmentLog) -> None:
    """After a torn tail is cut, new appends land at the valid end and read back."""
    await log.append([_rec(0)])
    segment = log.segments()[-1][1]
    await log.close()
    with segment.open("ab") as f:
        f.write(encode(_rec(1))[:-3])
    again = SegmentLog(log.directory)
    again.open()
    await again.append([_rec(2)])
    payloads = _payloads(again)
    await again.close()
    assert [_rec(0).payload, _rec(2).payload] == payloads


async def test_clean_reopen_reports_nothing_torn(log: SegmentLog) -> None:
    """Reopening a cleanly closed log cuts nothing and ends where the writer stopped."""
    end = await log.append([_rec(0)])
    await log.close()
    again = SegmentLog(log.directory)
    report = again.open()
    await again.close()
    assert (end, 0, 0) == (report.end, report.torn_bytes, report.torn_tails)


async def test_open_does_not_read_older_segments(log_dir: Path) -> None:
    """Damage in a closed segment does not stop open: only the last segment is scanned."""
    log = SegmentLog(log_dir, segment_bytes=100)
    log.open()
    await log.append([_rec(0, size=100)])
    await log.append([_rec(1)])
    await log.close()
    first = log_dir / f"{1:020d}.seg"
    first.write_bytes(b"\x00" * first.stat().st_size)
    again = SegmentLog(log_dir, segment_bytes=100)
    report = again.open()
    await again.close()
    assert (2, 0) == (report.segments, report.torn_bytes)


async def test_corrupt_closed_segment_raises_on_read(log_dir: Path) -> None:
    """A bad record in a closed segment (no torn tail possible there) raises CorruptRecordError."""
    log = SegmentLog(log_dir, segment_bytes=100)
    log.open()
    await log.append([_rec(0, size=100)])
    await log.append([_rec(1)])
    first = log_dir / f"{1:020d}.seg"
    data = bytearray(first.read_bytes())
    data[30] ^= 0xFF
    first.write_bytes(bytes(data))
    with pytest.raises(CorruptRecordError):
        _payloads(log)
    await log.close()


async def test_reader_stops_quietly_at_a_partial_frame_being_written(log: SegmentLog) -> None:
    """A read-only reader sees the valid records and stops before an incomplete last frame."""
    await log.append([_rec(0)])
    segment = log.segments()[-1][1]
    with segment.open("ab") as f:  # what another process's in-progress write looks like
        f.write(encode(_rec(1))[:15])
    reader = SegmentLog(log.directory, read_only=True)
    reader.open()
    assert [_rec(0).payload] == _payloads(reader)


async def test_read_only_log_sees_records_of_a_running_writer(log: SegmentLog) -> None:
    """A second, read-only SegmentLog on the same directory reads what the writer appended."""
    reader = SegmentLog(log.directory, read_only=True)
    reader.open()
    await log.append([_rec(0)])
    await log.append([_rec(1)])
    assert [_rec(0).payload, _rec(1).payload] == _payloads(reader)


async def test_read_only_log_refuses_appends(log: SegmentLog) -> None:
    """A read-only SegmentLog cannot append."""
    reader = SegmentLog(log.directory, read_only=True)
    reader.open()
    with pytest.raises(StorageError):
        await reader.append([_rec(0)])


async def test_closed_log_refuses_appends(log: SegmentLog) -> None:
    """Appending after close raises StorageError."""
    await log.close()
    with pytest.raises(StorageError):
        await log.append([_rec(0)])


async def test_delete_never_removes_the_active_segment(log_dir: Path) -> None:
    """delete_segments_before spares the active segment and returns the bytes it freed."""
    log = SegmentLog(log_dir, segment_bytes=100)
    log.open()
    for seq in range(3):
        await log.append([_rec(seq, size=100)])
    before = log.segments()
    freed = log.delete_segments_before(10**6)
    after = log.segments()
    await log.close()
    assert sum(size for _, _, size in before[:-1]) == freed
    assert [before[-1]] == after


async def test_read_after_delete_starts_at_the_oldest_remaining(log_dir: Path) -> None:
    """A cursor into a deleted segment resumes at the first segment that remains."""
    log = SegmentLog(log_dir, segment_bytes=100)
    log.open()
    for seq in range(3):
        await log.append([_rec(seq, size=100)])
    await log.append([_rec(3)])
    log.delete_segments_before(3)
    payloads = _payloads(log)
    await log.close()
    assert [_rec(2, size=100).payload, _rec(3).payload] == payloads


async def test_total_bytes_is_the_sum_of_segment_sizes(log_dir: Path) -> None:
    """total_bytes (kept by bookkeeping) equals the sizes on disk."""
    log = SegmentLog(log_dir, segment_bytes=300)
    log.open()
    for seq in range(7):
        await log.append([_rec(seq, size=100)])
    log.delete_segments_before(2)
    total, on_disk = log.total_bytes, sum(size for _, _, size in log.segments())
    await log.close()
    assert on_disk == total


async def test_disk_full_raises_storage_full(log: SegmentLog, disk: Disk) -> None:
    """ENOSPC at the write boundary surfaces as StorageFullError."""
    disk.full = True
    with pytest.raises(StorageFullError):
        await log.append([_rec(0)])


async def test_disk_full_leaves_no_partial_record(log: SegmentLog, disk: Disk) -> None:
    """After a failed write the segment is cut back to its last good end."""
    end = await log.append([_rec(0)])
    disk.full = True
    with pytest.raises(StorageFullError):
        await log.append([_rec(1, size=500)])
    assert end.offset == log.segments()[-1][2]


async def test_append_works_again_once_space_returns(log: SegmentLog, disk: Disk) -> None:
    """When the disk has room again, appends succeed and the log reads cleanly."""
    await log.append([_rec(0)])
    disk.full = True
    with pytest.raises(StorageFullError):
        await log.append([_rec(1, size=500)])
    disk.full = False
    await log.append([_rec(2)])
    again = await _reopen(log)
    payloads = _payloads(again)
    await again.close()
    assert [_rec(0).payload, _rec(2).payload] == payloads


async def test_failed_fsync_is_a_storage_error_and_drops_the_write(
    log: SegmentLog, disk: Disk
) -> None:
    """An fsync error fails the append (not as 'full') and cuts its bytes off."""
    end = await log.append([_rec(0)])
    disk.broken_fsync = True
    with pytest.raises(StorageError) as caught:
        await log.append([_rec(1)])
    assert (False, end.offset) == (
        isinstance(caught.value, StorageFullError),
        log.segments()[-1][2],
    )


async def test_unencodable_record_fails_only_its_own_append(log: SegmentLog) -> None:
    """A record that cannot be framed fails its append; a concurrent one still succeeds."""
    bad = Record("db", "fortnight", 0, "tok", 1, 0, 0, b"x 1\n")
    results = await asyncio.gather(log.append([bad]), log.append([_rec(1)]), return_exceptions=True)
    assert (ValueError, Position) == (type(results[0]), type(results[1]))


async def test_a_slow_delete_never_blocks_the_appenders_bookkeeping(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Freeing a big segment can take milliseconds: `end` and `total_bytes`, which the event
    loop reads on every append, must not wait for it."""
    log = SegmentLog(tmp_path / "log", segment_bytes=100)
    log.open()
    for seq in range(5):
        await log.append([_rec(seq, size=200)])  # one segment each
    unlinking = threading.Event()
    original = Path.unlink

    def slow_unlink(self: Path, missing_ok: bool = False) -> None:
        if self.suffix != ".tmp" and self.parent == tmp_path / "log":
            unlinking.set()
            threading.Event().wait(0.5)
        original(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", slow_unlink)
    before = log.total_bytes
    deleter = threading.Thread(target=log.delete_segments_before, args=(3,))
    deleter.start()
    assert unlinking.wait(5)
    started = asyncio.get_running_loop().time()
    assert log.total_bytes <= before and log.end.segment >= 5
    assert asyncio.get_running_loop().time() - started < 0.1
    deleter.join()
    assert log.total_bytes < before
    await log.close()
