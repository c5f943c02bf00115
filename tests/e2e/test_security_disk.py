"""Disk full for real: the gateway's data dir on a 2 MiB tmpfs that a filler file fills up.

Mounting needs root (CAP_SYS_ADMIN); where that is refused the test is skipped with the reason,
and tests/http/test_hardening.py covers the same path with ENOSPC injected at the storage
boundary.
"""

from __future__ import annotations

import errno
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import RunningGateway, cli, running, start_gateway

pytestmark = pytest.mark.slow

T = time.time_ns() // 10**9 * 10**9


@pytest.fixture(name="small_disk")
def fixture_small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs mounted for this test."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(mount_point)],
        capture_output=True,
        timeout=30,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True, timeout=30)


@pytest.fixture(name="gateway")
def fixture_gateway(small_disk: Path) -> Iterator[RunningGateway]:
    """A gateway whose data dir is on the small disk."""
    with running(small_disk) as gateway:
        yield gateway


def post(gateway: RunningGateway, database: str, body: bytes) -> int:
    """A v2 write; its status."""
    return gateway.write(f"/api/v2/write?bucket={database}", body)


def fill(path: Path) -> None:
    """Write zeros to `path` until the file system is full."""
    with path.open("wb") as file:
        try:
            while True:
                file.write(b"\0" * 65536)
                file.flush()
        except OSError as e:
            assert errno.ENOSPC == e.errno


def line(value: int) -> bytes:
    """One valid line."""
    return f"cpu,host=a v={value} {T}\n".encode()


def test_full_disk_refuses_with_503_then_recovers_by_itself(
    gateway: RunningGateway, small_disk: Path
) -> None:
    """Disk full: 503 for an existing and a new database; space back: 204, no restart; the
    store holds exactly the acknowledged lines (the refused ones left no partial record)."""
    assert 204 == post(gateway, "mydb", line(1))
    filler = small_disk / "filler"
    fill(filler)
    refused = [post(gateway, "mydb", line(2) * 2000), post(gateway, "newdb", line(3))]
    filler.unlink()
    accepted = [post(gateway, "mydb", line(4)), post(gateway, "newdb", line(5))]
    assert 0 == gateway.stop()
    assert ([503, 503], [204, 204]) == (refused, accepted)
    data = ["--data-dir", str(gateway.data_dir)]
    assert line(1) + line(4) == cli("store", "export", "--database", "mydb", *data).stdout
    assert line(5) == cli("store", "export", "--database", "newdb", *data).stdout
    restarted = start_gateway(small_disk)  # opening the store would truncate a torn tail
    assert 0 == restarted.stop()
    assert "torn tail" not in restarted.stderr()
