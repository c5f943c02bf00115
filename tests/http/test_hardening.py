"""SPEC 10 bad input against a live gateway app: each gets a clear 4xx/5xx, then a normal write
still succeeds and the store holds exactly what was acknowledged."""

from __future__ import annotations

import asyncio
import errno
import gzip
import io
import os
import time
from collections.abc import Sequence
from typing import Any

import aiohttp
import pytest

from gateway.buffer import segmentlog
from gateway.buffer.segmentwriter import Syscalls
from gateway.store import LocalStore
from tests.fakeupstream import FakeUpstream
from tests.http.conftest import WRITER, auth, exported, state_of

T = 1_699_999_990_000_000_000  # 10 s before the fixture's clock
V2 = "/api/v2/write?bucket=mydb"
BASELINE = f"base,host=a v=1 {T}\n".encode()
HEALTHY = f"healthy,host=a v=2 {T}\n".encode()


async def baseline(client: Any) -> None:
    """Store one acknowledged line before the bad input."""
    response = await client.post(V2, data=BASELINE, headers=auth(WRITER))
    assert 204 == response.status


async def assert_healthy(client: Any) -> None:
    """A normal write succeeds and the store holds exactly the baseline plus it."""
    response = await client.post(V2, data=HEALTHY, headers=auth(WRITER))
    assert 204 == response.status
    assert BASELINE + HEALTHY == exported(client, "mydb")


async def test_one_megabyte_authorization_header(gateway: Any) -> None:
    """A 1 MB Authorization header is refused (400/431) without harm."""
    client = await gateway()
    await baseline(client)
    try:
        response = await client.post(
            V2, data=b"cpu v=1", headers={"Authorization": "Token " + "a" * 1_000_000}
        )
        status: int | None = response.status
    except aiohttp.ClientError:
        status = None  # the server may close before the client has sent it all
    assert status in (None, 400, 431)
    await assert_healthy(client)


async def test_whole_head_above_max_header_bytes(gateway: Any) -> None:
    """Many headers, each small, adding up past max_header_bytes: 431 as JSON."""
    client = await gateway()
    await baseline(client)
    headers = {**auth(WRITER), **{f"X-Pad-{i}": "p" * 10_000 for i in range(10)}}
    response = await client.post(V2, data=HEALTHY, headers=headers)
    assert 431 == response.status
    assert (
        "request head is larger than the limit of 65536 bytes" == (await response.json())["message"]
    )
    await assert_healthy(client)


async def test_raw_body_above_limit(gateway: Any) -> None:
    """A raw body above max_body_bytes: 413."""
    client = await gateway(max_body_bytes=10_000)
    await baseline(client)
    response = await client.post(V2, data=b"cpu v=1\n" * 5_000, headers=auth(WRITER))
    assert 413 == response.status
    await assert_healthy(client)


async def test_gzip_bomb(gateway: Any) -> None:
    """A 10 KB gzip body inflating to 100 MB: 413 without inflating it all."""
    client = await gateway(max_body_bytes=1_000_000)
    await baseline(client)
    bomb = gzip.compress(b"\n" * 100_000_000, compresslevel=9)
    started = time.perf_counter()
    response = await client.post(
        V2, data=bomb, headers={**auth(WRITER), "Content-Encoding": "gzip"}
    )
    elapsed = time.perf_counter() - started
    assert (413, True) == (response.status, elapsed < 2)
    await assert_healthy(client)


async def test_truncated_gzip(gateway: Any) -> None:
    """A gzip stream cut short: 400 invalid naming gzip."""
    client = await gateway()
    await baseline(client)
    data = gzip.compress(b"".join(f"cpu v={i} {T}\n".encode() for i in range(1000)))
    response = await client.post(
        V2, data=data[: len(data) // 2], headers={**auth(WRITER), "Content-Encoding": "gzip"}
    )
    body = await response.json()
    assert (400, "invalid") == (response.status, body["code"])
    assert "truncated" in body["message"]
    await assert_healthy(client)


@pytest.mark.slow
async def test_fifty_megabyte_single_line(gateway: Any) -> None:
    """A 50 MB line (within the 50 MB body limit, above the 1 MiB line limit): a line error."""
    client = await gateway()
    await baseline(client)
    line = b"m f=" + b"1" * (50_000_000 - 6) + b"i"
    response = await client.post(V2, data=io.BytesIO(line), headers=auth(WRITER))
    body = await response.json()
    assert 400 == response.status
    assert "error parsing line 1 (1-based): line too long" in body["message"]
    await assert_healthy(client)


async def test_too_many_lines(gateway: Any) -> None:
    """More lines than max_lines: 413, nothing stored."""
    client = await gateway(max_lines=1000)
    await baseline(client)
    data = b"".join(f"cpu v={i} {T}\n".encode() for i in range(1001))
    response = await client.post(V2, data=data, headers=auth(WRITER))
    assert 413 == response.status
    await assert_healthy(client)


@pytest.mark.slow
async def test_a_million_one_byte_lines(gateway: Any) -> None:
    """A million one-byte lines: 400 listing 100 errors, in bounded time, /ping answered meanwhile."""
    client = await gateway()
    await baseline(client)
    started = time.perf_counter()
    body = io.BytesIO(b"x\n" * 1_000_000)
    write = asyncio.create_task(client.post(V2, data=body, headers=auth(WRITER)))
    await asyncio.sleep(0.2)  # the body is being validated in a worker thread by now
    ping_started = time.perf_counter()
    ping = await client.get("/ping")
    ping_elapsed = time.perf_counter() - ping_started
    response = await write
    elapsed = time.perf_counter() - started
    message = (await response.json())["message"]
    assert (400, 100) == (response.status, message.count("error parsing line"))
    assert (204, True, True) == (ping.status, ping_elapsed < 1.0, elapsed < 20)
    await assert_healthy(client)


async def test_tag_repeated_100000_times(gateway: Any) -> None:
    """One tag repeated 100,000 times: a duplicate-tag line error, quickly."""
    client = await gateway()
    await baseline(client)
    line = b"m," + b"t=v," * 99_999 + b"t=v f=1 " + str(T).encode()
    started = time.perf_counter()
    response = await client.post(V2, data=line, headers=auth(WRITER))
    elapsed = time.perf_counter() - started
    body = await response.json()
    assert (400, True) == (response.status, elapsed < 1)
    assert "error parsing line 1 (1-based): " in body["message"]
    await assert_healthy(client)


async def test_nul_bytes(gateway: Any) -> None:
    """A NUL in a measurement name (InfluxDB 3 refuses it): 400 naming it."""
    client = await gateway()
    await baseline(client)
    response = await client.post(V2, data=b"c\x00pu v=1\n", headers=auth(WRITER))
    body = await response.json()
    assert (400, True) == (response.status, "NUL character" in body["message"])
    await assert_healthy(client)


async def test_invalid_utf8(gateway: Any) -> None:
    """Bytes that are not UTF-8: 400, nothing stored."""
    client = await gateway()
    await baseline(client)
    response = await client.post(
        V2, data=f"cpu v=1 {T}\ncpu,h=\xff\xfe v=2 {T}\n".encode("latin-1"), headers=auth(WRITER)
    )
    assert 400 == response.status
    await assert_healthy(client)


async def test_concurrent_requests_above_limit(gateway: Any) -> None:
    """Beyond max_concurrent_requests: 503 with Retry-After; the held request completes."""
    client = await gateway(max_concurrent_requests=1)
    await baseline(client)
    state = state_of(client)
    release = asyncio.Event()
    original = state.destinations.append

    async def held(record: Any) -> None:
        await release.wait()
        await original(record)

    state.destinations.append = held  # type: ignore[method-assign]
    first = asyncio.create_task(client.post(V2, data=HEALTHY, headers=auth(WRITER)))
    while state.in_flight == 0:
        await asyncio.sleep(0.001)
    refused = await client.post(V2, data=HEALTHY, headers=auth(WRITER))
    release.set()
    assert (503, "1", 204) == (
        refused.status,
        refused.headers.get("Retry-After"),
        (await first).status,
    )
    state.destinations.append = original  # type: ignore[method-assign]
    assert BASELINE + HEALTHY == exported(client, "mydb")


# -- disk full ------------------------------------------------------------------------------------


class FillingDisk:
    """Real system calls, except that writes fail with ENOSPC (half written) while `full`."""

    def __init__(self) -> None:
        self.full = False

    def pwritev(self, fd: int, buffers: Sequence[bytes | memoryview], offset: int) -> int:
        if self.full:  # a disk filling up mid-write leaves part of the record behind
            data = b"".join(bytes(b) for b in buffers)
            os.pwrite(fd, data[: len(data) // 2], offset)
            raise OSError(errno.ENOSPC, "No space left on device")
        return os.pwritev(fd, buffers, offset)

    def syscalls(self) -> Syscalls:
        """The injectable boundary, as SegmentLog takes it."""
        return Syscalls(pwritev=self.pwritev)


@pytest.fixture(name="disk")
def fixture_disk(monkeypatch: pytest.MonkeyPatch) -> FillingDisk:
    """Every segment log the app opens writes through this disk."""
    disk = FillingDisk()
    monkeypatch.setattr(segmentlog, "Syscalls", disk.syscalls)
    return disk


async def test_disk_full_answers_503_with_retry_after(gateway: Any, disk: FillingDisk) -> None:
    """ENOSPC while appending: 503 unavailable with Retry-After."""
    client = await gateway()
    await baseline(client)
    disk.full = True
    response = await client.post(V2, data=HEALTHY, headers=auth(WRITER))
    body = await response.json()
    assert (503, "unavailable") == (response.status, body["code"])
    assert "No space left on device" in body["message"]
    assert int(response.headers["Retry-After"]) >= 1


async def test_disk_full_recovers_by_itself(gateway: Any, disk: FillingDisk) -> None:
    """Once space returns, the next write succeeds without any intervention."""
    client = await gateway()
    await baseline(client)
    disk.full = True
    refused = [(await client.post(V2, data=HEALTHY, headers=auth(WRITER))).status for _ in range(3)]
    disk.full = False
    assert [503, 503, 503] == refused
    await assert_healthy(client)


async def test_disk_full_leaves_no_corrupt_record(
    gateway: Any, disk: FillingDisk, make_config: Any
) -> None:
    """After ENOSPC mid-record, the store on disk reads back exactly the acknowledged lines."""
    client = await gateway()
    await baseline(client)
    disk.full = True
    await client.post(V2, data=HEALTHY * 100, headers=auth(WRITER))
    disk.full = False
    await assert_healthy(client)
    await client.close()  # closes the app and its store
    store = LocalStore(make_config().store_path, retention_ns=None, read_only=True)
    store.open()
    assert BASELINE + HEALTHY == b"".join(store.export("mydb"))


async def test_disk_full_in_the_buffer_delivers_exactly_the_acknowledged(
    gateway: Any, disk: FillingDisk
) -> None:
    """With an upstream (the write-ahead buffer path): ENOSPC gives 503, and once space returns
    the upstream receives exactly the acknowledged lines, none torn or doubled."""
    async with FakeUpstream() as fake:
        client = await gateway(
            f'[[upstreams]]\nname = "up"\nurl = "{fake.url}"\nflush_interval = "50ms"\n'
        )
        await baseline(client)
        disk.full = True
        refused = await client.post(V2, data=HEALTHY * 100, headers=auth(WRITER))
        disk.full = False
        accepted = await client.post(V2, data=HEALTHY, headers=auth(WRITER))
        lines = await fake.wait_for_lines(2, timeout=5)
        await asyncio.sleep(0.2)  # nothing more arrives
        assert (503, 204) == (refused.status, accepted.status)
        assert [BASELINE.strip(), HEALTHY.strip()] == fake.lines() == lines
