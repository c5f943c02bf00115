"""The local store: the embedded default destination, one SegmentLog per database.

The gateway process opens it for writing (taking the store's flock, so two gateways never write
the same store); `influx-gateway store export|stats` open it with `read_only=True`, which takes
no lock, writes nothing and truncates nothing, and so works while the gateway runs. Retention
deletes whole closed segments whose every record is older than the retention period.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.buffer.record import Record
from gateway.buffer.segmentfile import storage_error
from gateway.buffer.segmentlog import START, FsyncMode, Position, RecoveryReport, SegmentLog
from gateway.errors import CorruptRecordError, StorageError
from gateway.store.layout import create_database_dir, find_databases, lock_store
from gateway.store.query import DatabaseStats

if TYPE_CHECKING:
    from gateway.store.shards import StoreShards

_IO_THREADS = 4  # shared by every database's log: each has at most one write in flight


class LocalStore:
    """Accepted writes kept on local disk, per database; exported and summarized by the CLI."""

    def __init__(
        self,
        directory: Path,
        *,
        retention_ns: int | None,
        fsync: FsyncMode = "always",
        clock: Callable[[], int] = time.time_ns,
        read_only: bool = False,
        segment_bytes: int = 64 * 2**20,
        fsync_interval: float = 1.0,
    ) -> None:
        self._directory = directory
        self._retention_ns = retention_ns
        self._fsync: FsyncMode = fsync
        self._clock = clock
        self._read_only = read_only
        self._segment_bytes = segment_bytes
        self._fsync_interval = fsync_interval
        self._logs: dict[str, SegmentLog] = {}
        # Damage that `records` read past (the rest of a segment whose record failed its
        # checksum), for the caller to report after reading.
        self.damage: list[CorruptRecordError] = []
        self._lock_fd = -1
        self._executor: ThreadPoolExecutor | None = None
        self._create_lock = asyncio.Lock()
        self.recovery: dict[str, RecoveryReport] = {}  # per database, from `open` (writer)

    @property
    def directory(self) -> Path:
        """The store's directory."""
        return self._directory

    def open(self) -> None:
        """Open the existing databases; a writer takes the lock and recovers each log."""
        if self._read_only:
            return
        try:
            self._directory.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise storage_error(e, f"cannot create the store {self._directory}") from e
        self._lock_fd = lock_store(self._directory)
        self._executor = ThreadPoolExecutor(max_workers=_IO_THREADS, thread_name_prefix="store")
        try:
            for database, path in find_databases(self._directory).items():
                log = self._new_log(path)
                self.recovery[database] = log.open()
                self._logs[database] = log
        except StorageError:
            self._release()
            raise

    def _new_log(self, path: Path) -> SegmentLog:
        return SegmentLog(
            path,
            segment_bytes=self._segment_bytes,
            fsync=self._fsync,
            fsync_interval=self._fsync_interval,
            read_only=self._read_only,
            executor=self._executor,
        )

    async def append(self, record: Record) -> None:
        """Store `record`; durable (per the fsync mode) when this returns."""
        log = self._logs.get(record.database)
        if log is None:
            log = await self._create(record.database)
        await log.append((record,))

    async def _create(self, database: str) -> SegmentLog:
        if self._read_only or self._executor is None:
            raise StorageError(f"the store {self._directory} is not open for writing")
        async with self._create_lock:
            log = self._logs.get(database)
            if log is None:
                loop = asyncio.get_running_loop()
                log = await loop.run_in_executor(self._executor, self._open_new, database)
                self._logs[database] = log
            return log

    def _open_new(self, database: str) -> SegmentLog:
        log = self._new_log(create_database_dir(self._directory, database))
        log.open()
        return log

    async def close(self) -> None:
        """Finish pending appends, close every log and release the lock."""
        try:
            for log in list(self._logs.values()):
                await log.close()
        finally:
            self._logs.clear()
            self._release()

    def _release(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None
        if self._lock_fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = -1

    def databases(self) -> list[str]:
        """The names of the databases in the store, sorted."""
        if self._read_only:
            return sorted(find_databases(self._directory))
        return sorted(self._logs)

    def _reader(self, database: str) -> SegmentLog | None:
        if not self._read_only:
            return self._logs.get(database)
        path = find_databases(self._directory).get(database)
        if path is None:
            return None
        log = self._new_log(path)
        log.open()
        return log

    def records(self, database: str) -> Iterator[Record]:
        """Every record of `database` in append order; nothing for an unknown one. A record
        that fails its checksum in a closed segment costs the rest of that segment: it is
        noted in `damage` and reading goes on with the next one."""
        log = self._reader(database)
        if log is None:
            return
        start = START
        while True:
            try:
                for _, record in log.read(start):
                    yield record
                return
            except CorruptRecordError as e:
                if e.segment is None:
                    raise
                self.damage.append(e)
                start = Position(e.segment + 1, 0)

    def bytes_on_disk(self, database: str) -> int:
        """Bytes of `database`'s segments (0 for an unknown one)."""
        log = self._reader(database)
        return 0 if log is None else log.total_bytes

    def export(
        self,
        database: str,
        *,
        measurement: str | None = None,
        start_ns: int | None = None,
        end_ns: int | None = None,
    ) -> Iterator[bytes]:
        """Lines of `database` in ns, start inclusive, end exclusive; empty for an unknown one."""
        return self._as_shards().export(
            database, measurement=measurement, start_ns=start_ns, end_ns=end_ns
        )

    def stats(self) -> list[DatabaseStats]:
        """Points, series, measurements, time range and bytes on disk of every database."""
        return self._as_shards().stats()

    def _as_shards(self) -> StoreShards:
        from gateway.store.shards import StoreShards  # shards.py imports this module

        return StoreShards([self])

    def enforce_retention(self) -> int:
        """Delete closed segments holding only points older than the retention; bytes freed.

        Blocking file I/O: call it from a worker thread in the server.
        """
        if self._read_only:
            raise StorageError(f"the store {self._directory} is open read-only")
        if self._retention_ns is None:
            return 0
        cutoff = self._clock() - self._retention_ns
        freed = 0
        for log in list(self._logs.values()):
            active = log.active_segment
            for segment_id, _, _ in log.segments():
                if segment_id >= active:
                    continue
                summary = log.segment_summary(segment_id)
                if summary.max_time_ns is None or summary.max_time_ns < cutoff:
                    freed += log.delete_segment(segment_id)
        return freed
