"""`influx-gateway replay`: backfill an upstream from the local store or from line protocol
files -- the migration tool. Sends directly (not through the running gateway's buffer), in
batches of the upstream's batch_max_lines, at most --rate lines per second, retrying what the
status table says to retry and dead-lettering what it says to give up on."""

from __future__ import annotations

import asyncio
import random
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from gateway.config import Config, UpstreamConfig
from gateway.forward import deadletter
from gateway.forward.decide import decide
from gateway.forward.upstream import UpstreamClient, load_token
from gateway.lineprotocol import TimeRules, iter_lines, validate


@dataclass
class ReplayReport:
    """What a replay did."""

    sent: int = 0
    deadlettered: int = 0
    invalid: int = 0


@dataclass(frozen=True)
class Chunk:
    """Lines of one database in one precision."""

    database: str
    precision: str
    lines: list[bytes]


def file_chunks(
    paths: Iterable[Path], database: str, precision: str, batch: int, report: ReplayReport
) -> Iterator[Chunk]:
    """Validated lines of line protocol files, in batches (invalid lines counted, skipped)."""
    for path in paths:
        body = path.read_bytes()
        result = validate(
            body,
            precision,  # type: ignore[arg-type]  # checked by the CLI's choice list
            now_ns=time.time_ns(),
            rules=TimeRules(guard=False),
        )
        report.invalid += result.rejected
        for error in result.errors:
            print(f"{path}: {error}", file=sys.stderr)
        lines = list(iter_lines(result.body))
        for i in range(0, len(lines), batch):
            yield Chunk(database, result.precision, lines[i : i + batch])


def store_chunks(store_lines: Iterable[bytes], database: str, batch: int) -> Iterator[Chunk]:
    """Lines exported from the local store (ns), in batches."""
    chunk: list[bytes] = []
    for line in store_lines:
        chunk.append(line.rstrip(b"\n"))
        if len(chunk) >= batch:
            yield Chunk(database, "ns", chunk)
            chunk = []
    if chunk:
        yield Chunk(database, "ns", chunk)


async def replay(
    config: Config,
    upstream: UpstreamConfig,
    chunks: Iterable[Chunk],
    *,
    rate: float | None,
    total: int | None = None,
) -> ReplayReport:
    """Send every chunk to the upstream; progress on stderr."""
    report = ReplayReport()
    rng = random.Random()
    started = time.monotonic()
    last_progress = 0.0
    async with aiohttp.ClientSession() as session:
        client = UpstreamClient(upstream, session, token=load_token(upstream))
        for chunk in chunks:
            if rate:  # pace: never ahead of `rate` lines per second on average
                ahead = report.sent / rate - (time.monotonic() - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)
            await _send(config, upstream, client, chunk, report, rng)
            now = time.monotonic()
            if now - last_progress >= 1.0:
                last_progress = now
                _progress(report, now - started, total)
    _progress(report, time.monotonic() - started, total, final=True)
    return report


async def _send(
    config: Config,
    upstream: UpstreamConfig,
    client: UpstreamClient,
    chunk: Chunk,
    report: ReplayReport,
    rng: random.Random,
) -> None:
    body = b"".join(line + b"\n" for line in chunk.lines)
    attempt = 0
    while True:
        attempt += 1
        response = await client.write(chunk.database, chunk.precision, body)
        decision = decide(
            response,
            attempt=attempt,
            batch_lines=len(chunk.lines),
            on_missing_database=upstream.on_missing_database,
            retry_max_delay=upstream.retry_max_delay,
            now=time.time(),
            rng=rng,
        )
        if decision.outcome == "retry":
            print(f"upstream {upstream.name}: {decision.message}; retrying", file=sys.stderr)
            await asyncio.sleep(decision.delay)
            continue
        if decision.outcome == "split":
            middle = len(chunk.lines) // 2
            for part in (chunk.lines[:middle], chunk.lines[middle:]):
                await _send(
                    config,
                    upstream,
                    client,
                    Chunk(chunk.database, chunk.precision, part),
                    report,
                    rng,
                )
            return
        if decision.outcome == "done":
            report.sent += len(chunk.lines)
            return
        rejected = set(decision.rejected_lines)
        bad = [line for n, line in enumerate(chunk.lines, 1) if not rejected or n in rejected]
        report.sent += len(chunk.lines) - len(bad) if decision.outcome == "partial" else 0
        report.deadlettered += len(bad)
        data = b"".join(line + b"\n" for line in bad)
        deadletter.append(
            config.deadletter_path,
            deadletter.refused(
                upstream.name, chunk.database, chunk.precision, response, decision, data, len(bad)
            ),
        )
        print(
            f"upstream {upstream.name} refused {len(bad)} line(s): {decision.message}",
            file=sys.stderr,
        )
        return


def _progress(report: ReplayReport, elapsed: float, total: int | None, final: bool = False) -> None:
    speed = report.sent / elapsed if elapsed > 0 else 0.0
    share = f" of {total} ({100 * report.sent / total:.0f}%)" if total else ""
    word = "replayed" if final else "replaying:"
    print(
        f"{word} {report.sent} line(s){share} sent, {report.deadlettered} dead-lettered, "
        f"{report.invalid} invalid, {speed:,.0f} lines/s",
        file=sys.stderr,
        flush=True,
    )
