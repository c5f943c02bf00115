"""The write-ahead log and its cursors on real files."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from gateway.buffer.cursor import cursor_path
from gateway.buffer.record import Record
from gateway.buffer.wal import Consumer, WriteAheadLog
from gateway.errors import CorruptRecordError

T = 1_700_000_000 * 10**9


def record(i: int) -> Record:
    """A one-line record."""
    return Record("db", "ns", T, "tok", 1, T, T, b"m v=%di %d\n" % (i, T))


def wal_at(
    path: Path, *consumers: Consumer, max_bytes: int = 2**30, segment_bytes: int = 2**20
) -> WriteAheadLog:
    """An opened log with fsync off (these tests are about cursors, not durability)."""
    wal = WriteAheadLog(
        path, consumers, max_bytes=max_bytes, fsync="never", segment_bytes=segment_bytes
    )
    wal.open()
    return wal


async def consume_all(wal: WriteAheadLog, name: str) -> list[bytes]:
    """Read everything pending for a consumer and commit its cursor past it."""
    cursor = wal.cursor(name)
    window = wal.read(cursor.position, max_records=10**6, max_lines=10**9, max_bytes=2**40)
    for position, rec in window:
        cursor = cursor.advanced(position, 1, rec.lines)
    await wal.commit(name, cursor)
    return [rec.payload for _, rec in window]


async def test_cursor_survives_a_restart(tmp_path: Path) -> None:
    """A committed cursor is where the consumer resumes after reopening."""
    wal = wal_at(tmp_path, Consumer("up"))
    for i in range(3):
        await wal.append(record(i))
    assert 3 == len(await consume_all(wal, "up"))
    await wal.append(record(3))
    await wal.close()
    wal = wal_at(tmp_path, Consumer("up"))
    assert [record(3).payload] == await consume_all(wal, "up")
    assert 0 == wal.status("up").pending_records
    await wal.close()


async def test_new_consumer_starts_at_the_end(tmp_path: Path) -> None:
    """A consumer added later receives writes from then on, not the backlog of others."""
    wal = wal_at(tmp_path, Consumer("a"))
    await wal.append(record(0))
    await wal.close()
    wal = wal_at(tmp_path, Consumer("a"), Consumer("b"))
    await wal.append(record(1))
    assert [record(1).payload] == await consume_all(wal, "b")
    assert 2 == len(await consume_all(wal, "a"))
    await wal.close()


async def test_damaged_cursor_resends_from_the_oldest_data(tmp_path: Path) -> None:
    """A cursor file that cannot be read means a resend, never a skip."""
    wal = wal_at(tmp_path, Consumer("up"))
    for i in range(3):
        await wal.append(record(i))
    await consume_all(wal, "up")
    await wal.close()
    cursor_path(tmp_path / "cursors", "up").write_bytes(b"")  # e.g. cut short by a power loss
    wal = wal_at(tmp_path, Consumer("up"))
    assert 3 == len(await consume_all(wal, "up"))
    await wal.close()


async def test_segments_are_deleted_once_every_cursor_passed(tmp_path: Path) -> None:
    """A segment stays while any consumer still needs it."""
    wal = wal_at(tmp_path, Consumer("fast"), Consumer("slow"), segment_bytes=200)
    for i in range(20):
        await wal.append(record(i))
    before = len(wal.log.segments())
    await consume_all(wal, "fast")
    assert before == len(wal.log.segments())
    await consume_all(wal, "slow")
    assert len(wal.log.segments()) < before
    await wal.close()


async def test_drop_oldest_makes_room_and_reports(tmp_path: Path) -> None:
    """A full buffer drops the oldest segment of a drop_oldest consumer instead of refusing."""
    wal = wal_at(tmp_path, Consumer("mirror", drop_oldest=True), max_bytes=600, segment_bytes=200)
    dropped = []
    wal.on_drop = dropped.append
    for i in range(30):
        await wal.append(record(i))
    assert dropped
    assert wal.log.total_bytes <= 600 + 200
    assert sum(d.lines for d in dropped) + len(await consume_all(wal, "mirror")) == 30
    await wal.close()


async def test_streams_read_back_are_inflated_unless_sent_as_stored(tmp_path: Path) -> None:
    """Records held as gzip streams, read back from the files (after a restart: no tail cache):
    the reader inflates them in its own thread, except those the caller sends as the stream
    they are (a gzip upstream); those keep only their stream, with its size."""
    lines = [b"cpu,host=h%d v=%di %d\n" % (i, i, T) * 50 for i in range(3)]
    wal = wal_at(tmp_path, Consumer("up"))
    for i, payload in enumerate(lines):
        stream = gzip.compress(payload)
        await wal.append(Record("db", "ns", T, "tok", 50, T, T, payload, stored_gzip=stream))
        if i == 0:
            await wal.append(record(9))  # a plain record among them
    await wal.close()
    wal = wal_at(tmp_path, Consumer("up"))
    window = await wal.read_async(
        wal.cursor("up").position,
        max_records=10,
        max_lines=10**6,
        max_bytes=2**30,
        as_stored=lambda r: r.lines == 50 and r.size > len(lines[0]) // 2,
    )
    got = [r for _, r in window]
    assert [False, True, False, False] == [r.inflated for r in got]
    assert [len(lines[0]), len(record(9).payload), len(lines[1]), len(lines[2])] == [
        r.size for r in got
    ]
    assert [lines[0], record(9).payload, *lines[1:]] == [r.payload for r in got]  # on demand
    again = wal.read(wal.cursor("up").position, max_records=10, max_lines=10**6, max_bytes=2**30)
    assert [True] * 4 == [r.inflated for _, r in again]  # no predicate: every line in memory
    await wal.close()


async def test_damage_in_a_closed_segment_is_read_up_to_then_skipped(tmp_path: Path) -> None:
    """A closed segment damaged in the middle: a read gives the records before the damage, the
    next one raises CorruptRecordError saying where; skip_damage moves the consumer to the next
    segment, counting what it never got (from the segment's summary), and reading goes on."""
    wal = wal_at(tmp_path, Consumer("up"), segment_bytes=4096)
    for i in range(200):
        await wal.append(record(i))
    await wal.close()
    first = min((tmp_path / "log").glob("*.seg"))
    data = bytearray(first.read_bytes())
    data[len(data) // 2] ^= 0xFF
    first.write_bytes(bytes(data))

    wal = wal_at(tmp_path, Consumer("up"), segment_bytes=4096)
    start = wal.cursor("up").position
    before = wal.read(start, max_records=10**6, max_lines=10**9, max_bytes=2**40)
    assert [record(i).payload for i in range(len(before))] == [r.payload for _, r in before]
    assert 0 < len(before) < 200
    cursor = wal.cursor("up")
    for position, rec in before:
        cursor = cursor.advanced(position, 1, rec.lines)
    await wal.commit("up", cursor)
    with pytest.raises(CorruptRecordError) as raised:
        wal.read(cursor.position, max_records=10, max_lines=10**9, max_bytes=2**40)
    assert (raised.value.segment, raised.value.resume) == (int(first.stem), None)
    assert wal.status("up").pending_records > 0  # its oldest age is not needed for that
    damaged = await wal.skip_damage("up", raised.value)
    assert (damaged.consumer, damaged.segment) == ("up", int(first.stem))
    assert damaged.records == damaged.lines > 0
    after = await consume_all(wal, "up")
    assert len(before) + damaged.records + len(after) == 200
    assert [record(i).payload for i in range(200 - len(after), 200)] == after
    await wal.close()
