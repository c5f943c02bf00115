"""kill -9 of a process appending to a SegmentLog loses nothing it acknowledged."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from gateway.buffer.segmentlog import SegmentLog

APPENDER = r"""
import asyncio, itertools, random, sys
from pathlib import Path
from gateway.buffer.record import Record
from gateway.buffer.segmentlog import SegmentLog

async def main(directory: str, recycle: bool) -> None:
    log = SegmentLog(Path(directory), segment_bytes=64 * 1024, recycle=recycle)
    log.open()
    numbers = itertools.count()

    async def consumer() -> None:  # with recycle: consumed segments' files get reused
        while True:
            await asyncio.sleep(0.02)
            active = log.active_segment
            sys.stdout.write(f"consumed-before {active}\n")  # said before it is done
            sys.stdout.flush()
            log.delete_segments_before(active)

    async def writer() -> None:
        while True:
            n = next(numbers)
            payload = f"m,n={n} v=1i {n}\n".encode() + b"#" * random.randrange(8_000)
            position = await log.append([Record("db", "ns", 0, "tok", 1, n, n, payload)])
            sys.stdout.write(f"{n} {position.segment} {position.offset}\n")
            sys.stdout.flush()

    print("ready", flush=True)
    consumers = [consumer()] if recycle else []
    await asyncio.gather(*(writer() for _ in range(8)), *consumers)

asyncio.run(main(sys.argv[1], sys.argv[2] == "recycle"))
"""


def _collect(stream: object, lines: list[str]) -> None:
    for line in stream:  # type: ignore[attr-defined]  # a text pipe
        lines.append(line)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["append", "recycle"])
async def test_every_acknowledged_append_survives_kill_9(tmp_path: Path, mode: str) -> None:
    """After SIGKILL mid-append, reopening finds every record whose append had returned and
    was not consumed. With consumed segments' files reused, nothing of their old records comes
    back, and the end of the records is found without a torn tail unless a write was cut."""
    directory = tmp_path / "wal"
    repo = Path(__file__).resolve().parents[2]
    process = subprocess.Popen(
        [sys.executable, "-c", APPENDER, str(directory), mode],
        stdout=subprocess.PIPE,
        text=True,
        cwd=repo,
        env={**os.environ, "PYTHONPATH": str(repo)},
    )
    lines: list[str] = []
    reader = threading.Thread(target=_collect, args=(process.stdout, lines))
    reader.start()
    try:
        deadline = time.monotonic() + 10
        while "ready\n" not in lines and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(1.5)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        reader.join(timeout=10)
        if process.stdout is not None:
            process.stdout.close()
    complete = [line.split() for line in lines if line.endswith("\n") and " " in line]
    consumed_before = max((int(w[1]) for w in complete if w[0] == "consumed-before"), default=0)
    segment_of = {int(w[0]): int(w[1]) for w in complete if w[0].isdigit()}
    acknowledged = {n for n, segment in segment_of.items() if segment >= consumed_before}

    log = SegmentLog(directory, recycle=mode == "recycle")
    report = log.open()
    read = [record.min_time_ns for _, record in log.read()]
    await log.close()

    assert len(segment_of) > 50, "the appender did not get going"
    assert set() == acknowledged - set(read)
    assert len(read) == len(set(read)), "a record read twice"
    assert report.torn_tails <= 1
    if mode == "append":  # in a reused file a cut write takes the old frames after it along
        assert report.torn_bytes <= 9 * 8_100, "more cut off than the 8 appends in flight"
    if mode == "recycle":
        assert consumed_before > 2, "no segment was consumed (and reused)"
