"""The tail cache serves exactly what the files hold: a differential test on a real log."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.buffer.record import Record
from gateway.buffer.tailcache import Limits
from gateway.buffer.wal import Consumer, WriteAheadLog

T = 1_700_000_000 * 10**9

# An operation: ("append", n records of this size) | ("consume", consumer, max_records)
#               | ("reopen",) -- a restart empties the cache.
operations = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(1, 4), st.integers(1, 400)),
        st.tuples(st.just("consume"), st.sampled_from(["a", "b"]), st.integers(1, 5)),
        st.tuples(st.just("reopen")),
    ),
    min_size=1,
    max_size=40,
)


def record(i: int, size: int) -> Record:
    payload = (b"m v=%di %d" % (i, T)).ljust(size, b"0") + b"\n"
    return Record("db", "ns", T, "tok", 1, T, T, payload)


def open_wal(path: Path, cache_bytes: int) -> WriteAheadLog:
    wal = WriteAheadLog(
        path,
        [Consumer("a"), Consumer("b")],
        max_bytes=2**30,
        fsync="never",
        segment_bytes=1000,  # rolls every few records
        tail_cache_bytes=cache_bytes,
    )
    wal.open()
    return wal


async def scenario(path: Path, ops: list[tuple], cache_bytes: int) -> int:
    wal = open_wal(path, cache_bytes)
    counter = hits = 0
    try:
        for op in ops:
            if op[0] == "append":
                for _ in range(op[1]):
                    await wal.append(record(counter, op[2]))
                    counter += 1
            elif op[0] == "reopen":
                await wal.close()
                wal = open_wal(path, cache_bytes)
            else:
                name, max_records = op[1], op[2]
                cursor = wal.cursor(name)
                limits = Limits(max_records, 10**9, 2**40)
                cached = wal.log.read_cached(cursor.position, limits)
                from_files = wal.read(
                    cursor.position, max_records=max_records, max_lines=10**9, max_bytes=2**40
                )
                if cached is not None:
                    hits += 1
                    assert [(p, r.payload) for p, r in cached] == [
                        (p, r.payload) for p, r in from_files
                    ]
                window = await wal.read_async(
                    cursor.position, max_records=max_records, max_lines=10**9, max_bytes=2**40
                )
                assert [r.payload for _, r in window] == [r.payload for _, r in from_files]
                for position, rec in window:
                    cursor = cursor.advanced(position, 1, rec.lines)
                await wal.commit(name, cursor)
    finally:
        await wal.close()
    return hits


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=operations, cache_bytes=st.sampled_from([300, 2000, 2**20]))
def test_cache_reads_equal_file_reads(ops: list[tuple], cache_bytes: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(scenario(Path(tmp), ops, cache_bytes))


async def test_a_consumer_that_keeps_up_reads_from_memory(tmp_path: Path) -> None:
    """Appends then reads, as the forwarder does: every read is a cache hit."""
    ops = [("append", 3, 100), ("consume", "a", 10), ("consume", "b", 2)] * 5
    ops += [("consume", "b", 10)]
    assert await scenario(tmp_path, ops, 2**20) == len([o for o in ops if o[0] == "consume"])


async def test_after_a_restart_the_backlog_comes_from_the_files(tmp_path: Path) -> None:
    wal = open_wal(tmp_path, 2**20)
    for i in range(5):
        await wal.append(record(i, 100))
    await wal.close()
    wal = open_wal(tmp_path, 2**20)
    try:
        start = wal.cursor("a").position
        assert wal.log.read_cached(start, Limits(10, 10**9, 2**40)) is None
        window = await wal.read_async(start, max_records=10, max_lines=10**9, max_bytes=2**40)
        assert [r.payload for _, r in window] == [record(i, 100).payload for i in range(5)]
    finally:
        await wal.close()
