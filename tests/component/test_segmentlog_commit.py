"""SegmentLog group commit and fsync modes, with fsync calls counted."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from gateway.buffer.record import Record
from gateway.buffer.segmentlog import FsyncMode, SegmentLog, Syscalls


def _rec(seq: int) -> Record:
    return Record("db", "ns", 0, "tok", 1, seq, seq, f"m v={seq}i {seq}\n".encode())


class FsyncCounter:
    """os.fsync, counted, optionally slowed down to widen the window for batching."""

    def __init__(self, delay: float = 0.0) -> None:
        self.calls = 0
        self.delay = delay
        self.threads: set[int] = set()

    def __call__(self, fd: int) -> None:
        self.threads.add(threading.get_ident())
        self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        os.fsync(fd)


def _open(
    directory: Path, counter: FsyncCounter, fsync: FsyncMode = "always", interval: float = 1.0
) -> SegmentLog:
    log = SegmentLog(
        directory,
        fsync=fsync,
        fsync_interval=interval,
        syscalls=Syscalls(fsync=counter, datasync=counter),
    )
    log.open()
    counter.calls = 0  # open() (sync, at start-up) fsyncs the new directory
    counter.threads.clear()
    return log


@pytest.fixture(name="counter")
def fixture_counter() -> FsyncCounter:
    return FsyncCounter()


async def test_concurrent_appends_share_one_fsync(tmp_path: Path, counter: FsyncCounter) -> None:
    """200 concurrent appends cost far fewer than 200 fsyncs."""
    log = _open(tmp_path, counter)
    await asyncio.gather(*(log.append([_rec(seq)]) for seq in range(200)))
    calls = counter.calls
    await log.close()
    assert calls <= 5


async def test_appends_during_a_flush_join_the_next_one(tmp_path: Path) -> None:
    """Appends arriving while a (slow) fsync runs are batched into the following flush."""
    counter = FsyncCounter(delay=0.02)
    log = _open(tmp_path, counter)

    async def later(seq: int) -> None:
        await asyncio.sleep(seq * 0.0005)
        await log.append([_rec(seq)])

    await asyncio.gather(*(later(seq) for seq in range(200)))
    calls = counter.calls
    await log.close()
    assert calls < 20


async def test_every_concurrent_append_is_readable(tmp_path: Path, counter: FsyncCounter) -> None:
    """Group commit loses nothing: all 200 concurrent appends read back."""
    log = _open(tmp_path, counter)
    await asyncio.gather(*(log.append([_rec(seq)]) for seq in range(200)))
    seen = sorted(record.min_time_ns for _, record in log.read())
    await log.close()
    assert list(range(200)) == seen


async def test_fsync_runs_off_the_event_loop_thread(tmp_path: Path, counter: FsyncCounter) -> None:
    """No fsync of an append happens on the thread running the event loop."""
    log = _open(tmp_path, counter)
    await log.append([_rec(0)])
    await log.close()
    assert threading.get_ident() not in counter.threads


async def test_always_mode_fsyncs_before_append_returns(
    tmp_path: Path, counter: FsyncCounter
) -> None:
    """With fsync="always" each sequential append has been fsynced when it returns."""
    log = _open(tmp_path, counter)
    seen = []
    for seq in range(3):
        await log.append([_rec(seq)])
        seen.append(counter.calls)
    await log.close()
    assert [1, 2, 3] == seen


async def test_never_mode_does_not_fsync_appends(tmp_path: Path, counter: FsyncCounter) -> None:
    """With fsync="never" appends only write."""
    log = _open(tmp_path, counter, "never")
    for seq in range(5):
        await log.append([_rec(seq)])
    calls = counter.calls
    await log.close()
    assert 0 == calls


async def test_close_fsyncs_what_was_not_yet_synced(tmp_path: Path, counter: FsyncCounter) -> None:
    """close() makes unsynced writes durable."""
    log = _open(tmp_path, counter, "never")
    await log.append([_rec(0)])
    await log.close()
    assert 1 == counter.calls


async def test_interval_mode_fsyncs_later_not_on_append(
    tmp_path: Path, counter: FsyncCounter
) -> None:
    """With fsync="interval" an append returns unsynced; an fsync follows within the interval."""
    log = _open(tmp_path, counter, "interval", interval=0.1)
    await log.append([_rec(0)])
    at_return = counter.calls
    await asyncio.sleep(0.3)
    later = counter.calls
    await log.close()
    assert (0, 1) == (at_return, later)


async def test_interval_mode_fsyncs_at_most_once_per_interval(
    tmp_path: Path, counter: FsyncCounter
) -> None:
    """Steady appends with a 0.1 s interval cost at most one fsync per elapsed interval."""
    log = _open(tmp_path, counter, "interval", interval=0.1)
    began = time.monotonic()
    for seq in range(30):
        await log.append([_rec(seq)])
        await asyncio.sleep(0.01)
    calls, elapsed = counter.calls, time.monotonic() - began
    await log.close()
    assert 1 <= calls <= elapsed / 0.1 + 1


async def test_submit_from_another_thread_shares_the_flush(
    tmp_path: Path, counter: FsyncCounter
) -> None:
    """`submit` (the write path's validation thread) queues records like `append`: the future
    gets the position once durable, and concurrent ones share flushes (once the log's writer
    thread runs: an `append` started it)."""
    log = _open(tmp_path, counter)
    loop = asyncio.get_running_loop()
    await log.append([_rec(50)])
    fsyncs_before = counter.calls
    futures = [loop.create_future() for _ in range(50)]
    taken = await asyncio.gather(
        *(
            asyncio.to_thread(log.submit, [_rec(seq)], future, loop)
            for seq, future in enumerate(futures)
        )
    )
    positions = await asyncio.gather(*futures)
    assert all(taken)
    assert sorted(positions) == sorted(set(positions))  # one distinct end per record
    assert max(positions) == log.end
    assert sorted(record.payload for _, record in log.read()) == sorted(
        _rec(seq).payload for seq in range(51)
    )
    assert counter.calls - fsyncs_before < 50
    await log.close()


async def test_a_thread_never_starts_the_writer_thread(
    tmp_path: Path, counter: FsyncCounter
) -> None:
    """`submit` from a thread declines while the log's writer thread is not running, and the
    next `append` (on the loop) starts it: a thread started by a validation thread would inherit
    its lowered CPU priority (http/offload.py). The writer runs at the loop's priority."""
    log = _open(tmp_path, counter)
    loop = asyncio.get_running_loop()

    def niced_submit(record: Record, future: asyncio.Future[object]) -> bool:
        os.nice(5)  # this thread only (Linux)
        return log.submit([record], future, loop)  # type: ignore[arg-type]

    with ThreadPoolExecutor(max_workers=1) as niced:
        declined = loop.create_future()
        assert not await loop.run_in_executor(niced, niced_submit, _rec(1), declined)
        await log.append([_rec(2)])
        taken = loop.create_future()
        assert await loop.run_in_executor(niced, log.submit, [_rec(3)], taken, loop)
        await taken
        assert not declined.done()
        writers = [t for t in threading.enumerate() if t.name == f"log-writer:{tmp_path.name}"]
        assert len(writers) == 1 and writers[0].native_id is not None
        own = os.getpriority(os.PRIO_PROCESS, 0)
        assert own == os.getpriority(os.PRIO_PROCESS, writers[0].native_id)
        niced_nice = await loop.run_in_executor(niced, os.getpriority, os.PRIO_PROCESS, 0)
        assert min(19, own + 5) == niced_nice  # 19 is the ceiling, under a niced test run too
    assert [_rec(2).payload, _rec(3).payload] == [record.payload for _, record in log.read()]
    await log.close()


async def test_submit_declines_when_the_log_cannot_take_it_from_a_thread(
    tmp_path: Path, counter: FsyncCounter
) -> None:
    """False, queuing nothing: on a closed log, and in "interval" mode before an `append` has
    started the periodic fsync (a thread cannot start it)."""
    loop = asyncio.get_running_loop()
    interval = _open(tmp_path / "interval", counter, fsync="interval", interval=0.05)
    assert not interval.submit([_rec(1)], loop.create_future(), loop)
    await interval.append([_rec(2)])
    later = loop.create_future()
    assert interval.submit([_rec(3)], later, loop)
    await later
    await interval.close()
    closed = _open(tmp_path / "closed", counter)
    await closed.close()
    assert not closed.submit([_rec(4)], loop.create_future(), loop)
