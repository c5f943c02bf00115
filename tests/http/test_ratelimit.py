"""Per-token rate limits on both write endpoints: 429, Retry-After, isolation, what is charged."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

from gateway.app import POLICY_WATCHER, create_app
from gateway.auth.policy import Policy, TokenEntry, token_digest
from gateway.auth.policyfile import hash_token
from gateway.config import Config
from gateway.errors import StorageFullError
from tests.http.conftest import NOW_NS, auth, exported, state_of

LIMITED = "igw_limited-token-value"
OTHER = "igw_other-limited-token-value"
FREE = "igw_unlimited-token-value"
RATE = 10
V2 = "/api/v2/write?bucket=mydb"


class Clock:
    """A settable nanosecond clock."""

    def __init__(self) -> None:
        self.now = NOW_NS

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move forward."""
        self.now += int(seconds * 1e9)


def policy() -> Policy:
    """Two tokens limited to 10 lines/s and one without a limit."""
    return Policy(
        tokens=(
            TokenEntry("limited", token_digest(LIMITED), ("*",), (), None, RATE),
            TokenEntry("other", token_digest(OTHER), ("*",), (), None, RATE),
            TokenEntry("free", token_digest(FREE), ("*",), (), None, None),
        ),
        source="test-policy",
    )


def lines(n: int, start: int = 0) -> bytes:
    """n valid lines without timestamps (they get the receive time)."""
    return "".join(f"cpu v={i}\n" for i in range(start, start + n)).encode()


Start = Callable[..., Awaitable[tuple[TestClient[Any, Any], Clock]]]


@pytest.fixture(name="start")
def fixture_start(aiohttp_client: Any, make_config: Callable[..., Config]) -> Start:
    """Start a gateway with rate-limited tokens and a settable clock."""

    async def start(**server: Any) -> tuple[TestClient[Any, Any], Clock]:
        clock = Clock()
        app = create_app(
            make_config(**server), clock=clock, registry=CollectorRegistry(), policy=policy()
        )
        return await aiohttp_client(app), clock

    return start


async def test_write_within_the_limit_is_accepted(start: Start) -> None:
    """A burst of up to rate_limit lines is accepted."""
    client, _ = await start()
    response = await client.post(V2, data=lines(RATE), headers=auth(LIMITED))
    assert 204 == response.status


async def test_excess_gets_429_with_retry_after(start: Start) -> None:
    """Past the burst: 429 with Retry-After in whole seconds."""
    client, _ = await start()
    await client.post(V2, data=lines(RATE), headers=auth(LIMITED))
    response = await client.post(V2, data=lines(5), headers=auth(LIMITED))
    assert (429, "1") == (response.status, response.headers["Retry-After"])


async def test_429_body_names_the_token_and_its_limit(start: Start) -> None:
    """The v2 body is {"code":"too many requests","message":...} naming name and limit."""
    client, _ = await start()
    await client.post(V2, data=lines(RATE), headers=auth(LIMITED))
    body = await (await client.post(V2, data=lines(5), headers=auth(LIMITED))).json()
    assert ["code", "message"] == list(body)
    assert "too many requests" == body["code"]
    assert 'token "limited" may write 10 lines per second' in body["message"]
    assert LIMITED not in body["message"]


async def test_v1_429_uses_the_error_shape(start: Start) -> None:
    """/write answers 429 as {"error": ...} with X-Influxdb-Error and Retry-After."""
    client, _ = await start()
    await client.post("/write?db=mydb", data=lines(RATE), headers=auth(LIMITED))
    response = await client.post("/write?db=mydb", data=lines(1), headers=auth(LIMITED))
    body = await response.json()
    assert (429, ["error"]) == (response.status, list(body))
    assert "10 lines per second" in response.headers["X-Influxdb-Error"]
    assert "1" == response.headers["Retry-After"]


async def test_retry_after_counts_the_debt(start: Start) -> None:
    """35 lines at 10/s from a full bucket leave a 25-line debt: the next line waits 2.6 s -> 3."""
    client, _ = await start()
    first = await client.post(V2, data=lines(35), headers=auth(LIMITED))
    second = await client.post(V2, data=lines(1), headers=auth(LIMITED))
    assert (204, 429, "3") == (first.status, second.status, second.headers["Retry-After"])


async def test_request_larger_than_burst_waits_for_a_full_bucket(start: Start) -> None:
    """A request above the burst when the bucket is not full waits until it is."""
    client, clock = await start()
    await client.post(V2, data=lines(4), headers=auth(LIMITED))
    clock.advance(0.1)
    response = await client.post(V2, data=lines(50), headers=auth(LIMITED))
    assert (429, "1") == (response.status, response.headers["Retry-After"])


async def test_after_retry_after_the_write_is_accepted(start: Start) -> None:
    """Waiting Retry-After seconds is enough."""
    client, clock = await start()
    await client.post(V2, data=lines(RATE), headers=auth(LIMITED))
    refused = await client.post(V2, data=lines(5), headers=auth(LIMITED))
    clock.advance(int(refused.headers["Retry-After"]))
    response = await client.post(V2, data=lines(5), headers=auth(LIMITED))
    assert 204 == response.status


async def test_other_tokens_are_unaffected(start: Start) -> None:
    """One token over its limit does not slow down another, limited or not."""
    client, _ = await start()
    await client.post(V2, data=lines(RATE), headers=auth(LIMITED))
    other = await client.post(V2, data=lines(RATE), headers=auth(OTHER))
    free = await client.post(V2, data=lines(1000), headers=auth(FREE))
    assert (204, 204) == (other.status, free.status)


async def test_refused_write_stores_nothing(start: Start) -> None:
    """A 429 write leaves nothing in the store."""
    client, _ = await start()
    await client.post(V2, data=lines(RATE), headers=auth(LIMITED))
    await client.post(V2, data=lines(3, start=100), headers=auth(LIMITED))
    assert lines(RATE) == exported(client, "mydb").replace(b" " + str(NOW_NS).encode(), b"")


async def test_rejection_is_counted_with_reason_rate_limit(start: Start) -> None:
    """gateway_write_rejections_total{reason="rate_limit"} counts 429s."""
    client, _ = await start()
    await client.post(V2, data=lines(RATE), headers=auth(LIMITED))
    await client.post(V2, data=lines(1), headers=auth(LIMITED))
    await client.post(V2, data=lines(1), headers=auth(LIMITED))
    counter = state_of(client).metrics.write_rejections.labels("rate_limit")
    assert 2.0 == counter._value.get()


async def test_rejected_lines_are_not_charged(start: Start) -> None:
    """Only accepted lines cost: 3 good + 20 bad lines leave room for 7 more."""
    client, _ = await start()
    partial = await client.post(V2, data=lines(3) + b"bad\n" * 20, headers=auth(LIMITED))
    rest = await client.post(V2, data=lines(7), headers=auth(LIMITED))
    assert (400, 204) == (partial.status, rest.status)


async def test_empty_bucket_refuses_before_reading_the_body(start: Start) -> None:
    """With no room for one line the body is not even decoded: 429, not 400 for bad gzip."""
    client, _ = await start()
    await client.post(V2, data=lines(RATE), headers=auth(LIMITED))
    response = await client.post(
        V2, data=b"not gzip", headers={**auth(LIMITED), "Content-Encoding": "gzip"}
    )
    assert 429 == response.status
    assert "has used up its burst" in (await response.json())["message"]


async def test_lines_of_a_failed_append_are_refunded(start: Start) -> None:
    """A write refused by storage (503) costs nothing: the same lines pass once it is back."""
    client, _ = await start()
    state = state_of(client)
    original = state.destinations.append

    async def full(record: object) -> None:
        raise StorageFullError("no space left on device")

    state.destinations.append = full  # type: ignore[method-assign]
    refused = await client.post(V2, data=lines(RATE), headers=auth(LIMITED))
    state.destinations.append = original  # type: ignore[method-assign]
    retried = await client.post(V2, data=lines(RATE), headers=auth(LIMITED))
    assert (503, 204) == (refused.status, retried.status)


async def test_ack_upstream_mode_is_limited_too(start: Start) -> None:
    """The limit applies before the write goes anywhere, whatever the ack mode."""
    client, _ = await start(ack="upstream")
    await client.post(V2, data=lines(RATE), headers=auth(LIMITED))
    response = await client.post(V2, data=lines(1), headers=auth(LIMITED))
    assert 429 == response.status


async def test_new_rate_from_a_reload_applies_from_then_on(start: Start) -> None:
    """A policy reload that raises the token's limit refills at the new rate from then on."""
    client, clock = await start()
    await client.post(V2, data=lines(RATE), headers=auth(LIMITED))
    path = state_of(client).config.policy_path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f'[[tokens]]\nname = "limited"\nhash = "{hash_token(LIMITED)}"\n'
        'write = ["*"]\nrate_limit = 1000\n'
    )
    app = client.server.app
    assert isinstance(app, web.Application)
    assert await app[POLICY_WATCHER].reload("SIGHUP")
    clock.advance(0.5)  # 500 lines of room at the new rate
    response = await client.post(V2, data=lines(400), headers=auth(LIMITED))
    assert 204 == response.status
