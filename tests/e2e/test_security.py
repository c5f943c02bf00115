"""The real `influx-gateway run` process under attack: policy hot reload, slow clients,
malformed HTTP, oversized headers, too many concurrent requests. After each, a normal write
still succeeds and `store export` shows exactly the acknowledged lines."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.conftest import RunningGateway, cli, running

pytestmark = pytest.mark.slow

READ_TIMEOUT_S = 1.0
T = time.time_ns() // 10**9 * 10**9
GOOD = f"good,host=a v=1 {T}\n".encode()


@pytest.fixture(name="gateway")
def fixture_gateway(tmp_path: Path) -> Iterator[RunningGateway]:
    """A gateway with a 1 s read timeout and room for 2 concurrent requests."""
    config = tmp_path / "gw.toml"
    config.write_text(
        f'[server]\nread_timeout = "{READ_TIMEOUT_S}s"\nmax_concurrent_requests = 2\n'
    )
    with running(tmp_path, "-c", str(config)) as gateway:
        yield gateway


def exported(gateway: RunningGateway) -> bytes:
    """`store export --database mydb` of the running gateway."""
    return cli("store", "export", "--database", "mydb", "--data-dir", str(gateway.data_dir)).stdout


async def write(
    gateway: RunningGateway, token: str, body: bytes = GOOD, db: str = "mydb"
) -> tuple[int, bytes]:
    """One v2 write with aiohttp; (status, body)."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{gateway.url}/api/v2/write?bucket={db}",
            data=body,
            headers={"Authorization": f"Token {token}"},
        ) as response,
    ):
        return response.status, await response.read()


async def assert_healthy(gateway: RunningGateway, before: bytes = b"") -> None:
    """A normal write gets 204 and the store holds exactly what was acknowledged, plus it."""
    assert (204, b"") == await write(gateway, gateway.token)
    assert before + GOOD == exported(gateway)
    assert gateway.process.poll() is None


async def metric(gateway: RunningGateway, name: str) -> float | None:
    """One sample from /metrics (name with labels, exactly as exposed)."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{gateway.url}/metrics") as response,
    ):
        text = await response.text()
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else None


async def until(check: object, timeout: float, interval: float = 0.05) -> float:
    """Await the async `check()` until it returns True; the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if await check():  # type: ignore[operator]
            return time.monotonic() - started
        await asyncio.sleep(interval)
    raise AssertionError(f"not true within {timeout} s")


async def read_until_closed(reader: asyncio.StreamReader, timeout: float) -> bytes:
    """Everything the server sends until it closes the connection (a reset counts as closed)."""
    try:
        return await asyncio.wait_for(reader.read(), timeout)
    except ConnectionResetError:
        return b""


# -- policy hot reload ----------------------------------------------------------------------------


def create_token(gateway: RunningGateway, name: str, *args: str) -> str:
    """`token create NAME` on the running gateway's policy; the new token."""
    result = cli("token", "create", name, *args, "--data-dir", str(gateway.data_dir))
    return result.stdout.decode().strip()


async def test_created_token_works_without_restart(gateway: RunningGateway) -> None:
    """A token created while the gateway runs is accepted within 2.5 s."""
    token = create_token(gateway, "ci", "--write", "mydb")

    async def accepted() -> bool:
        return (await write(gateway, token))[0] == 204

    assert await until(accepted, 2.5) < 2.5


async def test_revoked_token_is_refused_within_two_and_a_half_seconds(
    gateway: RunningGateway,
) -> None:
    """`token revoke` while the gateway runs: the token gets 401 within 2.5 s, no restart."""
    token = create_token(gateway, "ci", "--write", "mydb")

    async def status_is(expected: int) -> bool:
        return (await write(gateway, token))[0] == expected

    await until(lambda: status_is(204), 2.5)
    cli("token", "revoke", "ci", "--data-dir", str(gateway.data_dir))
    revoked_at = time.monotonic()
    await until(lambda: status_is(401), 3.0)
    assert time.monotonic() - revoked_at < 2.5


async def test_garbage_policy_is_refused_and_old_policy_stays(gateway: RunningGateway) -> None:
    """Garbage written over policy.toml: the admin token still works, the error is counted."""
    policy = gateway.data_dir / "policy.toml"
    policy.write_text("[[tokens]\nthis is not toml")

    async def counted() -> bool:
        return await metric(gateway, 'gateway_policy_reloads_total{result="error"}') == 1.0

    await until(counted, 2.5)
    await assert_healthy(gateway)


async def test_refused_reload_is_one_log_line_naming_the_file(gateway: RunningGateway) -> None:
    """The refusal is logged once, naming the policy file and the problem."""
    policy = gateway.data_dir / "policy.toml"
    policy.write_text('[[tokens]]\nname = "x"\nhash = "nope"\n')

    async def counted() -> bool:
        return await metric(gateway, 'gateway_policy_reloads_total{result="error"}') == 1.0

    await until(counted, 2.5)
    await asyncio.sleep(1.2)  # another poll: the same broken file is not reported again
    refusals = [
        json.loads(line)
        for line in gateway.stderr().splitlines()
        if "policy reload refused" in line
    ]
    assert 1 == len(refusals)
    assert str(policy) in refusals[0]["error"]
    assert 'key "hash"' in refusals[0]["error"]


async def test_sighup_reloads_at_once(gateway: RunningGateway) -> None:
    """SIGHUP reloads the policy (trigger "SIGHUP" in the log, result="ok" counted)."""
    os.kill(gateway.process.pid, signal.SIGHUP)

    async def counted() -> bool:
        return await metric(gateway, 'gateway_policy_reloads_total{result="ok"}') == 1.0

    assert await until(counted, 1.0) < 1.0

    async def logged() -> bool:  # log lines are written by a thread of their own, a moment later
        return '"trigger":"SIGHUP"' in gateway.stderr()

    await until(logged, 1.0)


async def test_expired_token_is_refused_without_restart(gateway: RunningGateway) -> None:
    """A token that expires while the gateway runs gets 401 from that instant."""
    expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3))
    token = create_token(gateway, "brief", "--write", "mydb", "--expires", expires)

    async def status_is(expected: int) -> bool:
        return (await write(gateway, token))[0] == expected

    await until(lambda: status_is(204), 2.5)
    await until(lambda: status_is(401), 5.0)


# -- slow clients ---------------------------------------------------------------------------------


async def test_slow_head_is_cut_off_while_others_are_served(gateway: RunningGateway) -> None:
    """A client dribbling its headers is disconnected at read_timeout; writes go on meanwhile."""
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    started = time.monotonic()
    writer.write(b"POST /api/v2/write?bucket=mydb HTTP/1.1\r\nHost: x\r\n")

    async def dribble() -> None:
        for _ in range(50):  # one header byte every 100 ms: never a complete head
            writer.write(b"X")
            await writer.drain()
            await asyncio.sleep(0.1)

    slow = asyncio.create_task(dribble())
    latencies = []
    for _ in range(5):
        sent = time.monotonic()
        assert (204, b"") == await write(gateway, gateway.token)
        latencies.append(time.monotonic() - sent)
        await asyncio.sleep(0.1)
    await read_until_closed(reader, 5.0)
    cut_after = time.monotonic() - started
    slow.cancel()
    writer.close()
    assert (True, True) == (max(latencies) < 0.5, READ_TIMEOUT_S - 0.1 < cut_after < 2.5)
    assert (5 * GOOD) == exported(gateway)


async def test_slow_body_gets_408_and_is_closed(gateway: RunningGateway) -> None:
    """A complete head but a body trickling in: 408 at read_timeout, then the connection closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    started = time.monotonic()
    writer.write(
        b"POST /api/v2/write?bucket=mydb HTTP/1.1\r\nHost: x\r\n"
        + f"Authorization: Token {gateway.token}\r\n".encode()
        + b"Content-Length: 1000\r\n\r\ncpu v=1"
    )

    async def dribble() -> None:
        for _ in range(50):
            writer.write(b"0")
            await writer.drain()
            await asyncio.sleep(0.1)

    slow = asyncio.create_task(dribble())
    answer = await read_until_closed(reader, 15.0)
    cut_after = time.monotonic() - started
    slow.cancel()
    writer.close()
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b'"code":"request timeout"' in answer
    assert READ_TIMEOUT_S - 0.1 < cut_after < 2.5  # 408 at 1 s, closed a second later
    await assert_healthy(gateway)


async def test_silent_connection_is_closed(gateway: RunningGateway) -> None:
    """A connection that never sends a byte is closed at read_timeout."""
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    started = time.monotonic()
    assert b"" == await read_until_closed(reader, 5.0)
    writer.close()
    assert READ_TIMEOUT_S - 0.1 < time.monotonic() - started < 2.5


async def test_idle_keep_alive_connection_is_not_a_slow_request(gateway: RunningGateway) -> None:
    """A keep-alive connection idle longer than read_timeout between requests still works."""
    request = (
        b"POST /api/v2/write?bucket=mydb HTTP/1.1\r\nHost: x\r\n"
        + f"Authorization: Token {gateway.token}\r\n".encode()
        + f"Content-Length: {len(GOOD)}\r\n\r\n".encode()
        + GOOD
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    writer.write(request)
    first = await reader.readuntil(b"\r\n\r\n")
    await asyncio.sleep(READ_TIMEOUT_S * 1.5)
    writer.write(request)
    second = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
    writer.close()
    assert (True, True) == (first.startswith(b"HTTP/1.1 204"), second.startswith(b"HTTP/1.1 204"))


async def test_too_many_concurrent_requests_get_503(gateway: RunningGateway) -> None:
    """Two slow requests fill max_concurrent_requests = 2: the third gets 503 + Retry-After."""
    head = (
        b"POST /api/v2/write?bucket=mydb HTTP/1.1\r\nHost: x\r\n"
        + f"Authorization: Token {gateway.token}\r\n".encode()
        + b"Content-Length: 100\r\n\r\n"
    )
    held = [await asyncio.open_connection("127.0.0.1", gateway.port) for _ in range(2)]
    for _, writer in held:
        writer.write(head)
        await writer.drain()
    await asyncio.sleep(0.2)  # both are in their handlers, waiting for the body
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{gateway.url}/api/v2/write?bucket=mydb",
            data=GOOD,
            headers={"Authorization": f"Token {gateway.token}"},
        ) as response,
    ):
        third = (response.status, response.headers.get("Retry-After"), await response.json())
    answers = [await read_until_closed(reader, 15.0) for reader, _ in held]
    for _, writer in held:
        writer.close()
    assert (503, "1", "unavailable") == (third[0], third[1], third[2]["code"])
    assert [True, True] == [answer.startswith(b"HTTP/1.1 408 ") for answer in answers]
    await assert_healthy(gateway)


# -- malformed HTTP -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(b"GARBAGE\r\n\r\n", id="garbage-request-line"),
        pytest.param(
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64, id="tls-hello"
        ),
        pytest.param(b"POST /write HTTP/1.1\r\nHost x\r\n\r\n", id="header-without-colon"),
        pytest.param(b"GET /ping HTTP/9.9\r\nHost: x\r\n\r\n", id="bad-version"),
        pytest.param(
            b"POST /api/v2/write?bucket=mydb HTTP/1.1\r\nHost: x\r\n"
            b"Content-Length: 5\r\nContent-Length: 7\r\n\r\ncpu v=1",
            id="two-content-lengths",
        ),
        pytest.param(
            b"POST /api/v2/write?bucket=mydb HTTP/1.1\r\nHost: x\r\n"
            b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",
            id="bad-chunk-size",
        ),
    ],
)
async def test_malformed_http_gets_400(gateway: RunningGateway, request_bytes: bytes) -> None:
    """Malformed HTTP over a raw socket: 400 as JSON, connection closed, gateway unharmed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    writer.write(request_bytes)
    answer = await read_until_closed(reader, 5.0)
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert re.match(rb"HTTP/1\.[01] 400 ", head)
    assert "invalid" == json.loads(body)["code"]
    await assert_healthy(gateway)


async def test_one_megabyte_authorization_header_is_refused_without_echo(
    gateway: RunningGateway,
) -> None:
    """A 1 MB Authorization header: 400 naming the limit; none of its bytes come back or are
    logged."""
    secret = "igw_" + "s" * 1_000_000
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    writer.write(
        b"POST /api/v2/write?bucket=mydb HTTP/1.1\r\nHost: x\r\n"
        + f"Authorization: Token {secret}\r\n\r\n".encode()
    )
    with contextlib.suppress(ConnectionError):  # answered and closed before reading it all
        await writer.drain()
    answer = await read_until_closed(reader, 5.0)
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert re.match(rb"HTTP/1\.[01] 400 ", head)
    assert (
        "the request line or a header field is too long (limit 65536 bytes)"
        == (json.loads(body)["message"])
    )
    assert "igw_sss" not in gateway.stderr()
    await assert_healthy(gateway)
