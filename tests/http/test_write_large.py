"""Large bodies on the buffer path: validated in a worker thread, which also starts the durable
append of a body accepted whole (no round trip through the event loop first). Whatever can still
refuse a write after validation must see it before anything is stored: line errors, the buffer
being full, a rate limit, an upstream answering first (ack = "upstream")."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

from gateway.app import create_app
from gateway.auth.policy import Policy, TokenEntry, token_digest
from gateway.destinations import Destinations
from gateway.http import write
from gateway.http.write import OFFLOAD_BYTES
from tests.fakeupstream import FakeUpstream, Step
from tests.http.conftest import NOW_NS, WRITER, ClientFactory, auth, make_policy

V2 = "/api/v2/write?bucket=mydb"
T = NOW_NS


def big_body(first: int = 0, lines: int = 6_000) -> bytes:
    """Well above the size validated in a thread."""
    body = "".join(
        f"cpu,host=h{i % 50},cpu=cpu{i % 8} usage_user={i}.5,usage_idle=1i {T + i}\n"
        for i in range(first, first + lines)
    ).encode()
    assert len(body) > OFFLOAD_BYTES
    return body


WARM_UP = f"warmup v=1i {T}\n".encode()


async def start_log_writer(client: TestClient[Any, Any]) -> None:
    """A small write, appended on the loop, which starts the log's writer thread: a large body's
    append can then start in its validation thread (which never starts that thread itself)."""
    assert 204 == (await client.post(V2, data=WARM_UP, headers=auth(WRITER))).status


def upstream(url: str, extra: str = "") -> str:
    return f'[[upstreams]]\nname = "up"\nurl = "{url}"\nflush_interval = "50ms"\n{extra}'


async def pending_records(client: TestClient[Any, Any]) -> int:
    text = await (await client.get("/metrics")).text()
    found = [line for line in text.splitlines() if line.startswith("gateway_buffer_records")]
    return sum(int(float(line.split()[-1])) for line in found)


@pytest.fixture(name="submits")
def fixture_submits(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """What every Destinations.submit (from the validation thread) answered."""
    answers: list[bool] = []
    submit = Destinations.submit

    def spy(self: Destinations, *args: Any, **kwargs: Any) -> bool:
        answers.append(submit(self, *args, **kwargs))
        return answers[-1]

    monkeypatch.setattr(Destinations, "submit", spy)
    return answers


async def test_a_large_body_accepted_whole_is_delivered_once(
    gateway: Any, submits: list[bool]
) -> None:
    """204, the append started in the validation thread, and the upstream receives every line
    exactly once."""
    async with FakeUpstream() as fake:
        client = await gateway(upstream(fake.url))
        await start_log_writer(client)
        bodies = [WARM_UP, big_body(0), big_body(6_000)]
        statuses = [
            (await client.post(V2, data=body, headers=auth(WRITER))).status for body in bodies[1:]
        ]
        assert [204, 204] == statuses
        assert [True, True] == submits
        received = await fake.wait_for_lines(12_001, timeout=10)
        await asyncio.sleep(0.2)  # nothing more arrives
        assert sorted(received) == sorted(b"".join(bodies).splitlines()) == sorted(fake.lines())


async def test_a_large_body_is_appended_by_the_loop_while_no_log_writer_runs(
    gateway: Any, submits: list[bool]
) -> None:
    """The first write of a fresh gateway finds the log's writer thread not yet running: its
    validation thread does not start it (a thread inherits its creator's CPU priority, and
    validation threads may run lower), so the loop appends that body and starts the writer."""
    async with FakeUpstream() as fake:
        client = await gateway(upstream(fake.url))
        bodies = [big_body(0), big_body(6_000)]
        statuses = [
            (await client.post(V2, data=body, headers=auth(WRITER))).status for body in bodies
        ]
        assert [204, 204] == statuses
        assert [False, True] == submits
        received = await fake.wait_for_lines(12_000, timeout=10)
        assert sorted(received) == sorted(b"".join(bodies).splitlines())


@pytest.mark.parametrize(("setting", "increment"), [("", 0), ("validation_nice = 4\n", 4)])
async def test_a_large_body_is_validated_below_the_loops_priority(
    gateway: Any, monkeypatch: pytest.MonkeyPatch, setting: str, increment: int
) -> None:
    """The validation thread runs `server.validation_nice` (default 0) steps below the loop,
    which stays as it was; a small body is validated on the loop itself."""
    seen: list[int] = []
    decode_and_validate = write._decode_and_validate

    def spy(*args: Any) -> Any:
        seen.append(os.getpriority(os.PRIO_PROCESS, 0))  # 0: this thread
        return decode_and_validate(*args)

    monkeypatch.setattr(write, "_decode_and_validate", spy)
    loop_nice = os.getpriority(os.PRIO_PROCESS, 0)
    client = await gateway("[server]\n" + setting)
    for body in (big_body(), b"cpu v=1\n", big_body(6_000)):
        assert 204 == (await client.post(V2, data=body, headers=auth(WRITER))).status
    below = min(19, loop_nice + increment)
    assert [below, loop_nice, below] == seen
    assert os.getpriority(os.PRIO_PROCESS, 0) == loop_nice


async def test_a_large_body_with_a_bad_line_stores_only_the_good_ones(
    gateway: Any, submits: list[bool]
) -> None:
    """A partial write: 400 naming the line, the other lines stored (appended on the loop, after
    the decision) and delivered."""
    async with FakeUpstream() as fake:
        client = await gateway(upstream(fake.url))
        good = big_body()
        lines = good.splitlines(keepends=True)
        body = b"".join([*lines[:100], b"cpu,host=x usage_user= 1\n", *lines[100:]])
        response = await client.post(V2, data=body, headers=auth(WRITER))
        assert 400 == response.status
        assert "line 101" in (await response.json())["message"]
        assert [] == submits
        received = await fake.wait_for_lines(len(lines), timeout=10)
        assert sorted(received) == sorted(good.splitlines())


async def test_a_large_body_refused_for_a_full_buffer_is_not_stored(
    gateway: Any, submits: list[bool]
) -> None:
    """The buffer at its limit (the upstream down): 503 with Retry-After; once the upstream is
    back it receives the first body (and the small write before it) only. (Stored compressed
    for the gzip upstream: ~40 KB.)"""
    async with FakeUpstream() as fake:
        fake.script(*[Step(503, headers={"Retry-After": "1"})] * 3)
        client = await gateway(upstream(fake.url) + '[buffer]\nmax_bytes = "10KiB"\n')
        await start_log_writer(client)
        first = await client.post(V2, data=big_body(0), headers=auth(WRITER))
        refused = await client.post(V2, data=big_body(6_000), headers=auth(WRITER))
        assert (204, 503) == (first.status, refused.status)
        assert "Retry-After" in refused.headers
        assert [True, False] == submits  # declined: the loop's append refuses it
        # every attempt is recorded, and the 503s make the forwarder resend: compare sets
        expected = {*WARM_UP.splitlines(), *big_body(0).splitlines()}
        async with asyncio.timeout(15):
            while not expected <= set(fake.lines()):
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        assert expected == set(fake.lines())


async def test_a_large_body_over_the_rate_limit_is_not_stored(
    aiohttp_client: ClientFactory, make_config: Any, submits: list[bool]
) -> None:
    """A rate-limited token: the lines are charged after validation, and a 429 stores nothing
    (the body is not appended from the validation thread). A request above the burst waits
    for a full bucket, which one line taken from it first makes it do."""
    limited = "igw_limited-large-token"
    policy = Policy(
        tokens=(
            *make_policy().tokens,
            TokenEntry("limited", token_digest(limited), ("*",), (), None, 1_000),
        ),
        source="test-policy",
    )
    async with FakeUpstream() as fake:
        app = create_app(
            make_config(upstream(fake.url)),
            clock=lambda: NOW_NS,
            registry=CollectorRegistry(),
            policy=policy,
        )
        client = await aiohttp_client(app)
        one = f"cpu v=1 {T}".encode()
        accepted = await client.post(V2, data=one + b"\n", headers=auth(limited))
        refused = await client.post(V2, data=big_body(), headers=auth(limited))
        assert (204, 429) == (accepted.status, refused.status)
        assert [] == submits
        assert [one] == await fake.wait_for_lines(1, timeout=5)
        await asyncio.sleep(0.3)
        assert [one] == fake.lines()


async def test_a_large_body_with_ack_upstream_gets_the_upstreams_answer(
    gateway: Any, submits: list[bool]
) -> None:
    """ack = "upstream": the upstream answers first; its 400 reaches the client and nothing
    is left in the buffer to be sent again."""
    async with FakeUpstream() as fake:
        fake.script(Step(400, body=b'{"code":"invalid","message":"no"}'))
        client = await gateway(upstream(fake.url), ack="upstream")
        response = await client.post(V2, data=big_body(), headers=auth(WRITER))
        assert (400, []) == (response.status, submits)
        await asyncio.sleep(0.3)
        assert 6_000 == len(fake.lines())  # once, by the write path itself
        assert 0 == await pending_records(client)
