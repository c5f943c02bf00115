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

async def main(directory: str) -> None:
    log = SegmentLog(Path(directory), segment_bytes=64 * 1024)
    log.open()
    numbers = itertools.count()

    async def writer() -> None:
        while True:
            n = next(numbers)
            payload = f"m,n={n} v=1i {n}\n".encode() + b"#" * random.randrange(8_000)
            position = await log.append([Record("db", "ns", 0, "tok", 1, n, n, payload)])
            sys.stdout.write(f"{n} {position.segment} {position.offset}\n")
            sys.stdout.flush()

    print("ready", flush=True)
    await asyncio.gather(*(writer() for _ in range(8)))

asyncio.run(main(sys.argv[1]))
"""


def _collect(stream: object, lines: list[str]) -> None:
    for line in stream:  # type: ignore[attr-defined]  # a text pipe
        lines.append(line)


@pytest.mark.slow
async def test_every_acknowledged_append_survives_kill_9(tmp_path: Path) -> None:
    """After SIGKILL mid-append, reopening finds every record whose append had returned."""
    directory = tmp_path / "wal"
    repo = Path(__file__).resolve().parents[2]
    process = subprocess.Popen(
        [sys.executable, "-c", APPENDER, str(directory)],
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
    acknowledged = {int(line.split()[0]) for line in lines if line.endswith("\n") and " " in line}

    log = SegmentLog(directory)
    log.open()
    present = {record.min_time_ns for _, record in log.read()}
    await log.close()

    assert len(acknowledged) > 50, "the appender did not get going"
    assert set() == acknowledged - present
