"""The local store as a consumer of the write-ahead log (gateway/forward/storesink.py)."""

from __future__ import annotations

import gzip
from pathlib import Path

from prometheus_client import CollectorRegistry

from gateway.buffer.record import Record
from gateway.buffer.wal import Consumer, WriteAheadLog
from gateway.forward.storesink import STORE_CONSUMER, StoreConsumer
from gateway.observability import Metrics
from gateway.routing import Router
from gateway.store import LocalStore

T = 1_700_000_000 * 10**9


async def test_the_store_copies_records_read_back_from_disk_without_inflating_them(
    tmp_path: Path, inflations: list[int]
) -> None:
    """Records buffered as gzip streams, copied into the store after a restart (read from the
    files): the store frames each stream again as it is, inflating none; its lines are all
    there when exported (inflated then, by the reader)."""
    bodies = [b"cpu,host=h%d v=%di %d\n" % (k, i, T + i) for k in range(3) for i in range(400)]
    payloads = [b"".join(bodies[k * 400 : (k + 1) * 400]) for k in range(3)]
    wal = WriteAheadLog(
        tmp_path / "buffer", [Consumer(STORE_CONSUMER)], max_bytes=2**30, fsync="never"
    )
    wal.open()
    for payload in payloads:
        stream = gzip.compress(payload)
        await wal.append(Record("db", "ns", T, "tok", 400, T, T, payload, stored_gzip=stream))
    await wal.close()

    inflations.clear()  # from here on
    wal = WriteAheadLog(
        tmp_path / "buffer", [Consumer(STORE_CONSUMER)], max_bytes=2**30, fsync="never"
    )
    wal.open()
    store = LocalStore(tmp_path / "store", retention_ns=None, fsync="never")
    store.open()
    consumer = StoreConsumer(
        wal=wal, store=store, router=Router([], [], ["*"]), metrics=Metrics(CollectorRegistry())
    )
    assert await consumer._copy_window()
    assert 0 == wal.status(STORE_CONSUMER).pending_records
    assert [] == inflations
    assert payloads == [r.payload for r in store.records("db")]
    assert 3 == len(inflations)  # by the export's reads, not by the copy
    await wal.close()
    await store.close()
