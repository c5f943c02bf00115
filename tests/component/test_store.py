"""LocalStore on real files: export filters, stats, retention, read-only access, the writer lock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.buffer.record import Record, encode
from gateway.errors import StorageError
from gateway.lineprotocol import iter_lines, summarize
from gateway.store import DatabaseStats, LocalStore

NS_PER = {"ns": 1, "us": 10**3, "ms": 10**6, "s": 10**9}
DAY = 86_400 * 10**9
NOW = 1_700_000_000 * 10**9


def _record(database: str, precision: str, body: bytes) -> Record:
    lines = list(iter_lines(body))
    times = [summarize(line).timestamp * NS_PER[precision] for line in lines]
    return Record(database, precision, NOW, "tok", len(lines), min(times), max(times), body)


@pytest.fixture(name="store_dir")
def fixture_store_dir(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture(name="store")
async def fixture_store(store_dir: Path) -> AsyncIterator[LocalStore]:
    store = LocalStore(store_dir, retention_ns=None)
    store.open()
    yield store
    await store.close()


def _export(store: LocalStore, database: str = "db", **kw: object) -> list[bytes]:
    return list(store.export(database, **kw))  # type: ignore[arg-type]  # test passthrough


async def test_export_returns_lines_in_append_order(store: LocalStore) -> None:
    """Exported lines come back one by one, each ending in a newline, in append order."""
    await store.append(_record("db", "ns", b"cpu v=1 100\ncpu v=2 50\n"))
    await store.append(_record("db", "ns", b"cpu v=3 10\n"))
    assert [b"cpu v=1 100\n", b"cpu v=2 50\n", b"cpu v=3 10\n"] == _export(store)


@pytest.mark.parametrize("precision", ["s", "ms", "us"])
async def test_export_converts_timestamps_to_ns(store: LocalStore, precision: str) -> None:
    """Records stored in s, ms or us are exported with ns timestamps."""
    await store.append(_record("db", precision, b"cpu v=1 1700000000\n"))
    assert [f"cpu v=1 {1_700_000_000 * NS_PER[precision]}\n".encode()] == _export(store)


async def test_export_filters_by_measurement(store: LocalStore) -> None:
    """Only lines of the named measurement are exported."""
    await store.append(_record("db", "ns", b"cpu v=1 1\nmem v=2 2\ncpu,host=a v=3 3\n"))
    assert [b"cpu v=1 1\n", b"cpu,host=a v=3 3\n"] == _export(store, measurement="cpu")


async def test_export_measurement_filter_uses_the_unescaped_name(store: LocalStore) -> None:
    """A measurement written with escapes matches its plain name."""
    await store.append(_record("db", "ns", b"my\\ cpu,host=a v=1 1\nmy v=2 2\n"))
    assert [b"my\\ cpu,host=a v=1 1\n"] == _export(store, measurement="my cpu")


async def test_export_keeps_a_newline_inside_a_string_field(store: LocalStore) -> None:
    """A string field holding a newline stays one exported line."""
    await store.append(_record("db", "s", b'log msg="a\nb" 5\n'))
    assert [b'log msg="a\nb" 5000000000\n'] == _export(store)


async def test_export_start_is_inclusive(store: LocalStore) -> None:
    """A point exactly at start is exported; one before it is not."""
    await store.append(_record("db", "ns", b"cpu v=1 99\ncpu v=2 100\ncpu v=3 101\n"))
    assert [b"cpu v=2 100\n", b"cpu v=3 101\n"] == _export(store, start_ns=100)


async def test_export_end_is_exclusive(store: LocalStore) -> None:
    """A point exactly at end is not exported."""
    await store.append(_record("db", "ns", b"cpu v=1 99\ncpu v=2 100\ncpu v=3 101\n"))
    assert [b"cpu v=1 99\n"] == _export(store, end_ns=100)


async def test_export_filters_by_time_after_ns_conversion(store: LocalStore) -> None:
    """Time bounds apply to the ns timestamps of records stored in seconds."""
    await store.append(_record("db", "s", b"cpu v=1 10\ncpu v=2 20\ncpu v=3 30\n"))
    exported = _export(store, start_ns=20 * 10**9, end_ns=30 * 10**9)
    assert [b"cpu v=2 20000000000\n"] == exported


async def test_export_of_an_unknown_database_is_empty(store: LocalStore) -> None:
    """Exporting a database the store has never seen yields nothing."""
    await store.append(_record("db", "ns", b"cpu v=1 1\n"))
    assert [] == _export(store, "other")


async def test_databases_are_kept_apart(store: LocalStore) -> None:
    """Each database exports only its own lines."""
    await store.append(_record("a", "ns", b"cpu v=1 1\n"))
    await store.append(_record("b", "ns", b"cpu v=2 2\n"))
    assert ([b"cpu v=1 1\n"], [b"cpu v=2 2\n"]) == (_export(store, "a"), _export(store, "b"))


async def test_stats_are_exact_for_known_data(store: LocalStore) -> None:
    """points, series, measurements, first/last and bytes on disk match the data written."""
    first = _record("telegraf", "ns", b"cpu,host=a usage=1 1000\ncpu,host=b usage=2 2000\n")
    second = _record("telegraf", "s", b"mem,host=a used=3i 5\ncpu,host=a usage=4 6\n")
    await store.append(first)
    await store.append(second)
    expected = DatabaseStats(
        database="telegraf",
        points=4,
        series=3,
        measurements=2,
        first_ns=1000,
        last_ns=6 * 10**9,
        bytes_on_disk=len(encode(first)) + len(encode(second)),
    )
    assert [expected] == store.stats()


async def test_slash_in_a_database_name_is_encoded_on_disk(
    store: LocalStore, store_dir: Path
) -> None:
    """telegraf/autogen lives in telegraf%2Fautogen, whose name file holds the real name."""
    await store.append(_record("telegraf/autogen", "ns", b"cpu v=1 1\n"))
    assert "telegraf/autogen" == (store_dir / "telegraf%2Fautogen" / "database").read_text()
    assert ["telegraf/autogen"] == store.databases()


async def test_reopened_store_finds_its_databases(store_dir: Path) -> None:
    """A store opened again lists and exports what an earlier run wrote."""
    store = LocalStore(store_dir, retention_ns=None)
    store.open()
    await store.append(_record("x/y", "ns", b"cpu v=1 1\n"))
    await store.close()
    again = LocalStore(store_dir, retention_ns=None)
    again.open()
    found = (again.databases(), _export(again, "x/y"))
    await again.close()
    assert (["x/y"], [b"cpu v=1 1\n"]) == found


async def test_reopen_reports_a_torn_tail_per_database(store_dir: Path) -> None:
    """Recovery of each database's log is reported under its name."""
    store = LocalStore(store_dir, retention_ns=None)
    store.open()
    await store.append(_record("db", "ns", b"cpu v=1 1\n"))
    await store.close()
    with next((store_dir / "db").glob("*.seg")).open("ab") as f:
        f.write(b"\xc1torn")
    again = LocalStore(store_dir, retention_ns=None)
    again.open()
    report = again.recovery["db"]
    await again.close()
    assert (1, 5) == (report.torn_tails, report.torn_bytes)


async def _fill(store: LocalStore, database: str, days_ago: list[int]) -> list[Record]:
    records = []
    for age in days_ago:
        stamp = NOW - age * DAY
        body = f'cpu v=1,pad="{"x" * 150}" {stamp}\n'.encode()
        records.append(Record(database, "ns", NOW, "tok", 1, stamp, stamp, body))
        await store.append(records[-1])
    return records


async def test_retention_deletes_old_closed_segments(store_dir: Path) -> None:
    """Closed segments whose points are all older than the retention are deleted."""
    store = LocalStore(store_dir, retention_ns=30 * DAY, clock=lambda: NOW, segment_bytes=200)
    store.open()
    old, older, _recent = await _fill(store, "db", [40, 35, 1])  # one segment each
    freed = store.enforce_retention()
    left = _export(store)
    await store.close()
    assert len(encode(old)) + len(encode(older)) == freed
    assert [NOW - DAY] == [int(line.rsplit(b" ", 1)[1]) for line in left]


async def test_retention_keeps_a_segment_with_any_recent_point(store_dir: Path) -> None:
    """A closed segment holding one point inside the retention is kept whole."""
    store = LocalStore(store_dir, retention_ns=30 * DAY, clock=lambda: NOW, segment_bytes=500)
    store.open()
    await _fill(store, "db", [40, 1, 40])
    before = sorted((store_dir / "db").glob("*.seg"))
    freed = store.enforce_retention()
    after = sorted((store_dir / "db").glob("*.seg"))
    await store.close()
    assert (0, before) == (freed, after)


async def test_retention_spares_the_active_segment(store_dir: Path) -> None:
    """Old points in the segment still being written are not deleted."""
    store = LocalStore(store_dir, retention_ns=30 * DAY, clock=lambda: NOW)
    store.open()
    await _fill(store, "db", [40])
    freed = store.enforce_retention()
    count = len(_export(store))
    await store.close()
    assert (0, 1) == (freed, count)


async def test_read_only_store_sees_data_of_a_running_writer(
    store: LocalStore, store_dir: Path
) -> None:
    """A read-only store (the CLI) exports what the open writer has appended."""
    await store.append(_record("db", "ns", b"cpu v=1 1\n"))
    reader = LocalStore(store_dir, retention_ns=None, read_only=True)
    reader.open()
    await store.append(_record("db", "ns", b"cpu v=2 2\n"))
    assert [b"cpu v=1 1\n", b"cpu v=2 2\n"] == _export(reader)


async def test_read_only_store_truncates_nothing(store: LocalStore, store_dir: Path) -> None:
    """Opening read-only leaves a torn-looking tail (a write in progress) untouched."""
    await store.append(_record("db", "ns", b"cpu v=1 1\n"))
    segment = next((store_dir / "db").glob("*.seg"))
    with segment.open("ab") as f:
        f.write(b"\xc1partial")
    size = segment.stat().st_size
    reader = LocalStore(store_dir, retention_ns=None, read_only=True)
    reader.open()
    exported = _export(reader)
    assert ([b"cpu v=1 1\n"], size) == (exported, segment.stat().st_size)


async def test_read_only_store_of_a_missing_directory_is_empty(tmp_path: Path) -> None:
    """A read-only store where nothing was ever written has no databases and creates nothing."""
    reader = LocalStore(tmp_path / "nothing", retention_ns=None, read_only=True)
    reader.open()
    assert ([], [], False) == (reader.databases(), reader.stats(), (tmp_path / "nothing").exists())


async def test_second_writer_is_refused(store: LocalStore, store_dir: Path) -> None:
    """A second writer on the same store fails with a StorageError naming the lock."""
    second = LocalStore(store_dir, retention_ns=None)
    with pytest.raises(StorageError, match="in use by another"):
        second.open()


async def test_lock_is_released_on_close(store_dir: Path) -> None:
    """After the writer closes, another writer can open the store."""
    first = LocalStore(store_dir, retention_ns=None)
    first.open()
    await first.close()
    second = LocalStore(store_dir, retention_ns=None)
    second.open()
    await second.close()
    assert (store_dir / "LOCK").exists()


async def test_read_only_store_refuses_appends(store_dir: Path) -> None:
    """A read-only store cannot append."""
    reader = LocalStore(store_dir, retention_ns=None, read_only=True)
    reader.open()
    with pytest.raises(StorageError):
        await reader.append(_record("db", "ns", b"cpu v=1 1\n"))


async def test_a_damaged_closed_segment_costs_only_its_rest(store_dir: Path) -> None:
    """A record failing its checksum in a closed segment: reading notes it in `damage` and
    goes on with the next segment; nothing else is lost."""
    store = LocalStore(store_dir, retention_ns=None, fsync="never", segment_bytes=4096)
    store.open()
    for i in range(100):
        await store.append(_record("db", "ns", b"m,i=%d v=%di 1700000000000000000\n" % (i, i)))
    await store.close()
    segments = sorted(store_dir.rglob("*.seg"))
    assert len(segments) >= 2
    data = bytearray(segments[0].read_bytes())
    data[len(data) // 2] ^= 0xFF
    segments[0].write_bytes(bytes(data))

    reader = LocalStore(store_dir, retention_ns=None, read_only=True)
    reader.open()
    lines = [r.payload for r in reader.records("db")]
    assert 0 < len(lines) < 100
    assert [e.segment for e in reader.damage] == [int(segments[0].stem)]
    written = [b"m,i=%d v=%di 1700000000000000000\n" % (i, i) for i in range(100)]
    assert lines == [line for line in written if line in set(lines)]  # in order, no duplicates
    assert lines[-1] == written[-1]  # the later segment was read
