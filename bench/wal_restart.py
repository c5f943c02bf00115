"""How long reopening the write-ahead buffer takes with a lot pending (SPEC 9: 1 GiB in <= 2 s).

    python bench/wal_restart.py [--gib 1] [--gzip] [--dir DIR]

Fills a buffer with ~1 MB records (fsync off: filling is not what is measured), then times what
a restart does before /ready: opening the log (recovery scans only the last segment) and
computing the pending status of a consumer from the segment summaries. With --gzip the records
are held as gzip streams (Telegraf-like 5,000-line batches, as a gzip body or a plain body for a
gzip upstream is logged), ~3.6x more line protocol per GiB (read back without inflating it).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `python bench/wal_restart.py`

from bench.payload import batch_body
from gateway.buffer.record import Record
from gateway.buffer.wal import Consumer, WriteAheadLog
from gateway.compression import CODEC

LINE = b"cpu,host=h1,cpu=cpu0 usage_user=1.5,usage_idle=96.25 1700000000000000000\n"


async def fill(directory: Path, gib: float, gzip: bool) -> None:
    wal = WriteAheadLog(directory, [Consumer("up")], max_bytes=2**40, fsync="never")
    wal.open()
    if gzip:
        payload = batch_body(5000)
        stored: bytes | None = CODEC.compress(payload)
    else:
        payload, stored = LINE * (2**20 // len(LINE)), None
    lines = payload.count(b"\n")
    record = Record("db", "ns", 1, "bench", lines, 1, 1, payload, stored_gzip=stored)
    for _ in range(int(gib * 2**30 / len(payload if stored is None else stored))):
        await wal.append(record)
    await wal.close()


async def reopen(directory: Path) -> None:
    started = time.perf_counter()
    wal = WriteAheadLog(directory, [Consumer("up")], max_bytes=2**40)
    wal.open()
    opened = time.perf_counter()
    status = await asyncio.to_thread(wal.status, "up")
    done = time.perf_counter()
    print(
        f"open {opened - started:.3f} s, pending status {done - opened:.3f} s: "
        f"{status.pending_bytes / 2**30:.2f} GiB, {status.pending_records} records pending"
    )
    await wal.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--gzip", action="store_true", help="records held as gzip streams")
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        directory = Path(tmp)
        asyncio.run(fill(directory, args.gib, args.gzip))
        asyncio.run(reopen(directory))


if __name__ == "__main__":
    main()
