"""The gateway forwarding to a scripted fake upstream: every row of the SPEC 6 status table,
fan-out, overflow, restart from cursors."""

from __future__ import annotations

import asyncio
import gzip
import itertools
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from gateway.app import create_app
from gateway.buffer.record import Record
from gateway.buffer.wal import Consumer, WriteAheadLog
from gateway.config import Config, load_config
from gateway.forward import deadletter
from gateway.forward.forwarder import AS_SENT_MIN_BYTES
from gateway.http.state import STATE, GatewayState
from gateway.http.write import OFFLOAD_BYTES
from tests.fakeupstream import FakeUpstream, Step
from tests.http.conftest import WRITER, auth, make_policy

T = time.time_ns() // 10**9 * 10**9
PARTIAL_BODY = json.dumps(
    {
        "code": "invalid",
        "line": 2,
        "message": "partial write of line protocol occurred:\n  errors encountered on line(s):\n"
        "  error parsing line 2 (1-based): bad",
    }
).encode()


def lines(n: int, start: int = 0, measurement: str = "cpu") -> bytes:
    """n distinct lines of line protocol."""
    return b"".join(
        b"%s,i=%d v=%di %d\n" % (measurement.encode(), i, i, T) for i in range(start, start + n)
    )


def config_for(tmp_path: Path, upstreams: list[tuple[str, str, str]], extra: str = "") -> Config:
    """A config with fast retries and the given (name, url, options) upstreams."""
    text = f'data_dir = "{tmp_path / "data"}"\n{extra}\n'
    if "[server]" not in extra:
        text += '[server]\nshutdown_timeout = "100ms"\n'
    for name, url, options in upstreams:
        text += (
            f'[[upstreams]]\nname = "{name}"\nurl = "{url}"\ntoken = "up-secret"\n'
            f'flush_interval = "50ms"\nretry_max_delay = "200ms"\ngzip = false\n{options}\n'
        )
    path = tmp_path / "gw.toml"
    path.write_text(text)
    return load_config(path, env={})


class Gateway:
    """A gateway app under test plus helpers."""

    def __init__(self, client: TestClient[Any, Any]) -> None:
        self.client = client

    @property
    def state(self) -> GatewayState:
        return self.client.server.app[STATE]

    async def write(self, body: bytes, bucket: str = "mydb") -> int:
        response = await self.client.post(
            f"/api/v2/write?bucket={bucket}", data=body, headers=auth(WRITER)
        )
        return response.status

    def metric(self, name: str, **labels: str) -> float:
        value = self.state.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


@pytest.fixture(name="start")
async def fixture_start(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """Start gateways for configs; all are closed at the end."""
    clients: list[TestClient[Any, Any]] = []

    async def start(config: Config) -> Gateway:
        app = create_app(config, registry=CollectorRegistry(), policy=make_policy())
        client: TestClient[Any, Any] = TestClient(TestServer(app))
        await client.start_server()
        clients.append(client)
        return Gateway(client)

    yield start
    for client in clients:
        await client.close()


@pytest.fixture(name="fake")
async def fixture_fake() -> AsyncIterator[FakeUpstream]:
    """A fake upstream answering 204 unless scripted otherwise."""
    async with FakeUpstream() as fake:
        yield fake


async def test_2xx_delivers_and_advances(start: Any, fake: FakeUpstream, tmp_path: Path) -> None:
    """204 from the upstream: every line arrives once, with the upstream's credentials."""
    gw = await start(config_for(tmp_path, [("up", fake.url, "")]))
    assert 204 == await gw.write(lines(10))
    assert lines(10).splitlines() == await fake.wait_for_lines(10, timeout=5)
    request = fake.requests[0]
    assert "/api/v2/write" == request.path
    assert "mydb" == request.query["bucket"]
    assert "ns" == request.query["precision"]
    assert "Token up-secret" == request.headers["Authorization"]
    await asyncio.sleep(0.1)
    assert 10.0 == gw.metric("gateway_upstream_lines_total", upstream="up", result="sent")


async def test_batches_never_mix_databases(start: Any, fake: FakeUpstream, tmp_path: Path) -> None:
    """Writes to two databases arrive in separate requests, each in order."""
    gw = await start(config_for(tmp_path, [("up", fake.url, "")]))
    for i in range(3):
        assert 204 == await gw.write(lines(2, start=2 * i), bucket="mydb")
        assert 204 == await gw.write(lines(2, start=2 * i, measurement="mem"), bucket="edge_a")
    await fake.wait_for_lines(12, timeout=5)
    for request in fake.requests:
        expected = b"cpu" if request.query["bucket"] == "mydb" else b"mem"
        assert all(line.startswith(expected) for line in request.lines())
    mydb = [line for r in fake.requests if r.query["bucket"] == "mydb" for line in r.lines()]
    assert lines(6).splitlines() == mydb


async def test_partial_write_dead_letters_only_the_rejected_lines(
    start: Any, fake: FakeUpstream, tmp_path: Path
) -> None:
    """400 with a partial-write body: done; line 2 goes to the dead-letter file with the message."""
    fake.script(Step(400, PARTIAL_BODY))
    gw = await start(config_for(tmp_path, [("up", fake.url, "")]))
    assert 204 == await gw.write(lines(3))
    await fake.wait_for_lines(3, timeout=5)
    letters = await wait_for_letters(tmp_path, "up", 1)
    assert lines(1, start=1).decode() == letters[0].data
    assert "partial write" in letters[0].message
    await wait_for_metric(
        gw, 1.0, "gateway_upstream_lines_total", upstream="up", result="deadletter"
    )
    assert 2.0 == gw.metric("gateway_upstream_lines_total", upstream="up", result="sent")


async def test_poison_batch_does_not_block_the_queue(
    start: Any, fake: FakeUpstream, tmp_path: Path
) -> None:
    """A plain 400: the batch is dead-lettered and the next write still arrives."""
    fake.script(Step(400, b'{"code":"invalid","message":"unable to parse"}'))
    gw = await start(config_for(tmp_path, [("up", fake.url, "")]))
    assert 204 == await gw.write(lines(2))
    letters = await wait_for_letters(tmp_path, "up", 1)
    assert "unable to parse" in letters[0].message
    assert 400 == letters[0].status
    assert 204 == await gw.write(lines(2, start=5))
    received = await fake.wait_for_lines(4, timeout=5)
    assert lines(2, start=5).splitlines() == received[2:]


@pytest.mark.parametrize("status", [401, 403])
async def test_auth_failure_keeps_data_and_retries(
    start: Any, fake: FakeUpstream, tmp_path: Path, status: int
) -> None:
    """401/403: the data is kept and retried; the upstream check fails meanwhile."""
    fake.script(*[Step(status, b'{"code":"unauthorized","message":"unauthorized access"}')] * 3)
    gw = await start(config_for(tmp_path, [("up", fake.url, "")]))
    assert 204 == await gw.write(lines(2))
    while len(fake.requests) < 2:
        await asyncio.sleep(0.01)
    health = await (await gw.client.get("/health")).json()
    assert "fail" == next(c for c in health["checks"] if c["name"] == "up")["status"]
    assert lines(2).splitlines() == (await fake.wait_for_lines(8, timeout=5))[-2:]
    assert 4 == len(fake.requests)
    assert gw.metric("gateway_upstream_retries_total", upstream="up", reason="auth") >= 3.0
    assert [] == deadletter.list_letters(tmp_path / "data" / "deadletter")


async def test_missing_database_retry_then_deadletter_policy(
    start: Any, fake: FakeUpstream, tmp_path: Path
) -> None:
    """404 database not found: retried by default; dead-lettered with on_missing_database."""
    body = b'{"error":"database not found: \\"mydb\\""}'
    fake.script(Step(404, body), Step(404, body))
    gw = await start(config_for(tmp_path, [("up", fake.url, 'on_missing_database = "deadletter"')]))
    assert 204 == await gw.write(lines(1))
    letters = await wait_for_letters(tmp_path, "up", 1)
    assert "database_not_found" == letters[0].reason
    assert 1 == len(fake.requests)


async def test_missing_database_is_retried_by_default(
    start: Any, fake: FakeUpstream, tmp_path: Path
) -> None:
    """404 database not found with the default policy: retried until it exists."""
    body = b'{"error":"database not found: \\"mydb\\""}'
    fake.script(Step(404, body), Step(404, body))
    gw = await start(config_for(tmp_path, [("up", fake.url, "")]))
    assert 204 == await gw.write(lines(1))
    await fake.wait_for_lines(3, timeout=5)
    assert 3 == len(fake.requests)
    assert [] == deadletter.list_letters(tmp_path / "data" / "deadletter")


async def test_413_splits_and_dead_letters_a_single_line(
    start: Any, fake: FakeUpstream, tmp_path: Path
) -> None:
    """413: split in halves; a single line still 413 goes to the dead-letter file."""
    fake.script(Step(413), Step(413), Step(204), Step(413))  # 4 lines -> 2+2 -> 1+1
    gw = await start(config_for(tmp_path, [("up", fake.url, "")]))
    assert 204 == await gw.write(lines(4))
    letters = await wait_for_letters(tmp_path, "up", 1)
    assert "too_large" == letters[0].reason
    assert 1 == letters[0].lines
    await fake.wait_for_lines(10, timeout=5)
    assert [4, 2, 1, 1, 2] == [len(r.lines()) for r in fake.requests]


async def test_retry_after_is_honoured(start: Any, fake: FakeUpstream, tmp_path: Path) -> None:
    """429 with Retry-After: 1 -> the next attempt waits at least a second."""
    fake.script(Step(429, headers={"Retry-After": "1"}))
    gw = await start(config_for(tmp_path, [("up", fake.url, "")]))
    assert 204 == await gw.write(lines(1))
    await fake.wait_for_lines(2, timeout=5)
    gap = fake.requests[1].received_at - fake.requests[0].received_at
    assert gap >= 0.95


@pytest.mark.parametrize(
    "step",
    [Step(503), Step(502), Step(500), Step(504), Step(reset=True)],
    ids=["503", "502", "500", "504", "reset"],
)
async def test_transient_failures_back_off_and_deliver(
    start: Any, fake: FakeUpstream, tmp_path: Path, step: Step
) -> None:
    """5xx and connection resets: retried with backoff, then delivered; nothing dead-lettered."""
    fake.script(step, step)
    gw = await start(config_for(tmp_path, [("up", fake.url, "")]))
    assert 204 == await gw.write(lines(3))
    assert lines(3).splitlines() == (await fake.wait_for_lines(9, timeout=5))[-3:]
    assert [] == deadletter.list_letters(tmp_path / "data" / "deadletter")


async def test_timeout_is_retried(start: Any, fake: FakeUpstream, tmp_path: Path) -> None:
    """An upstream slower than `timeout`: retried; delivered once it answers in time."""
    fake.script(Step(204, delay=1.0))
    gw = await start(config_for(tmp_path, [("up", fake.url, 'timeout = "200ms"')]))
    assert 204 == await gw.write(lines(1))
    await fake.wait_for_lines(2, timeout=5)
    await asyncio.sleep(0.1)
    assert gw.metric("gateway_upstream_requests_total", upstream="up", status="error") >= 1.0


async def test_mirror_keeps_feeding_the_healthy_upstream(start: Any, tmp_path: Path) -> None:
    """Two upstreams on the same databases: one down, the other keeps receiving; the lagging
    one catches up later with everything, in order."""
    async with FakeUpstream(default=Step(503)) as down, FakeUpstream() as up:
        gw = await start(config_for(tmp_path, [("old", down.url, ""), ("new", up.url, "")]))
        for i in range(5):
            assert 204 == await gw.write(lines(2, start=2 * i))
        assert lines(10).splitlines() == await up.wait_for_lines(10, timeout=5)
        down.default = Step(204)
        received = await down.wait_for_lines(10, timeout=10)
        assert lines(10).splitlines() == [line for line in received if line]


async def test_restart_resumes_from_the_cursor(start: Any, tmp_path: Path) -> None:
    """Data accepted while the upstream is down arrives after a gateway restart."""
    async with FakeUpstream(default=Step(503)) as fake:
        config = config_for(tmp_path, [("up", fake.url, "")])
        gw = await start(config)
        assert 204 == await gw.write(lines(5))
        await gw.client.close()
        fake.default = Step(204)
        fake.requests.clear()
        await start(config)
        assert lines(5).splitlines() == await fake.wait_for_lines(5, timeout=5)


async def test_buffer_full_refuses_with_503(start: Any, tmp_path: Path) -> None:
    """When the buffer reaches max_bytes new writes get 503 + Retry-After and /health fails;
    nothing accepted is dropped."""
    async with FakeUpstream(default=Step(503)) as fake:
        extra = '[buffer]\nmax_bytes = "2KiB"\nsegment_bytes = "1KiB"\n'
        gw = await start(config_for(tmp_path, [("up", fake.url, "")], extra))
        accepted = 0
        status = 204
        while status == 204 and accepted < 100:
            status = await gw.write(lines(5, start=5 * accepted))
            accepted += status == 204
        assert 503 == status
        health = await gw.client.get("/health")
        assert 503 == health.status
        fake.default = Step(204)
        received = await fake.wait_for_lines(5 * accepted, timeout=10)
        assert lines(5 * accepted).splitlines() == received


async def test_drop_oldest_gives_up_old_data_and_counts_it(start: Any, tmp_path: Path) -> None:
    """A drop_oldest upstream that lags drops its oldest data instead of refusing writes."""
    async with FakeUpstream(default=Step(503)) as fake:
        extra = '[buffer]\nmax_bytes = "2KiB"\nsegment_bytes = "1KiB"\n'
        gw = await start(
            config_for(tmp_path, [("mirror", fake.url, 'on_overflow = "drop_oldest"')], extra)
        )
        for i in range(40):
            assert 204 == await gw.write(lines(5, start=5 * i))
        assert gw.metric("gateway_upstream_lines_total", upstream="mirror", result="dropped") > 0


async def test_a_damaged_closed_segment_is_skipped_and_everything_after_it_delivered(
    start: Any, fake: FakeUpstream, tmp_path: Path
) -> None:
    """Bit rot in the middle of a closed segment of the buffer (its checksum fails where no
    torn write can be): the upstream gets every record before the damage and every record of the
    later segments; the rest of the damaged segment is counted as dropped and logged, and
    forwarding never stops."""
    options = '[buffer]\nsegment_bytes = "64KiB"\n'
    down = await start(config_for(tmp_path, [("up", "http://127.0.0.1:9", "")], options))
    for k in range(12):  # ~20 KiB each: several segments
        assert 204 == await down.write(lines(400, start=k * 1000))
    await down.client.close()
    segments = sorted((tmp_path / "data" / "buffer" / "log").glob("*.seg"))
    assert len(segments) >= 3
    first = bytearray(segments[0].read_bytes())
    damaged_at = len(first) // 2
    first[damaged_at] ^= 0xFF
    segments[0].write_bytes(bytes(first))

    up = await start(config_for(tmp_path, [("up", fake.url, "")], options))
    written = b"".join(lines(400, start=k * 1000) for k in range(12)).splitlines()
    assert 204 == await up.write(lines(10, start=50_000))  # forwarding goes on after the skip
    last = lines(10, start=50_000).splitlines()[-1]
    async with asyncio.timeout(10):
        while last not in fake.lines():
            await asyncio.sleep(0.05)
    got = fake.lines()
    dropped = up.metric("gateway_upstream_lines_total", upstream="up", result="dropped")
    sent = up.metric("gateway_upstream_lines_total", upstream="up", result="sent")
    assert 0 < dropped < 12 * 400
    assert sent + dropped == 12 * 400 + 10
    delivered = [line for line in got if line in set(written)]
    assert delivered == [line for line in written if line in set(delivered)]  # in order, once
    assert len(delivered) == 12 * 400 - dropped
    assert delivered[-400:] == written[-400:]  # the later segments all arrived


async def test_a_stored_stream_that_does_not_inflate_is_dropped_when_refused(
    start: Any, fake: FakeUpstream, tmp_path: Path
) -> None:
    """A buffered record whose gzip stream passes its checksum but does not inflate (only a
    hand-made frame can be one), read back from disk and sent as it is to a gzip upstream, which
    refuses it (400): its lines cannot be dead-lettered, so they are counted as dropped and
    logged; the next record is delivered."""
    broken = bytearray(gzip.compress(lines(3000), 9))
    broken[40:48] = b"\xff" * 8  # inside the deflate data: the checksum is made over this
    good = lines(3000, start=10_000)
    config = _gzip_config(tmp_path, fake.url)
    wal = WriteAheadLog(
        tmp_path / "data" / "buffer", [Consumer("up")], max_bytes=2**30, fsync="always"
    )
    wal.open()
    for payload, stream in ((lines(3000), bytes(broken)), (good, gzip.compress(good))):
        await wal.append(Record("mydb", "ns", T, "w", 3000, T, T, payload, stored_gzip=stream))
    await wal.close()
    up = await start(config)
    got = await fake.wait_for_lines(3000, timeout=10)
    assert got == good.splitlines()
    assert [400, 204] == [
        400 if r.body == b"" else 204 for r in fake.requests
    ]  # the broken stream was refused, the good one taken
    await wait_for_metric(
        up, 3000.0, "gateway_upstream_lines_total", upstream="up", result="dropped"
    )
    assert [] == list((tmp_path / "data" / "deadletter").glob("*"))


async def wait_for_metric(gw: Gateway, value: float, name: str, **labels: str) -> None:
    """Wait until a metric reaches a value (metrics follow the file writes they count)."""
    async with asyncio.timeout(5):
        while gw.metric(name, **labels) < value:
            await asyncio.sleep(0.02)
    assert value == gw.metric(name, **labels)


async def wait_for_letters(tmp_path: Path, upstream: str, n: int) -> list[deadletter.DeadLetter]:
    """Wait until the dead-letter file of an upstream has n entries."""
    directory = tmp_path / "data" / "deadletter"
    async with asyncio.timeout(5):
        while len(letters := deadletter.list_letters(directory, upstream)) < n:
            await asyncio.sleep(0.02)
    return letters


async def test_ack_upstream_answers_with_the_upstreams_status(
    start: Any, fake: FakeUpstream, tmp_path: Path
) -> None:
    """ack = "upstream": the client gets the upstream's own status and body."""
    body = b'{"code":"invalid","message":"upstream says no"}'
    fake.script(Step(400, body), Step(204))
    gw = await start(config_for(tmp_path, [("up", fake.url, "")], '[server]\nack = "upstream"\n'))
    response = await gw.client.post(
        "/api/v2/write?bucket=mydb", data=lines(1), headers=auth(WRITER)
    )
    assert 400 == response.status
    assert body == await response.read()
    assert 204 == await gw.write(lines(1, start=1))
    assert 2 == len(fake.requests)
    await asyncio.sleep(0.2)
    assert 2 == len(fake.requests)  # nothing was buffered for a second, asynchronous send


async def test_query_is_proxied_to_the_upstream(
    start: Any, fake: FakeUpstream, tmp_path: Path
) -> None:
    """/query is proxied with the gateway's upstream credentials, never the client's token."""
    answer = b'{"results":[{"statement_id":0,"series":[{"name":"cpu","columns":["time","v"],"values":[[1,2]]}]}]}'
    fake.script(Step(200, answer, headers={"Content-Type": "application/json"}))
    gw = await start(config_for(tmp_path, [("up", fake.url, "")]))
    response = await gw.client.get(
        f"/query?db=mydb&q=SELECT+v+FROM+cpu&u=me&p={WRITER}&epoch=ns", headers=auth(WRITER)
    )
    assert 200 == response.status
    assert answer == await response.read()
    request = fake.requests[0]
    assert "/query" == request.path
    assert ("SELECT v FROM cpu", "mydb", "ns") == (
        request.query["q"],
        request.query["db"],
        request.query["epoch"],
    )
    assert "p" not in request.query
    assert "Token up-secret" == request.headers["Authorization"]


async def test_health_fails_for_the_upstream_filling_the_buffer(start: Any, tmp_path: Path) -> None:
    """An upstream holding most of the buffer fails its check; a healthy mirror passes."""
    async with FakeUpstream(default=Step(503)) as down, FakeUpstream() as up:
        extra = '[buffer]\nmax_bytes = "4KiB"\nsegment_bytes = "1KiB"\n'
        gw = await start(config_for(tmp_path, [("down", down.url, ""), ("up", up.url, "")], extra))
        status = 204
        written = 0
        while status == 204 and written < 200:
            status = await gw.write(lines(5, start=5 * written))
            written += 1
        await up.wait_for_lines(5 * (written - 1), timeout=5)
        await asyncio.sleep(2.5)  # the buffer status refresh
        checks = {c["name"]: c for c in (await (await gw.client.get("/health")).json())["checks"]}
        assert "fail" == checks["down"]["status"]
        assert "buffer" in checks["down"]["message"]
        assert "pass" == checks["up"]["status"]


async def test_gzip_batches_of_one_database_arrive_in_order_and_whole(
    start: Any, fake: FakeUpstream, tmp_path: Path
) -> None:
    """With gzip on, the batches of a window are compressed ahead of sending: still one database's
    batches arrive one after another, in order, each whole; a retried batch is resent as is."""
    config = _gzip_config(tmp_path, fake.url, "batch_max_lines = 5")
    assert config.upstreams[0].gzip
    # The first request is slow, so the next writes pile up into a window of several batches;
    # the one after it is retried once.
    fake.script(Step(204, delay=0.3), Step(204), Step(503))
    gw = await start(config)
    client = gw.state.destinations.clients["up"]
    prepared: list[int] = []
    original = client.prepare

    async def counting(body: bytes) -> bytes | None:
        prepared.append(len(body))
        return await original(body)

    client.prepare = counting  # type: ignore[method-assign]
    for i in range(6):
        assert 204 == await gw.write(lines(5, start=5 * i))
    got = await fake.wait_for_lines(35, timeout=10)  # 30 lines + the retried batch of 5
    assert prepared  # batches were compressed ahead, not by write() itself
    assert all(r.headers["Content-Encoding"] == "gzip" for r in fake.requests)
    assert all(len(r.lines()) == 5 for r in fake.requests)
    batches = [r.lines() for r in fake.requests]
    retried = [b for before, b in itertools.pairwise(batches) if b == before]
    assert len(retried) == 1  # the refused batch came again, right after itself
    in_order = [b for i, b in enumerate(batches) if i == 0 or b != batches[i - 1]]
    assert [line for b in in_order for line in b] == lines(30).splitlines()
    assert got == [line for b in batches for line in b]


async def test_gzip_bodies_are_logged_as_sent_and_forwarded_as_line_protocol(
    start: Any, fake: FakeUpstream, tmp_path: Path
) -> None:
    """A gzip body whose lines are all accepted goes into the log as the client's gzip stream
    (a fraction of the bytes on disk); one with a rejected line as its accepted lines. After a
    restart (nothing in memory, every record read from the files) the upstream gets exactly
    the line protocol of both."""
    down = await start(config_for(tmp_path, [("up", "http://127.0.0.1:9", "")]))
    whole = lines(2000)
    gzip_headers = {**auth(WRITER), "Content-Encoding": "gzip"}
    response = await down.client.post(
        "/api/v2/write?bucket=mydb", data=gzip.compress(whole), headers=gzip_headers
    )
    assert 204 == response.status
    partial = lines(3, start=5000) + b"cpu v=\n" + lines(2, start=6000)
    response = await down.client.post(
        "/api/v2/write?bucket=mydb", data=gzip.compress(partial), headers=gzip_headers
    )
    assert 400 == response.status  # partial write: the 5 good lines are stored
    await down.client.close()
    on_disk = sum(path.stat().st_size for path in (tmp_path / "data").rglob("*.seg"))
    assert on_disk < len(whole) / 3

    up = await start(config_for(tmp_path, [("up", fake.url, "")]))
    expected = whole + lines(3, start=5000) + lines(2, start=6000)
    assert expected.splitlines() == await fake.wait_for_lines(2005, timeout=10)
    assert 204 == await up.write(lines(1, start=7000))
    assert lines(1, start=7000).splitlines() == (await fake.wait_for_lines(2006, timeout=5))[-1:]


def _gzip_config(tmp_path: Path, url: str, options: str = "", extra: str = "") -> Config:
    """`config_for` with one upstream "up" at `url`, with gzip on."""
    config_for(tmp_path, [("up", url, options)], extra)
    text = (tmp_path / "gw.toml").read_text().replace("gzip = false", "gzip = true")
    (tmp_path / "gw.toml").write_text(text)
    return load_config(tmp_path / "gw.toml", env={})


async def test_a_large_gzip_body_goes_to_a_gzip_upstream_as_the_client_sent_it(
    start: Any, fake: FakeUpstream, tmp_path: Path
) -> None:
    """A gzip upstream is sent a large one-member gzip body whose lines were all accepted as
    the client's very bytes, alone: live (from the tail in memory) and after a restart (read
    from the files). A small gzip body, a body of two gzip members (InfluxDB 3 would read only
    the first) and a plain body are compressed again by the gateway. Every line arrives once,
    in order."""
    headers = {**auth(WRITER), "Content-Encoding": "gzip"}
    big = [lines(3000, start=k * 10_000) for k in range(4)]
    assert min(map(len, big)) >= AS_SENT_MIN_BYTES
    as_sent = [gzip.compress(body, 9, mtime=k) for k, body in enumerate(big)]  # not our level
    two_members = [gzip.compress(body[:5000]) + gzip.compress(body[5000:]) for body in big]

    async def write_all(gw: Any, k: int) -> None:
        for data, encoded in (
            (as_sent[k], True),
            (gzip.compress(lines(5, start=k * 10_000 + 5000)), True),
            (two_members[k + 1], True),
            (lines(5, start=k * 10_000 + 6000), False),
        ):
            response = await gw.client.post(
                "/api/v2/write?bucket=mydb", data=data, headers=headers if encoded else auth(WRITER)
            )
            assert 204 == response.status

    down = await start(_gzip_config(tmp_path, "http://127.0.0.1:9"))
    await write_all(down, 0)  # buffered only: the next gateway reads it from the files
    await down.client.close()
    up = await start(_gzip_config(tmp_path, fake.url))
    await write_all(up, 2)
    expected = b"".join(
        big[k] + lines(5, start=k * 10_000 + 5000) + big[k + 1] + lines(5, start=k * 10_000 + 6000)
        for k in (0, 2)
    )
    assert expected.splitlines() == await fake.wait_for_lines(12_020, timeout=20)
    assert all(r.headers["Content-Encoding"] == "gzip" for r in fake.requests)
    sent_as_is = [r.raw_body for r in fake.requests if r.raw_body in (as_sent[0], as_sent[2])]
    assert sent_as_is == [as_sent[0], as_sent[2]]  # each alone, byte for byte
    assert not any(r.raw_body in two_members for r in fake.requests)


async def test_a_large_plain_body_for_a_gzip_upstream_is_compressed_once_at_acceptance(
    start: Any, fake: FakeUpstream, tmp_path: Path
) -> None:
    """A large plain body routed to a gzip upstream is compressed once, when it is accepted:
    the log holds the compressed lines (a fraction of the bytes), and the upstream is sent
    that stream with no compression in the forwarder, live and after a restart. Routed only to
    plain upstreams, the same body is logged as line protocol."""
    body = lines(8000)
    assert len(body) > OFFLOAD_BYTES  # validated (and compressed) in a worker thread
    (tmp_path / "plain").mkdir()
    plain_only = await start(config_for(tmp_path / "plain", [("up", "http://127.0.0.1:9", "")]))
    assert 204 == await plain_only.write(body)
    await plain_only.client.close()
    plain_log = sum(p.stat().st_size for p in (tmp_path / "plain" / "data").rglob("*.seg"))
    assert plain_log > len(body)

    down = await start(_gzip_config(tmp_path, "http://127.0.0.1:9"))
    assert 204 == await down.write(body)
    await down.client.close()
    on_disk = sum(path.stat().st_size for path in (tmp_path / "data").rglob("*.seg"))
    assert on_disk < len(body) / 3

    up = await start(_gzip_config(tmp_path, fake.url))
    client = up.state.destinations.clients["up"]
    compressed_by_forwarder: list[int] = []
    original = client.prepare

    async def counting(parts: Any) -> bytes | None:
        compressed_by_forwarder.append(1)
        return await original(parts)

    client.prepare = counting  # type: ignore[method-assign]
    assert 204 == await up.write(lines(8000, start=8000))
    got = await fake.wait_for_lines(16_000, timeout=10)
    assert got == (body + lines(8000, start=8000)).splitlines()
    assert compressed_by_forwarder == []
    assert all(r.headers["Content-Encoding"] == "gzip" for r in fake.requests)
    assert len(fake.requests) == 2  # each body alone, as compressed at acceptance


async def test_a_body_sent_as_the_client_sent_it_is_split_as_line_protocol_on_413(
    start: Any, fake: FakeUpstream, tmp_path: Path
) -> None:
    """An upstream that answers 413 to a body sent as the client's gzip stream gets it again in
    two halves, compressed by the gateway; a 503 before that resends the same stream."""
    body = lines(3000)
    stream = gzip.compress(body, 9)
    fake.script(Step(503), Step(413))
    gw = await start(_gzip_config(tmp_path, fake.url))
    response = await gw.client.post(
        "/api/v2/write?bucket=mydb",
        data=stream,
        headers={**auth(WRITER), "Content-Encoding": "gzip"},
    )
    assert 204 == response.status
    got = await fake.wait_for_lines(3000 * 3, timeout=10)  # twice refused whole, then halves
    assert [r.raw_body == stream for r in fake.requests] == [True, True, False, False]
    assert [len(r.lines()) for r in fake.requests] == [3000, 3000, 1500, 1500]
    assert got[6000:] == body.splitlines()


async def test_streams_read_back_from_disk_go_to_a_gzip_upstream_without_inflating_them(
    start: Any, fake: FakeUpstream, tmp_path: Path, inflations: list[int]
) -> None:
    """Catching up from the files (written while the upstream was away, read after a restart),
    a gzip upstream is sent each large stored stream as it is and the gateway never inflates
    one; when the upstream answers 413 to one, that record's lines are inflated then, to split
    it. Every line arrives."""
    bodies = [lines(3000, start=k * 10_000) for k in range(3)]
    streams = [gzip.compress(body, 9, mtime=k) for k, body in enumerate(bodies)]
    down = await start(_gzip_config(tmp_path, "http://127.0.0.1:9"))
    for stream in streams:
        response = await down.client.post(
            "/api/v2/write?bucket=mydb",
            data=stream,
            headers={**auth(WRITER), "Content-Encoding": "gzip"},
        )
        assert 204 == response.status
    await down.client.close()

    inflations.clear()  # from here on
    fake.script(Step(204), Step(413))  # the second stream is refused whole once
    await start(_gzip_config(tmp_path, fake.url))
    got = await fake.wait_for_lines(9000 + 3000, timeout=20)
    assert [r.raw_body == streams[k] for r, k in zip(fake.requests, (0, 1), strict=False)] == [
        True,
        True,
    ]
    assert got[:3000] == bodies[0].splitlines()
    assert got[6000:] == (bodies[1] + bodies[2]).splitlines()  # halves, then the third
    assert [len(r.lines()) for r in fake.requests] == [3000, 3000, 1500, 1500, 3000]
    assert fake.requests[-1].raw_body == streams[2]
    assert inflations == [len(streams[1])]  # only the stream that had to be split


async def test_ack_upstream_sends_a_gzip_body_to_a_gzip_upstream_as_the_client_sent_it(
    start: Any, fake: FakeUpstream, tmp_path: Path
) -> None:
    """ack = "upstream" with a gzip upstream: a gzip body whose lines are all accepted is sent
    on as the client's stream (even a small one: there is no batch to join), a plain one
    compressed by the gateway."""
    gw = await start(_gzip_config(tmp_path, fake.url, extra='[server]\nack = "upstream"\n'))
    stream = gzip.compress(lines(3), 9)
    response = await gw.client.post(
        "/api/v2/write?bucket=mydb",
        data=stream,
        headers={**auth(WRITER), "Content-Encoding": "gzip"},
    )
    assert 204 == response.status
    assert 204 == await gw.write(lines(2, start=3))
    assert [r.raw_body == stream for r in fake.requests] == [True, False]
    assert [line for r in fake.requests for line in r.lines()] == lines(5).splitlines()
