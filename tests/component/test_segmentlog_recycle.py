"""SegmentLog with `recycle` (the write-ahead log's setting): consumed segments' files are reused.

A reused file holds an older segment's frames past the new records. Nothing of them may ever be
read as a record: not by a reader, not by recovery after a crash, not by the sizes the buffer
reports. A crash is simulated by copying the directory while its writer is open (what a restart
after kill -9 finds) and opening the copy; test_segmentlog_crash.py kills a real process.
"""

from __future__ import annotations

import itertools
import os
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.buffer.record import Record
from gateway.buffer.segmentfile import SPARE_SUFFIX, segment_path, spare_path
from gateway.buffer.segmentlog import START, Position, SegmentLog
from gateway.buffer.segmentwriter import END_MARK

SEGMENT = 4_000


def _rec(seq: int, size: int = 300) -> Record:
    payload = f"m,seq={seq} v={seq}i {1_000 + seq}\n".encode() + b"#" * size
    return Record("db", "ns", 10**18, "tok", 1, 1_000 + seq, 1_000 + seq, payload)


def _seqs(log: SegmentLog, start: Position = START) -> list[int]:
    return [record.min_time_ns - 1_000 for _, record in log.read(start)]


def _open(directory: Path, **kw: object) -> SegmentLog:
    log = SegmentLog(directory, segment_bytes=SEGMENT, recycle=True, **kw)  # type: ignore[arg-type]
    log.open()
    return log


_copies = itertools.count()


def _crash_copy(directory: Path) -> Path:
    """The files as a crash right now would leave them (the writer stays open on the original)."""
    copy = directory.with_name(f"{directory.name}-crash{next(_copies)}")
    shutil.copytree(directory, copy)
    return copy


async def _fill_and_consume(log: SegmentLog, seqs: range, size: int = 300) -> None:
    """Append records one by one; after each, delete every segment before the active one."""
    for seq in seqs:
        await log.append([_rec(seq, size)])
        log.delete_segments_before(log.active_segment)


async def test_a_consumed_segment_file_becomes_a_later_segment(tmp_path: Path) -> None:
    """The file of a consumed segment is kept as a spare and renamed to the next segment: the
    same inode, overwritten in place (no new blocks, no new size)."""
    log = _open(tmp_path)
    await _fill_and_consume(log, range(12))  # enough to roll and consume once
    spares = sorted(tmp_path.glob(f"*{SPARE_SUFFIX}"))
    assert len(spares) == 1
    spare_inode = spares[0].stat().st_ino
    first_active = log.active_segment
    while log.active_segment == first_active:
        await log.append([_rec(100)])
    assert segment_path(tmp_path, log.active_segment).stat().st_ino == spare_inode
    assert not spares[0].exists()
    await log.close()


async def test_readers_see_only_the_new_records_of_a_reused_file(tmp_path: Path) -> None:
    """A reused file is longer than its records (the old frames follow): the writer's reader,
    a read-only reader in another process, and the reported sizes all stop at the records."""
    log = _open(tmp_path)
    await _fill_and_consume(log, range(40))
    active = log.active_segment
    await log.append([_rec(1000, 10)])  # a small record into a (probably) reused file
    path = segment_path(tmp_path, active)
    end = log.end
    expected = [seq for seq in _seqs(log) if seq < 1000] + [1000]
    reader = SegmentLog(tmp_path, read_only=True, recycle=True)
    reader.open()
    assert reader.end == end == Position(active, log.segments()[-1][2])
    assert _seqs(reader) == _seqs(log) == expected
    assert reader.total_bytes == log.total_bytes
    assert path.stat().st_size > end.offset  # the old frames are really there
    assert reader.segment_summary(active).records == log.segment_summary(active).records
    await log.close()


async def test_close_cuts_a_reused_file_to_its_records(tmp_path: Path) -> None:
    """After a clean shutdown the active file ends where its records end (and the next start
    appends to it): nothing of an older segment is left behind."""
    log = _open(tmp_path)
    await _fill_and_consume(log, range(40))
    await log.append([_rec(1000, 10)])
    end = log.end
    await log.close()
    assert segment_path(tmp_path, end.segment).stat().st_size == end.offset
    again = _open(tmp_path)
    assert again.end == end
    await again.append([_rec(1001, 10)])
    assert _seqs(again)[-2:] == [1000, 1001]
    await again.close()


async def test_a_crash_in_a_reused_file_recovers_exactly_its_records(tmp_path: Path) -> None:
    """A restart without a clean close (kill -9): the records end at the end mark, the old
    frames after it are neither read nor reported as a torn tail, and appends continue."""
    log = _open(tmp_path)
    await _fill_and_consume(log, range(40))
    await log.append([_rec(1000, 10)])
    expected = _seqs(log)
    end = log.end
    path = segment_path(tmp_path, end.segment)
    assert os.pread(os.open(path, os.O_RDONLY), len(END_MARK), end.offset) == END_MARK

    again = SegmentLog(_crash_copy(tmp_path), segment_bytes=SEGMENT, recycle=True)
    report = again.open()
    assert (report.end, report.torn_tails, report.torn_bytes) == (end, 0, 0)
    assert _seqs(again) == expected
    await again.append([_rec(1001, 10)])
    assert _seqs(again) == [*expected, 1001]
    await again.close()
    await log.close()


async def test_a_torn_write_in_a_reused_file_is_cut_and_counted(tmp_path: Path) -> None:
    """Bytes after the records that are not the end mark (a write cut short by the crash)
    are a torn tail: cut off, counted, and the records before them intact."""
    log = _open(tmp_path)
    await _fill_and_consume(log, range(40))
    await log.append([_rec(1000, 10)])
    expected = _seqs(log)
    end = log.end
    crashed = _crash_copy(tmp_path)
    path = segment_path(crashed, end.segment)
    size = path.stat().st_size
    fd = os.open(path, os.O_WRONLY)
    os.pwrite(fd, b"\xc2half a frame", end.offset)  # over the end mark
    os.close(fd)

    again = SegmentLog(crashed, segment_bytes=SEGMENT, recycle=True)
    report = again.open()
    assert (report.end, report.torn_tails, report.torn_bytes) == (end, 1, size - end.offset)
    assert path.stat().st_size == end.offset
    assert _seqs(again) == expected
    await again.close()
    await log.close()


async def test_spares_are_removed_at_start_up(tmp_path: Path) -> None:
    """A spare left by the last run is not reused: segment ids start over if the segments are
    ever removed by hand, and an old file must never pass for a new segment."""
    log = _open(tmp_path)
    await _fill_and_consume(log, range(12))
    await log.close()
    assert list(tmp_path.glob(f"*{SPARE_SUFFIX}"))
    again = _open(tmp_path)
    assert not list(tmp_path.glob(f"*{SPARE_SUFFIX}"))
    await again.close()


async def test_segments_of_an_earlier_run_are_deleted_not_reused(tmp_path: Path) -> None:
    """Only files this writer created are reused: an earlier run's (or an older version's,
    whose frames carry no segment in their checksum) are deleted once consumed."""
    log = _open(tmp_path)
    for seq in range(30):
        await log.append([_rec(seq)])
    await log.close()
    old = [segment_id for segment_id, _, _ in log.segments()][:-1]
    assert len(old) >= 2
    again = _open(tmp_path)
    again.delete_segments_before(again.active_segment)
    assert not list(tmp_path.glob(f"*{SPARE_SUFFIX}"))
    assert all(not spare_path(tmp_path, segment_id).exists() for segment_id in old)
    await again.close()


async def test_without_recycle_consumed_segments_are_deleted(tmp_path: Path) -> None:
    """The default (the local store's logs): a consumed segment's file is removed."""
    log = SegmentLog(tmp_path, segment_bytes=SEGMENT)
    log.open()
    for seq in range(30):
        await log.append([_rec(seq)])
        log.delete_segments_before(log.active_segment)
    assert not list(tmp_path.glob(f"*{SPARE_SUFFIX}"))
    assert len(log.segments()) == 1
    await log.close()


# A session: appends of random sizes, consumption of the closed segments now and then, and
# restarts, clean or not. Whatever happened, the log holds exactly the records appended and
# not consumed, in order.
_STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(min_value=0, max_value=2_500)),
        st.tuples(st.just("consume"), st.just(0)),
        st.tuples(st.just("crash"), st.just(0)),
        st.tuples(st.just("restart"), st.just(0)),
    ),
    min_size=1,
    max_size=60,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=_STEPS, fsync=st.sampled_from(["always", "interval", "never"]))
async def test_any_session_of_appends_consumption_and_crashes_loses_and_invents_nothing(
    tmp_path_factory: pytest.TempPathFactory, steps: list[tuple[str, int]], fsync: str
) -> None:
    """After every step the log reads back exactly the appended, unconsumed records, in order,
    in every fsync mode; a last crash copy recovers them without a torn tail."""
    directory = tmp_path_factory.mktemp("wal")
    logs = [_open(directory, fsync=fsync)]
    log = logs[0]
    present: list[tuple[int, Position]] = []  # seq, position after it
    seq = 0
    for action, size in steps:
        if action == "append":
            present.append((seq, await log.append([_rec(seq, size)])))
            seq += 1
        elif action == "consume":
            active = log.active_segment
            log.delete_segments_before(active)
            present = [(s, p) for s, p in present if p.segment >= active]
        elif action == "restart":
            await log.close()
            log = _open(directory, fsync=fsync)
            logs.append(log)
        else:  # crash: go on with what the disk holds; the old writer is closed afterwards
            directory = _crash_copy(directory)
            log = _open(directory, fsync=fsync)
            logs.append(log)
        assert _seqs(log) == [s for s, _ in present]
    report_log = SegmentLog(_crash_copy(directory), segment_bytes=SEGMENT, recycle=True)
    report = report_log.open()
    assert report.torn_tails == 0
    assert _seqs(report_log) == [s for s, _ in present]
    await report_log.close()
    for each in logs:
        await each.close()
