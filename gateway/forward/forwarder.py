"""One forwarding loop per upstream: read -> batch -> send -> decide -> cursor.

The loop reads a window of records from its cursor, keeps those routed to its upstream, groups
them into batches per (database, precision) -- never mixing databases -- and sends them:
batches of one database one after another (so each database arrives in order), different
databases concurrently up to `concurrency`. A gzip upstream is sent a large record that the
log holds as a one-member gzip stream (the client's, or compressed once at acceptance) on its
own, as that stream: its lines are not compressed again (the cost that otherwise keeps
forwarding behind acceptance). Every batch ends done, partially or wholly dead-lettered, or
split (413); anything else is retried with the delay the status table gives. Only when the
whole window is settled does the cursor move past it: a crash at any point resends
(at-least-once), never skips.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from gateway.buffer.cursor import Cursor
from gateway.buffer.record import Record
from gateway.buffer.segmentlog import Position
from gateway.buffer.wal import WriteAheadLog
from gateway.config import UpstreamConfig
from gateway.errors import CorruptRecordError
from gateway.forward import deadletter
from gateway.forward.decide import Health, UpstreamDecision, UpstreamResponse, decide
from gateway.forward.upstream import UpstreamClient
from gateway.lineprotocol import iter_lines
from gateway.observability import Metrics
from gateway.routing import Router

log = structlog.get_logger("gateway.forward")

MAX_WINDOW_RECORDS = 50_000
# A record of at least this much line protocol, held as a gzip stream, is a batch of its own for
# a gzip upstream, sent as that stream (a smaller one is batched with others and compressed).
AS_SENT_MIN_BYTES = 64 * 1024
REPLAY_CHECK_S = 2.0


@dataclass
class Batch:
    """Lines of one database and precision, sent as one request."""

    database: str
    precision: str
    parts: list[bytes] = field(default_factory=list)  # line protocol, record by record
    lines: int = 0
    size: int = 0
    prepared: asyncio.Task[bytes | None] | None = None  # the wire body, made in advance
    as_sent: bytes | None = None  # a gzip upstream's wire body as it is: the stored stream
    record: Record | None = None  # the one record of an `as_sent` batch (instead of `parts`)

    @property
    def payloads(self) -> list[bytes]:
        """The line protocol (an `as_sent` record's is inflated here, only when needed: to
        split the batch or dead-letter lines; a record read back from disk holds only its
        stream)."""
        return [self.record.payload] if self.record is not None else self.parts

    def body(self) -> bytes:
        """The request body in one piece (sending uses the payloads as they are)."""
        payloads = self.payloads
        return payloads[0] if len(payloads) == 1 else b"".join(payloads)


class Stopping(Exception):
    """The forwarder was told to stop while a batch was still unsettled."""


class Forwarder:
    """Delivers the write-ahead log to one upstream."""

    def __init__(
        self,
        config: UpstreamConfig,
        *,
        wal: WriteAheadLog,
        client: UpstreamClient,
        router: Router,
        metrics: Metrics,
        deadletter_dir: Path,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.name = config.name
        self._wal = wal
        self._client = client
        self._router = router
        self._metrics = metrics
        self._deadletter_dir = deadletter_dir
        self._rng = rng or random.Random()
        self._clock = clock
        self._stop = asyncio.Event()
        self._semaphore = asyncio.Semaphore(config.concurrency)
        self.health: Health = "pass"
        self.health_message = "no data sent yet"
        self.retrying = False
        self._up_logged: bool | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to stop: no new attempts are started; in-flight ones may finish."""
        self._stop.set()

    async def run(self) -> None:
        """Forward until stopped."""
        self._metrics.upstream_up.labels(self.name).set(1)
        last_replay_check = 0.0
        while not self._stop.is_set():
            if self._clock() - last_replay_check >= REPLAY_CHECK_S:
                last_replay_check = self._clock()
                await self._replay_spool()
            try:
                progressed = await self._forward_window()
            except Stopping:
                return
            except CorruptRecordError as e:  # bit rot in the buffer: skip it (logged there)
                damaged = await self._wal.skip_damage(self.name, e)
                self._metrics.upstream_lines.labels(self.name, "dropped").inc(damaged.lines)
                continue
            except Exception:  # a bug: never let forwarding stop for good, nor silently
                log.exception("forwarding failed; retrying in 1 s", upstream=self.name)
                self._metrics.upstream_up.labels(self.name).set(0)
                await self._idle(1.0)
                continue
            if not progressed:
                await self._idle(REPLAY_CHECK_S)

    async def _idle(self, timeout: float) -> None:
        wake = self._wal.wakeup(self.name)
        stop = asyncio.ensure_future(self._stop.wait())
        woke = asyncio.ensure_future(wake.wait())
        try:
            await asyncio.wait({stop, woke}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            woke.cancel()

    # -- the window ------------------------------------------------------------------------------

    async def _read_window(self, cursor: Cursor) -> list[tuple[Position, Record]]:
        cfg = self.config
        max_lines = cfg.batch_max_lines * cfg.concurrency
        max_bytes = cfg.batch_max_bytes * cfg.concurrency
        deadline = self._clock() + cfg.flush_interval
        while True:
            self._wal.wakeup(self.name).clear()
            window = await self._wal.read_async(
                cursor.position,
                max_records=MAX_WINDOW_RECORDS,
                max_lines=max_lines,
                max_bytes=max_bytes,
                as_stored=sent_as_stored if cfg.gzip else None,
            )
            lines = sum(record.lines for _, record in window)
            remaining = deadline - self._clock()
            if not window or lines >= cfg.batch_max_lines or remaining <= 0:
                return window
            if len(window) >= MAX_WINDOW_RECORDS or self._stop.is_set():
                return window
            await self._idle(remaining)  # wait for a fuller batch, at most flush_interval

    async def _forward_window(self) -> bool:
        """Send one window; returns False when there was nothing to send."""
        cursor = self._wal.cursor(self.name)
        window = await self._read_window(cursor)
        if not window:
            return False
        batches = self._batches([record for _, record in window])
        by_database: dict[str, list[Batch]] = {}
        for batch in batches:
            by_database.setdefault(batch.database, []).append(batch)
        await asyncio.gather(*(self._send_in_order(group) for group in by_database.values()))
        new_cursor = cursor
        for position, record in window:
            new_cursor = new_cursor.advanced(position, 1, record.lines)
        await self._wal.commit(self.name, new_cursor)
        return True

    def _batches(self, records: list[Record]) -> list[Batch]:
        routed = [r for r in records if self.name in self._router.targets(r.database).upstreams]
        cfg = self.config
        return plan_batches(
            routed, max_lines=cfg.batch_max_lines, max_bytes=cfg.batch_max_bytes, gzip=cfg.gzip
        )

    async def _send_in_order(self, batches: list[Batch]) -> None:
        try:
            if self.config.gzip:  # compress them all at once (in threads), send one by one
                for batch in batches:
                    if batch.as_sent is None:
                        batch.prepared = asyncio.ensure_future(self._client.prepare(batch.parts))
            for batch in batches:
                await self.deliver(batch)
        finally:
            for batch in batches:
                if batch.prepared is not None and not batch.prepared.done():
                    batch.prepared.cancel()

    # -- one batch -------------------------------------------------------------------------------

    async def deliver(self, batch: Batch) -> None:
        """Send a batch until it is settled (sent, dead-lettered, or split and settled)."""
        attempt = 0
        while True:
            if self._stop.is_set() and attempt > 0:
                raise Stopping
            prepared = batch.as_sent
            if prepared is None and batch.prepared is not None:
                prepared = await batch.prepared
            # `parts`, not `payloads`: a stored stream goes to its (gzip) upstream as it is, with
            # no lines to hand over, so none are inflated (its batch's `parts` is empty).
            async with self._semaphore:
                started = time.perf_counter()
                response = await self._client.write(
                    batch.database, batch.precision, batch.parts, prepared=prepared
                )
                elapsed = time.perf_counter() - started
            status = "error" if response.status is None else str(response.status)
            self._metrics.upstream_requests.labels(self.name, status).inc()
            self._metrics.upstream_duration.labels(self.name).observe(elapsed)
            attempt += 1
            decision = decide(
                response,
                attempt=attempt,
                batch_lines=batch.lines,
                on_missing_database=self.config.on_missing_database,
                retry_max_delay=self.config.retry_max_delay,
                now=self._clock(),
                rng=self._rng,
            )
            self._observe(batch, response, decision, elapsed)
            if decision.outcome == "retry":
                self._metrics.upstream_retries.labels(self.name, decision.reason).inc()
                await self._sleep(decision.delay)
                continue
            await self._settle(batch, response, decision)
            return

    async def _settle(
        self, batch: Batch, response: UpstreamResponse, decision: UpstreamDecision
    ) -> None:
        if decision.outcome != "done" and batch.record is not None and not batch.record.inflated:
            try:  # its lines are needed now (split, dead letter): in a thread, it may be large
                await asyncio.to_thread(batch.record.inflate)
            except CorruptRecordError as e:  # a stored stream that does not inflate: no lines
                self._metrics.upstream_lines.labels(self.name, "dropped").inc(batch.lines)
                log.error(
                    "damaged record in the buffer (its gzip stream): refused upstream, dropped",
                    upstream=self.name,
                    lines=batch.lines,
                    status=response.status,
                    reason=str(e),
                )
                return
        if decision.outcome == "done":
            self._metrics.upstream_lines.labels(self.name, "sent").inc(batch.lines)
        elif decision.outcome == "split":
            for half in split(batch):
                await self.deliver(half)
        elif decision.outcome == "deadletter":
            await self._dead_letter(batch, batch.body(), batch.lines, response, decision)
        else:  # partial
            rejected = set(decision.rejected_lines)
            lines = list(iter_lines(batch.body()))
            # When the upstream did not say which lines, keep them all (flagged by the message).
            bad = [line for n, line in enumerate(lines, 1) if n in rejected] if rejected else lines
            data = b"".join(line + b"\n" for line in bad)
            await self._dead_letter(batch, data, len(bad), response, decision)
            self._metrics.upstream_lines.labels(self.name, "sent").inc(batch.lines - len(bad))

    async def _dead_letter(
        self,
        batch: Batch,
        data: bytes,
        lines: int,
        response: UpstreamResponse,
        decision: UpstreamDecision,
    ) -> None:
        letter = deadletter.refused(
            self.name, batch.database, batch.precision, response, decision, data, lines
        )
        await asyncio.to_thread(deadletter.append, self._deadletter_dir, letter)
        self._metrics.upstream_lines.labels(self.name, "deadletter").inc(lines)
        log.warning(
            "lines dead-lettered",
            upstream=self.name,
            database=batch.database,
            lines=lines,
            status=response.status,
            reason=decision.reason,
            message=decision.message,
        )

    def _observe(
        self,
        batch: Batch,
        response: UpstreamResponse,
        decision: UpstreamDecision,
        elapsed: float,
    ) -> None:
        ok = decision.outcome != "retry"
        self._metrics.upstream_up.labels(self.name).set(1 if ok else 0)
        self.retrying = not ok
        self.health = decision.health
        self.health_message = decision.message if not ok else "last send succeeded"
        log.info(
            "upstream batch",
            upstream=self.name,
            database=batch.database,
            lines=batch.lines,
            bytes=batch.size,
            status=response.status,
            outcome=decision.outcome,
            reason=decision.reason,
            delay_s=round(decision.delay, 3),
            duration_ms=round(elapsed * 1000, 3),
        )
        if self._up_logged is not ok:
            if not ok:
                log.error(
                    "upstream down: retrying, data stays buffered",
                    upstream=self.name,
                    status=response.status,
                    message=decision.message,
                )
            elif self._up_logged is False:
                log.warning("upstream up again", upstream=self.name)
            self._up_logged = ok

    async def _sleep(self, delay: float) -> None:
        try:
            await asyncio.wait_for(self._stop.wait(), timeout=delay)
        except TimeoutError:
            return
        raise Stopping

    # -- dead-letter replay ----------------------------------------------------------------------

    async def _replay_spool(self) -> None:
        letters = await asyncio.to_thread(deadletter.take_replay, self._deadletter_dir, self.name)
        if not letters:
            return
        log.info("replaying dead letters", upstream=self.name, entries=len(letters))
        for letter in letters:
            data = letter.data.encode()
            lines = sum(1 for _ in iter_lines(data))
            await self.deliver(Batch(letter.database, letter.precision, [data], lines, len(data)))
            await asyncio.to_thread(deadletter.finish_replay, self._deadletter_dir, self.name, 1)


def plan_batches(
    records: Iterable[Record], *, max_lines: int, max_bytes: int, gzip: bool
) -> list[Batch]:
    """The batches a window of records is sent in. Pure.

    A batch holds one (database, precision) and, past its first record, at most `max_lines`
    lines and `max_bytes` of line protocol; the records of one (database, precision) keep their
    order across its batches. For a gzip upstream (`gzip`), a record held as a gzip stream
    (Record.stored_gzip) with at least AS_SENT_MIN_BYTES of line protocol is a batch of its own,
    sent as that stream (after the batch open before it).
    """
    open_batches: dict[tuple[str, str], Batch] = {}
    done: list[Batch] = []
    for record in records:
        key = (record.database, record.precision)
        if gzip and sent_as_stored(record):
            if key in open_batches:  # what came before it goes first
                done.append(open_batches.pop(key))
            done.append(_as_sent(record))
            continue
        batch = open_batches.get(key)
        if batch is not None and (
            batch.lines + record.lines > max_lines or batch.size + record.size > max_bytes
        ):
            done.append(batch)
            batch = None
        if batch is None:
            batch = open_batches[key] = Batch(record.database, record.precision)
        batch.parts.append(record.payload)
        batch.lines += record.lines
        batch.size += record.size
    return done + list(open_batches.values())


def sent_as_stored(record: Record) -> bool:
    """Whether a gzip upstream is sent this record alone, as the gzip stream it is held as
    (then its lines need not be in memory). Pure."""
    return record.stored_gzip is not None and record.size >= AS_SENT_MIN_BYTES


def _as_sent(record: Record) -> Batch:
    """A batch of one record, to send as the gzip stream it was stored as."""
    return Batch(
        record.database,
        record.precision,
        lines=record.lines,
        size=record.size,
        as_sent=record.stored_gzip,
        record=record,
    )


def split(batch: Batch) -> tuple[Batch, Batch]:
    """Two halves of a batch by lines (for a 413)."""
    lines = list(iter_lines(batch.body()))
    middle = len(lines) // 2
    halves = []
    for part in (lines[:middle], lines[middle:]):
        data = b"".join(line + b"\n" for line in part)
        halves.append(Batch(batch.database, batch.precision, [data], len(part), len(data)))
    return halves[0], halves[1]
