"""Where accepted writes go, and the loops that take them there.

Two shapes, chosen by the config:

- no upstream (the embedded default): the HTTP path appends straight to the local store, which
  is itself a durable log (one fsync per group commit);
- upstreams: the HTTP path appends to the write-ahead log; one Forwarder per upstream, and a
  StoreConsumer when the store is enabled too, each read it from their own cursor.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

import aiohttp
import structlog

from gateway.buffer.record import Record
from gateway.buffer.segmentlog import Position, RecoveryReport
from gateway.buffer.wal import TAIL_CACHE_BYTES, Consumer, ConsumerStatus, Dropped, WriteAheadLog
from gateway.config import Config
from gateway.errors import StorageFullError
from gateway.forward.forwarder import Forwarder
from gateway.forward.storesink import STORE_CONSUMER, StoreConsumer
from gateway.forward.upstream import UpstreamClient, load_token
from gateway.observability import Metrics
from gateway.routing import Router
from gateway.store import LocalStore

log = structlog.get_logger("gateway")
METRICS_INTERVAL_S = 2.0
NEARLY_FULL = 0.9  # an upstream holding this share of buffer.max_bytes fails its health check


def wal_consumers(config: Config) -> list[Consumer]:
    """The consumers of the write-ahead log for a config: every upstream, then the store."""
    consumers = [Consumer(up.name, up.on_overflow == "drop_oldest") for up in config.upstreams]
    if config.store_enabled:
        consumers.append(Consumer(STORE_CONSUMER))
    return consumers


def tail_cache_bytes(config: Config) -> int:
    """Memory for the newest records, which consumers that keep up read instead of the files.

    The budget is the gateway's: with N workers each process keeps 1/N of it. A single process
    with several consumers keeps twice as much: the slowest of them lags further behind the
    newest record, and one that falls out of the cache reads the files back (decoding every
    record on the way), which makes it lag further (two upstreams, `bench/README.md`: 1.84 M
    against 1.57-1.72 M plain lines/s). With workers the memory goes to their own processes.
    """
    consumers = len(wal_consumers(config))
    workers = config.server.workers
    return TAIL_CACHE_BYTES * (2 if workers == 1 and consumers > 1 else 1) // workers


def build_wal(config: Config, *, read_only: bool = False) -> WriteAheadLog:
    """The write-ahead log of a config."""
    return WriteAheadLog(
        config.buffer_path,
        wal_consumers(config),
        max_bytes=config.buffer.max_bytes,
        fsync=config.buffer.fsync,
        fsync_interval=config.buffer.fsync_interval,
        segment_bytes=config.buffer.segment_bytes,
        tail_cache_bytes=tail_cache_bytes(config),
        # Clients' gzip streams are kept in memory only for upstreams that are sent them.
        tail_keeps_gzip=bool(config.gzip_upstreams),
        read_only=read_only,
    )


class Destinations:
    """The sink the HTTP path appends to, and the delivery loops behind it."""

    def __init__(
        self, config: Config, *, router: Router, metrics: Metrics, clock: Callable[[], int]
    ) -> None:
        self.config = config
        self._router = router
        self._metrics = metrics
        self.store: LocalStore | None = None
        if config.store_enabled:
            self.store = LocalStore(
                config.store_path,
                retention_ns=int(config.store.retention * 1e9) if config.store.retention else None,
                fsync=config.buffer.fsync,
                fsync_interval=config.buffer.fsync_interval,
                segment_bytes=config.buffer.segment_bytes,
                clock=clock,
            )
        self.wal: WriteAheadLog | None = build_wal(config) if config.upstreams else None
        if self.wal is not None:
            self.wal.on_drop = self._dropped
        self.forwarders: dict[str, Forwarder] = {}
        self.clients: dict[str, UpstreamClient] = {}
        self._session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._store_consumer: StoreConsumer | None = None
        self.status: dict[str, ConsumerStatus] = {}
        self.full = False  # the last append was refused for lack of room

    # -- the sink --------------------------------------------------------------------------------

    async def append(self, record: Record) -> None:
        """Make an accepted write durable (log or store); raises StorageError when it cannot."""
        if self.wal is not None:
            await self._durable(self.wal.append(record))
        else:
            assert self.store is not None
            await self._durable(self.store.append(record))

    def submit(
        self, record: Record, future: asyncio.Future[Position], loop: asyncio.AbstractEventLoop
    ) -> bool:
        """From the validation thread: start appending to the log at once, when it can take the
        record without making room (else False: `append` it on the loop). The caller awaits
        `submitted(future)` on the loop."""
        return self.wal is not None and self.wal.submit(record, future, loop)

    async def submitted(self, future: asyncio.Future[Position]) -> None:
        """`append`'s end for a submitted record: durable, or StorageError."""
        assert self.wal is not None
        await self._durable(future)
        self.wal.appended()

    async def _durable(self, appending: Awaitable[object]) -> None:
        try:
            await appending
        except StorageFullError:
            if not self.full:
                log.error("buffer full: refusing writes with 503 until there is room")
                self._metrics.buffer_full.set(1)
            self.full = True
            raise
        if self.full:
            log.warning("buffer has room again: accepting writes")
            self._metrics.buffer_full.set(0)
            self.full = False

    def _dropped(self, dropped: Dropped) -> None:
        self._metrics.upstream_lines.labels(dropped.consumer, "dropped").inc(dropped.lines)
        log.warning(
            "buffer full: dropped the oldest pending data of a drop_oldest upstream",
            upstream=dropped.consumer,
            records=dropped.records,
            lines=dropped.lines,
        )

    # -- lifecycle -------------------------------------------------------------------------------

    def open(self) -> list[tuple[str, RecoveryReport]]:
        """Open storage (blocking: call in a thread); returns what recovery found."""
        reports: list[tuple[str, RecoveryReport]] = []
        if self.store is not None:
            self.store.open()
            reports += [(f"store:{db}", r) for db, r in self.store.recovery.items()]
        if self.wal is not None:
            reports.append(("buffer", self.wal.open()))
        return reports

    async def start(self) -> None:
        """Start the delivery loops."""
        if self.wal is None:
            return
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
        self._session = aiohttp.ClientSession(connector=connector)
        self._metrics.buffer_capacity.set(self.config.buffer.max_bytes)
        for up in self.config.upstreams:
            self._metrics.upstream_started(up.name)
            client = UpstreamClient(up, self._session, token=load_token(up))
            self.clients[up.name] = client
            forwarder = Forwarder(
                up,
                wal=self.wal,
                client=client,
                router=self._router,
                metrics=self._metrics,
                deadletter_dir=self.config.deadletter_path,
            )
            self.forwarders[up.name] = forwarder
            self._tasks.append(asyncio.create_task(forwarder.run(), name=f"forward:{up.name}"))
        if self.store is not None:
            self._store_consumer = StoreConsumer(
                wal=self.wal, store=self.store, router=self._router, metrics=self._metrics
            )
            self._tasks.append(asyncio.create_task(self._store_consumer.run(), name="store"))
        self._tasks.append(asyncio.create_task(self._refresh_metrics(), name="buffer-metrics"))

    async def stop(self, drain_timeout: float) -> None:
        """Give the loops up to `drain_timeout` to deliver what is pending, then stop them."""
        if self.wal is not None:
            deadline = time.monotonic() + drain_timeout
            pending = await self.pending_records()
            while pending and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
                pending = await self.pending_records()
            if pending:
                log.warning(
                    "drain time over: pending records stay buffered for the next start",
                    pending_records=pending,
                )
            else:
                log.info("buffer drained: every upstream has everything")
        for forwarder in self.forwarders.values():
            forwarder.stop()
        if self._store_consumer is not None:
            self._store_consumer.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self._session is not None:
            await self._session.close()
        if self.wal is not None:
            await self.wal.close()
        if self.store is not None:
            await self.store.close()

    # -- status ----------------------------------------------------------------------------------

    async def _statuses(self) -> dict[str, ConsumerStatus]:
        wal = self.wal
        if wal is None:
            return {}
        names = list(wal.consumers)

        def collect() -> dict[str, ConsumerStatus]:
            return {name: wal.status(name) for name in names}

        self.status = await asyncio.to_thread(collect)
        return self.status

    async def pending_records(self) -> int:
        """Records some consumer has not yet taken (0 without a buffer)."""
        return sum(status.pending_records for status in (await self._statuses()).values())

    async def _refresh_metrics(self) -> None:
        while True:
            try:
                statuses = await self._statuses()
                now = time.time_ns()
                for name, status in statuses.items():
                    label = "store" if name == STORE_CONSUMER else name
                    self._metrics.buffer_bytes.labels(label).set(status.pending_bytes)
                    self._metrics.buffer_records.labels(label).set(status.pending_records)
                    age = 0.0
                    if status.oldest_pending_ns is not None:
                        age = max(0.0, (now - status.oldest_pending_ns) / 1e9)
                    self._metrics.buffer_oldest_age.labels(label).set(age)
            except Exception:
                log.exception("cannot refresh buffer metrics")
            await asyncio.sleep(METRICS_INTERVAL_S)

    def checks(self) -> list[dict[str, str]]:
        """One /health check per destination."""
        checks = []
        now = time.time_ns()
        for name, forwarder in self.forwarders.items():
            status = self.status.get(name)
            pending = ""
            if status is not None and status.pending_records:
                age = (now - (status.oldest_pending_ns or now)) / 1e9
                pending = f"; {status.pending_bytes} bytes pending, oldest {age:.0f}s"
            health = forwarder.health
            if (
                health == "pass"
                and status is not None
                and status.pending_records
                and forwarder.retrying
            ):
                health = "warn"
            holding = status is not None and status.pending_records > 0
            nearly_full = (
                status is not None
                and status.pending_bytes >= NEARLY_FULL * self.config.buffer.max_bytes
            )
            if (self.full and holding) or nearly_full:  # this upstream is what fills the buffer
                health = "fail"
                pending += "; buffer full" if self.full else "; buffer nearly full"
            checks.append(
                {"name": name, "status": health, "message": forwarder.health_message + pending}
            )
        if self.store is not None:
            checks.append(
                {"name": "store", "status": "pass", "message": "local store accepting writes"}
            )
        return checks
