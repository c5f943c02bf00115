"""The local store as a consumer of the write-ahead log (when upstreams are configured too).

Without upstreams the store is written directly by the HTTP path (it is then the durable log
itself); with upstreams, writes go to the log first and this loop copies the records routed to
the store into it, moving its own cursor only after the store has them durably.
"""

from __future__ import annotations

import asyncio

import structlog

from gateway.buffer.record import Record
from gateway.buffer.wal import WriteAheadLog
from gateway.errors import CorruptRecordError, StorageError
from gateway.observability import Metrics
from gateway.routing import Router
from gateway.store import LocalStore

STORE_CONSUMER = "@store"
log = structlog.get_logger("gateway.store")


def _kept_as_stored(_record: Record) -> bool:
    """Every record: the store frames a record's stored stream again without its lines."""
    return True


class StoreConsumer:
    """Copies the log's records for the store into the local store."""

    def __init__(
        self, *, wal: WriteAheadLog, store: LocalStore, router: Router, metrics: Metrics
    ) -> None:
        self._wal = wal
        self._store = store
        self._router = router
        self._metrics = metrics
        self._stop = asyncio.Event()

    def stop(self) -> None:
        """Stop after the current window."""
        self._stop.set()

    async def run(self) -> None:
        """Copy until stopped; storage errors are retried every second, damage in the log is
        skipped (and logged), and nothing else stops it either."""
        while not self._stop.is_set():
            try:
                copied = await self._copy_window()
            except CorruptRecordError as e:  # bit rot in the buffer: skip it (logged there)
                await self._wal.skip_damage(STORE_CONSUMER, e)
                continue
            except StorageError as e:
                log.error("store consumer cannot write; retrying", error=str(e))
                copied = False
            except Exception:  # a bug: never stop copying for good, nor silently
                log.exception("store consumer failed; retrying in 1 s")
                copied = False
            if not copied:
                wake = self._wal.wakeup(STORE_CONSUMER)
                stop = asyncio.ensure_future(self._stop.wait())
                woke = asyncio.ensure_future(wake.wait())
                await asyncio.wait({stop, woke}, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
                stop.cancel()
                woke.cancel()

    async def _copy_window(self) -> bool:
        cursor = self._wal.cursor(STORE_CONSUMER)
        self._wal.wakeup(STORE_CONSUMER).clear()
        window = await self._wal.read_async(
            cursor.position,
            max_records=10_000,
            max_lines=1_000_000,
            max_bytes=64 * 2**20,
            as_stored=_kept_as_stored,  # the store keeps a stored gzip stream as it is
        )
        if not window:
            return False
        for position, record in window:
            if self._router.targets(record.database).store:
                await self._store.append(record)
                self._metrics.store_lines.labels(self._metrics.database_label(record.database)).inc(
                    record.lines
                )
            cursor = cursor.advanced(position, 1, record.lines)
        await self._wal.commit(STORE_CONSUMER, cursor)
        return True
