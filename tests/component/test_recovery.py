"""Recovery through the whole app: a torn tail in the write-ahead buffer is cut off, logged
and counted, and every complete record is still delivered."""

from __future__ import annotations

from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from gateway.app import create_app
from gateway.http.state import STATE
from tests.component.test_forwarding import config_for, lines
from tests.fakeupstream import FakeUpstream, Step
from tests.http.conftest import WRITER, auth, make_policy


async def test_torn_tail_is_truncated_counted_and_the_rest_delivered(tmp_path: Path) -> None:
    """Garbage after the last record (a crash mid-append) does not stop the next start."""
    async with FakeUpstream(default=Step(503)) as fake:
        config = config_for(tmp_path, [("up", fake.url, "")])
        app = create_app(config, registry=CollectorRegistry(), policy=make_policy())
        async with TestClient(TestServer(app)) as client:
            response = await client.post(
                "/api/v2/write?bucket=mydb", data=lines(3), headers=auth(WRITER)
            )
            assert 204 == response.status
        segments = sorted((tmp_path / "data" / "buffer" / "log").glob("*.seg"))
        with segments[-1].open("ab") as segment:
            segment.write(b"\xc1\x00\x10\x00\x00garbage-of-a-torn-append")
        fake.default = Step(204)
        fake.requests.clear()
        registry = CollectorRegistry()
        app = create_app(config, registry=registry, policy=make_policy())
        async with TestClient(TestServer(app)) as client:
            assert 200 == (await client.get("/ready")).status
            assert lines(3).splitlines() == await fake.wait_for_lines(3, timeout=5)
            assert 1.0 == registry.get_sample_value("gateway_storage_torn_tails_total")
            assert 0 < (registry.get_sample_value("gateway_storage_torn_bytes_total") or 0)
            response = await client.post(
                "/api/v2/write?bucket=mydb", data=lines(1, start=7), headers=auth(WRITER)
            )
            assert 204 == response.status
            assert lines(1, start=7).splitlines() == (await fake.wait_for_lines(4, timeout=5))[3:]
            assert client.server.app[STATE].ready
