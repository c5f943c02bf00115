"""Reading the local store: export (filtered lines in ns) and per-database statistics.

Pure over an iterable of records, so the same code serves a writer and a read-only CLI. Whole
records are skipped by their min/max time before a line is touched; lines are only parsed
(`summarize`) when a measurement filter or the statistics need them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway import lineprotocol
from gateway.buffer.record import Record

if TYPE_CHECKING:
    from gateway.lineprotocol import Precision

_PRECISIONS: dict[str, Precision] = {
    "ns": "ns",
    "us": "us",
    "ms": "ms",
    "s": "s",
    "m": "m",
    "h": "h",
}


@dataclass(frozen=True)
class DatabaseStats:
    """What `influx-gateway store stats` prints for one database."""

    database: str
    points: int
    series: int
    measurements: int
    first_ns: int | None
    last_ns: int | None
    bytes_on_disk: int


def export_lines(
    records: Iterable[Record],
    *,
    measurement: str | None = None,
    start_ns: int | None = None,
    end_ns: int | None = None,
) -> Iterator[bytes]:
    """Lines (each ending in b"\\n", ns timestamps) with start <= time < end, in record order."""
    wanted = None if measurement is None else measurement.encode()
    for record in records:
        if start_ns is not None and record.max_time_ns < start_ns:
            continue
        if end_ns is not None and record.min_time_ns >= end_ns:
            continue
        payload = record.payload
        if record.precision != "ns":
            payload = lineprotocol.rescale(payload, _precision(record.precision), "ns")
        inside = (start_ns is None or record.min_time_ns >= start_ns) and (
            end_ns is None or record.max_time_ns < end_ns
        )
        for line in lineprotocol.iter_lines(payload):
            if not inside:
                timestamp = int(line[line.rindex(b" ") + 1 :])
                if (start_ns is not None and timestamp < start_ns) or (
                    end_ns is not None and timestamp >= end_ns
                ):
                    continue
            if wanted is not None and lineprotocol.summarize(line).measurement != wanted:
                continue
            yield line + b"\n"


def database_stats(database: str, records: Iterable[Record], bytes_on_disk: int) -> DatabaseStats:
    """Points, distinct series and measurements, and the time range of a database's records."""
    points = 0
    first: int | None = None
    last: int | None = None
    series: set[bytes] = set()
    measurements: set[bytes] = set()
    for record in records:
        if record.lines == 0:
            continue
        points += record.lines
        first = record.min_time_ns if first is None else min(first, record.min_time_ns)
        last = record.max_time_ns if last is None else max(last, record.max_time_ns)
        for line in lineprotocol.iter_lines(record.payload):
            summary = lineprotocol.summarize(line)
            series.add(summary.series_key)
            measurements.add(summary.measurement)
    return DatabaseStats(
        database=database,
        points=points,
        series=len(series),
        measurements=len(measurements),
        first_ns=first,
        last_ns=last,
        bytes_on_disk=bytes_on_disk,
    )


def _precision(name: str) -> Precision:
    try:
        return _PRECISIONS[name]
    except KeyError:
        raise ValueError(f"record with unknown precision {name!r}") from None
