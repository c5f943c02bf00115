"""Metrics and logs: the Prometheus metric objects (on an injected registry) and structlog setup.

Every metric of SPEC section 7 is created here, once, on the registry the app is given, so tests
build a fresh registry and assert exact values. Label values that come from clients (database,
token) are bounded: a database label only for names that exist in routing, capped, with the
rest counted under "other".
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import queue
import sys
import threading
from typing import Any, BinaryIO, cast

import orjson
import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from gateway import __version__

# Write latency is dominated by the group-commit fsync: sub-millisecond to a few seconds.
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
ENDPOINTS = ("v2_write", "v1_write", "query", "v2_query", "ping", "health", "ready", "metrics")
OTHER = "other"
MAX_DATABASE_LABELS = 1000


class Metrics:
    """All gateway_* metric objects, registered on one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.http_requests = Counter(
            "gateway_http_requests_total",
            "HTTP requests by endpoint and status code.",
            ["endpoint", "status"],
            registry=registry,
        )
        self.http_duration = Histogram(
            "gateway_http_request_duration_seconds",
            "HTTP request duration by endpoint.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.write_lines = Counter(
            "gateway_write_lines_total",
            "Line protocol lines received, by database, token name and result.",
            ["database", "token", "result"],
            registry=registry,
        )
        self.write_bytes = Counter(
            "gateway_write_bytes_total",
            "Decompressed write request body bytes, by database and token name.",
            ["database", "token"],
            registry=registry,
        )
        self.write_rejections = Counter(
            "gateway_write_rejections_total",
            "Rejected write requests by reason.",
            ["reason"],
            registry=registry,
        )
        self.auth_failures = Counter(
            "gateway_auth_failures_total",
            "Authentication and authorization failures by reason.",
            ["reason"],
            registry=registry,
        )
        self.buffer_bytes = Gauge(
            "gateway_buffer_bytes",
            "Bytes pending in the write-ahead buffer, per upstream.",
            ["upstream"],
            registry=registry,
        )
        self.buffer_records = Gauge(
            "gateway_buffer_records",
            "Records pending in the write-ahead buffer, per upstream.",
            ["upstream"],
            registry=registry,
        )
        self.buffer_oldest_age = Gauge(
            "gateway_buffer_oldest_age_seconds",
            "Age of the oldest pending record, per upstream.",
            ["upstream"],
            registry=registry,
        )
        self.upstream_requests = Counter(
            "gateway_upstream_requests_total",
            "Requests to upstreams by status code (or error).",
            ["upstream", "status"],
            registry=registry,
        )
        self.upstream_duration = Histogram(
            "gateway_upstream_request_duration_seconds",
            "Upstream request duration.",
            ["upstream"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.upstream_lines = Counter(
            "gateway_upstream_lines_total",
            "Lines handled per upstream by result.",
            ["upstream", "result"],
            registry=registry,
        )
        self.upstream_retries = Counter(
            "gateway_upstream_retries_total",
            "Upstream retries by reason.",
            ["upstream", "reason"],
            registry=registry,
        )
        self.upstream_up = Gauge(
            "gateway_upstream_up",
            "1 when the last attempt to the upstream succeeded.",
            ["upstream"],
            registry=registry,
        )
        self.policy_reloads = Counter(
            "gateway_policy_reloads_total",
            "Token policy reloads by result.",
            ["result"],
            registry=registry,
        )
        self.store_lines = Counter(
            "gateway_store_lines_total",
            "Lines appended to the local store.",
            ["database"],
            registry=registry,
        )
        self.storage_torn_tails = Counter(
            "gateway_storage_torn_tails_total",
            "Torn or corrupt log tails truncated when opening storage after a crash.",
            registry=registry,
        )
        self.storage_torn_bytes = Counter(
            "gateway_storage_torn_bytes_total",
            "Bytes of torn log tails truncated when opening storage after a crash.",
            registry=registry,
        )
        self.buffer_capacity = Gauge(
            "gateway_buffer_capacity_bytes",
            "buffer.max_bytes: the most the write-ahead buffer may hold before refusing writes.",
            registry=registry,
        )
        self.buffer_full = Gauge(
            "gateway_buffer_full",
            "1 while new writes are refused (503) because the buffer or the disk is full.",
            registry=registry,
        )
        self.build_info = Gauge(
            "gateway_build_info",
            "Always 1; the version label says which influx-gateway is running.",
            ["version"],
            registry=registry,
        )
        self.build_info.labels(__version__).set(1)
        # Counters that alerts watch start at 0, so the first increment is an increase.
        for result in ("ok", "error"):
            self.policy_reloads.labels(result)
        for reason in ("missing", "unknown", "expired", "forbidden"):
            self.auth_failures.labels(reason)
        self._databases: set[str] = set()

    def database_label(self, database: str) -> str:
        """The database as a label value, bounded: beyond the cap new names count as "other"."""
        if database in self._databases:
            return database
        if len(self._databases) >= MAX_DATABASE_LABELS:
            return OTHER
        self._databases.add(database)
        return database

    def upstream_started(self, upstream: str) -> None:
        """Make an upstream's counters exist at 0 from the start."""
        for result in ("sent", "deadletter", "dropped"):
            self.upstream_lines.labels(upstream, result)
        self.upstream_up.labels(upstream).set(1)


class BackgroundWriter:
    """A binary stream whose writes go to `target` from a thread of their own, in order.

    One log line per request must not stall the event loop: a write to a log file can block
    for milliseconds while the file system commits the journal for the write-ahead log's
    fsyncs (seen as /ping stalls under load). Lines are queued and written by a thread, which
    flushes whenever the queue runs empty; `close()` (also at exit) writes what is queued.
    The thread is started by the first write in each process, so a forked worker has its own.
    """

    def __init__(self, target: BinaryIO) -> None:
        self._target = target
        self._queue: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._pid = -1
        self._lock = threading.Lock()

    def write(self, data: bytes) -> int:
        if self._pid != os.getpid():
            self._start()
        self._queue.put(bytes(data))
        return len(data)

    def flush(self) -> None:
        """Nothing to do here: the writer thread flushes as soon as it has caught up."""

    def close(self) -> None:
        """Write everything queued, then stop the thread."""
        thread = self._thread
        if thread is not None and self._pid == os.getpid() and thread.is_alive():
            self._queue.put(None)
            thread.join(timeout=5)
        self._pid = -1  # a later write starts a new thread

    def _start(self) -> None:
        with self._lock:
            if self._pid == os.getpid():
                return
            self._queue = queue.SimpleQueue()  # a forked child: the parent's queue is not ours
            self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
            self._pid = os.getpid()
            self._thread.start()
            atexit.register(self.close)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                break
            try:
                self._target.write(item)
                if self._queue.empty():
                    self._target.flush()
            except (OSError, ValueError):  # stderr closed: nothing can be logged any more
                pass
        with contextlib.suppress(OSError, ValueError):
            self._target.flush()


_WRITER: BackgroundWriter | None = None


def flush_logs() -> None:
    """Write out every queued log line now (before os._exit, which skips atexit)."""
    if _WRITER is not None:
        _WRITER.close()


def configure_logging(level: str = "info", fmt: str = "auto") -> None:
    """structlog: JSON lines when stderr is not a terminal (or fmt="json"), console otherwise."""
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if use_json:
        processors += [
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=orjson.dumps),
        ]
        global _WRITER
        _WRITER = BackgroundWriter(sys.stderr.buffer)
        factory: Any = structlog.BytesLoggerFactory(cast(BinaryIO, _WRITER))
    else:
        processors.append(structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()))
        factory = structlog.PrintLoggerFactory(sys.stderr)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
