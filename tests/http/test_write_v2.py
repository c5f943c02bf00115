"""POST /api/v2/write: every status row of SPEC 2.1 and the order of checks."""

from __future__ import annotations

import asyncio
import gzip
from typing import Any

import pytest

from gateway.errors import StorageFullError
from tests.http.conftest import ALL, EXPIRED, NOW_NS, WRITER, auth, basic, exported, state_of

JSON_TYPE = "application/json; charset=utf-8"
T = 1_699_999_990_000_000_000  # a plausible ns timestamp, 10 s before the fixed clock


async def test_write_is_accepted_and_stored(gateway: Any) -> None:
    """A valid write answers 204 and the point is in the store, byte for byte."""
    client = await gateway()
    body = f"cpu,host=a usage=0.5 {T}\nmem,host=a used=1i {T}\n".encode()
    response = await client.post("/api/v2/write?bucket=mydb", data=body, headers=auth(WRITER))
    assert 204 == response.status
    assert body == exported(client, "mydb")


async def test_missing_bucket(gateway: Any) -> None:
    """No bucket: 400 with the documented body, byte for byte."""
    client = await gateway()
    response = await client.post("/api/v2/write", data=b"cpu v=1", headers=auth(WRITER))
    assert 400 == response.status
    assert JSON_TYPE == response.headers["Content-Type"]
    assert b'{"code":"invalid","message":"missing bucket value"}' == await response.read()


async def test_empty_bucket(gateway: Any) -> None:
    """An empty bucket is the same as a missing one."""
    client = await gateway()
    response = await client.post("/api/v2/write?bucket=", data=b"cpu v=1", headers=auth(WRITER))
    assert {"code": "invalid", "message": "missing bucket value"} == await response.json()


async def test_empty_org_is_invalid(gateway: Any) -> None:
    """org is ignored but must not be empty when present."""
    client = await gateway()
    response = await client.post(
        "/api/v2/write?bucket=mydb&org=", data=b"cpu v=1", headers=auth(WRITER)
    )
    assert 400 == response.status
    assert "invalid" == (await response.json())["code"]
    assert "org" in (await response.json())["message"]


async def test_org_and_org_id_are_ignored(gateway: Any) -> None:
    """A non-empty org and any orgID are accepted and ignored."""
    client = await gateway()
    response = await client.post(
        "/api/v2/write?bucket=mydb&org=anything&orgID=123",
        data=f"cpu v=1 {T}",
        headers=auth(WRITER),
    )
    assert 204 == response.status


async def test_unknown_precision(gateway: Any) -> None:
    """An unknown precision: 400 with the unknown variant message, byte for byte."""
    client = await gateway()
    response = await client.post(
        "/api/v2/write?bucket=mydb&precision=u", data=b"cpu v=1", headers=auth(WRITER)
    )
    assert 400 == response.status
    assert (
        b'{"code":"invalid","message":"failed to deserialize org/bucket/precision in request: '
        b'unknown variant `u`, expected one of `ns`, `us`, `ms`, `s`, `m`, `h`"}'
    ) == await response.read()


@pytest.mark.parametrize(
    ("precision", "value", "stored"),
    [
        ("ns", T, T),
        ("us", T // 1000, T),
        ("ms", T // 10**6, T // 10**6 * 10**6),
        ("s", 1_699_999_990, 1_699_999_990 * 10**9),
        ("m", 28_333_333, 28_333_333 * 60 * 10**9),
        ("h", 472_222, 472_222 * 3600 * 10**9),
    ],
)
async def test_every_precision(gateway: Any, precision: str, value: int, stored: int) -> None:
    """Each precision is honoured; the store exports ns."""
    client = await gateway()
    response = await client.post(
        f"/api/v2/write?bucket=mydb&precision={precision}",
        data=f"cpu v=1 {value}",
        headers=auth(WRITER),
    )
    assert 204 == response.status
    assert f"cpu v=1 {stored}\n".encode() == exported(client, "mydb")


async def test_missing_timestamp_gets_receive_time(gateway: Any) -> None:
    """A line without a timestamp is stamped with the receive time in the request precision."""
    client = await gateway()
    response = await client.post(
        "/api/v2/write?bucket=mydb&precision=s", data=b"cpu v=1", headers=auth(WRITER)
    )
    assert 204 == response.status
    assert f"cpu v=1 {NOW_NS}\n".encode() == exported(client, "mydb")


@pytest.mark.parametrize(
    ("header", "reason"),
    [({}, "missing"), (auth("igw_nope"), "unknown"), (auth(EXPIRED), "expired")],
)
async def test_unauthorized(gateway: Any, header: dict[str, str], reason: str) -> None:
    """No token, an unknown one or an expired one: 401 unauthorized access, counted by reason."""
    client = await gateway()
    response = await client.post("/api/v2/write?bucket=mydb", data=b"cpu v=1", headers=header)
    assert 401 == response.status
    assert {"code": "unauthorized", "message": "unauthorized access"} == await response.json()
    metric = state_of(client).metrics.auth_failures.labels(reason)
    assert 1.0 == metric._value.get()


@pytest.mark.parametrize("scheme", ["Bearer", "Token"])
async def test_bearer_and_token_are_equivalent(gateway: Any, scheme: str) -> None:
    """Authorization: Bearer and Token both work."""
    client = await gateway()
    response = await client.post(
        "/api/v2/write?bucket=mydb",
        data=f"cpu v=1 {T}",
        headers={"Authorization": f"{scheme} {WRITER}"},
    )
    assert 204 == response.status


async def test_basic_auth_with_token_as_password(gateway: Any) -> None:
    """Basic auth with the token as the password is accepted."""
    client = await gateway()
    response = await client.post(
        "/api/v2/write?bucket=mydb", data=f"cpu v=1 {T}", headers=basic("any", WRITER)
    )
    assert 204 == response.status


async def test_auth_comes_before_parameters(gateway: Any) -> None:
    """Order of checks: a bad token is 401 even when the bucket is missing."""
    client = await gateway()
    response = await client.post("/api/v2/write", data=b"cpu v=1")
    assert 401 == response.status


async def test_forbidden_names_the_database(gateway: Any) -> None:
    """A token without write permission: 403 naming the database."""
    client = await gateway()
    response = await client.post(
        "/api/v2/write?bucket=other", data=b"cpu v=1", headers=auth(WRITER)
    )
    assert 403 == response.status
    body = await response.json()
    assert "forbidden" == body["code"]
    assert '"other"' in body["message"]


async def test_forbidden_comes_before_body_checks(gateway: Any) -> None:
    """Order of checks: 403 before the body is even looked at."""
    client = await gateway()
    response = await client.post(
        "/api/v2/write?bucket=other",
        data=b"\xff",
        headers={**auth(WRITER), "Content-Encoding": "br"},
    )
    assert 403 == response.status


async def test_invalid_database_name(gateway: Any) -> None:
    """A bucket that is not a valid database name: 400 naming it."""
    client = await gateway()
    response = await client.post("/api/v2/write?bucket=a%20b", data=b"cpu v=1", headers=auth(ALL))
    assert 400 == response.status
    assert "a b" in (await response.json())["message"]


async def test_no_route(gateway: Any) -> None:
    """A database that no destination takes: 404 no route, nothing stored."""
    client = await gateway('[store]\ndatabases = ["mydb"]\n')
    response = await client.post(
        "/api/v2/write?bucket=edge_1", data=f"cpu v=1 {T}", headers=auth(WRITER)
    )
    assert 404 == response.status
    assert {
        "code": "not found",
        "message": 'no route for database "edge_1"',
    } == await response.json()


async def test_unacceptable_content_encoding(gateway: Any) -> None:
    """An encoding other than gzip/identity: 400 naming it."""
    client = await gateway()
    response = await client.post(
        "/api/v2/write?bucket=mydb", data=b"x", headers={**auth(WRITER), "Content-Encoding": "br"}
    )
    assert 400 == response.status
    assert {
        "code": "invalid",
        "message": "unacceptable content-encoding: br",
    } == await response.json()


async def test_gzip_body(gateway: Any) -> None:
    """A gzip body is decompressed; the decompressed bytes are counted."""
    client = await gateway()
    body = f"cpu v=1 {T}\n".encode()
    response = await client.post(
        "/api/v2/write?bucket=mydb",
        data=gzip.compress(body),
        headers={**auth(WRITER), "Content-Encoding": "gzip"},
    )
    assert 204 == response.status
    assert body == exported(client, "mydb")
    assert len(body) == state_of(client).metrics.write_bytes.labels("mydb", "writer")._value.get()


@pytest.mark.parametrize("data", [b"not gzip at all", gzip.compress(b"cpu v=1 1\n" * 100)[:-20]])
async def test_corrupt_gzip(gateway: Any, data: bytes) -> None:
    """A corrupt or truncated gzip stream: 400 invalid."""
    client = await gateway()
    response = await client.post(
        "/api/v2/write?bucket=mydb", data=data, headers={**auth(WRITER), "Content-Encoding": "gzip"}
    )
    assert 400 == response.status
    body = await response.json()
    assert "invalid" == body["code"]
    assert "gzip" in body["message"]


async def test_raw_body_too_large(gateway: Any) -> None:
    """A body above max_body_bytes: 413."""
    client = await gateway(max_body_bytes=1000)
    response = await client.post(
        "/api/v2/write?bucket=mydb", data=b"c v=1\n" * 200, headers=auth(WRITER)
    )
    assert 413 == response.status
    assert "request too large" == (await response.json())["code"]


async def _chunks(parts: list[bytes]) -> Any:
    for part in parts:
        yield part


async def test_chunked_body_is_read_whole(gateway: Any) -> None:
    """A body sent with Transfer-Encoding: chunked (no Content-Length), split mid-line: every
    line arrives, in order."""
    client = await gateway()
    body = b"".join(f"cpu,host=h{i} v={i}i {T + i}\n".encode() for i in range(2000))
    parts = [body[i : i + 997] for i in range(0, len(body), 997)]
    response = await client.post(
        "/api/v2/write?bucket=mydb", data=_chunks(parts), headers=auth(WRITER)
    )
    assert 204 == response.status
    assert body == exported(client, "mydb")


async def test_chunked_body_too_large(gateway: Any) -> None:
    """A chunked body (no Content-Length to refuse it early) that goes above max_body_bytes:
    413, nothing stored."""
    client = await gateway(max_body_bytes=10_000)
    parts = [f"c v={i}i {T}\n".encode() * 50 for i in range(40)]
    response = await client.post(
        "/api/v2/write?bucket=mydb", data=_chunks(parts), headers=auth(WRITER)
    )
    assert 413 == response.status
    assert "request too large" == (await response.json())["code"]
    assert b"" == exported(client, "mydb")


async def test_gzip_bomb(gateway: Any) -> None:
    """A small gzip body that inflates above max_body_bytes: 413, nothing stored."""
    client = await gateway(max_body_bytes=100_000)
    bomb = gzip.compress(b"c v=1 1\n" * 1_000_000)
    assert len(bomb) < 100_000
    response = await client.post(
        "/api/v2/write?bucket=mydb", data=bomb, headers={**auth(WRITER), "Content-Encoding": "gzip"}
    )
    assert 413 == response.status
    assert b"" == exported(client, "mydb")


@pytest.mark.parametrize("data", [b"", b"\n\n", b"# just a comment\n\n# another\n"])
async def test_no_data(gateway: Any, data: bytes) -> None:
    """An empty body or only blank/comment lines: 400 no data in request body."""
    client = await gateway()
    response = await client.post("/api/v2/write?bucket=mydb", data=data, headers=auth(WRITER))
    assert 400 == response.status
    assert {"code": "invalid", "message": "no data in request body"} == await response.json()


async def test_invalid_utf8(gateway: Any) -> None:
    """A body that is not UTF-8: 400 naming the line."""
    client = await gateway()
    response = await client.post(
        "/api/v2/write?bucket=mydb", data=b"cpu v=1\ncpu,h=\xff v=2\n", headers=auth(WRITER)
    )
    assert 400 == response.status
    body = await response.json()
    assert "invalid" == body["code"]
    assert "line 2" in body["message"]


async def test_partial_write(gateway: Any) -> None:
    """Valid lines are stored; 400 lists the bad ones with 1-based numbers."""
    client = await gateway()
    data = f"cpu v=1 {T}\ncpu v= {T}\n# comment\ncpu v=2 {T}\ncpu,t=1 {T}\n".encode()
    response = await client.post("/api/v2/write?bucket=mydb", data=data, headers=auth(WRITER))
    assert 400 == response.status
    body = await response.json()
    assert ["code", "line", "message"] == list(body)
    assert "invalid" == body["code"]
    assert 2 == body["line"]
    lines = body["message"].split("\n")
    assert "partial write of line protocol occurred:" == lines[0]
    assert "  errors encountered on line(s):" == lines[1]
    assert lines[2].startswith("  error parsing line 2 (1-based): ")
    assert lines[3].startswith("  error parsing line 5 (1-based): ")
    assert 4 == len(lines)
    assert f"cpu v=1 {T}\ncpu v=2 {T}\n".encode() == exported(client, "mydb")
    metrics = state_of(client).metrics.write_lines
    assert 2.0 == metrics.labels("mydb", "writer", "accepted")._value.get()
    assert 2.0 == metrics.labels("mydb", "writer", "rejected")._value.get()


async def test_all_lines_bad(gateway: Any) -> None:
    """When no line is accepted the prefix is 'failed to parse line protocol:'."""
    client = await gateway()
    response = await client.post("/api/v2/write?bucket=mydb", data=b"cpu\n", headers=auth(WRITER))
    assert 400 == response.status
    body = await response.json()
    assert 1 == body["line"]
    assert body["message"].startswith(
        "failed to parse line protocol:\n  errors encountered on line(s):\n  error parsing line 1 (1-based): "
    )


async def test_partial_writes_off_stores_nothing(gateway: Any) -> None:
    """partial_writes = false: one bad line rejects the whole request."""
    client = await gateway(partial_writes=False)
    data = f"cpu v=1 {T}\ncpu v=\n".encode()
    response = await client.post("/api/v2/write?bucket=mydb", data=data, headers=auth(WRITER))
    assert 400 == response.status
    assert (await response.json())["message"].startswith("failed to parse line protocol:")
    assert b"" == exported(client, "mydb")


async def test_at_most_100_errors_listed(gateway: Any) -> None:
    """The message lists the first 100 errors only."""
    client = await gateway()
    response = await client.post(
        "/api/v2/write?bucket=mydb", data=b"bad\n" * 250, headers=auth(WRITER)
    )
    message = (await response.json())["message"]
    assert 100 == message.count("error parsing line")
    assert "error parsing line 100 (1-based)" in message
    assert "error parsing line 101 (1-based)" not in message


async def test_implausible_timestamp_hint(gateway: Any) -> None:
    """A seconds timestamp sent as ns is rejected with a precision hint."""
    client = await gateway()
    response = await client.post(
        "/api/v2/write?bucket=mydb", data=b"cpu v=1 1700000000", headers=auth(WRITER)
    )
    assert 400 == response.status
    assert (
        "error parsing line 1 (1-based): timestamp 1700000000 with precision=ns is "
        "1970-01-01T00:00:01.7Z; did you mean precision=s?"
    ) in (await response.json())["message"]


async def test_too_many_lines(gateway: Any) -> None:
    """More lines than server.max_lines: 413, nothing stored."""
    client = await gateway(max_lines=10)
    data = "".join(f"cpu v={i} {T}\n" for i in range(11)).encode()
    response = await client.post("/api/v2/write?bucket=mydb", data=data, headers=auth(WRITER))
    assert 413 == response.status
    assert b"" == exported(client, "mydb")


async def test_storage_full_is_503_with_retry_after(gateway: Any) -> None:
    """When storage refuses the append: 503 unavailable with Retry-After."""
    client = await gateway()

    async def full(record: object) -> None:
        raise StorageFullError("no space left on device")

    state_of(client).destinations.append = full  # type: ignore[method-assign]
    response = await client.post(
        "/api/v2/write?bucket=mydb", data=f"cpu v=1 {T}", headers=auth(WRITER)
    )
    assert 503 == response.status
    assert "unavailable" == (await response.json())["code"]
    assert int(response.headers["Retry-After"]) >= 1


async def test_internal_error_never_leaks(gateway: Any) -> None:
    """A bug answers 500 internal error without a stack trace."""
    client = await gateway()

    async def broken(record: object) -> None:
        raise RuntimeError("secret internals")

    state_of(client).destinations.append = broken  # type: ignore[method-assign]
    response = await client.post(
        "/api/v2/write?bucket=mydb", data=f"cpu v=1 {T}", headers=auth(WRITER)
    )
    assert 500 == response.status
    assert {"code": "internal error", "message": "internal error"} == await response.json()


async def test_concurrency_limit(gateway: Any) -> None:
    """Requests beyond max_concurrent_requests get 503 with Retry-After."""
    client = await gateway(max_concurrent_requests=1)
    release = asyncio.Event()
    state = state_of(client)
    original = state.destinations.append

    async def slow(record: Any) -> None:
        await release.wait()
        await original(record)

    state.destinations.append = slow  # type: ignore[method-assign]
    first = asyncio.create_task(
        client.post("/api/v2/write?bucket=mydb", data=f"cpu v=1 {T}", headers=auth(WRITER))
    )
    while state.in_flight == 0:
        await asyncio.sleep(0.001)
    second = await client.post(
        "/api/v2/write?bucket=mydb", data=f"cpu v=2 {T}", headers=auth(WRITER)
    )
    assert 503 == second.status
    assert "Retry-After" in second.headers
    release.set()
    assert 204 == (await first).status


async def test_response_headers_and_request_id_echo(gateway: Any) -> None:
    """Every response carries the version, build and the echoed request id."""
    client = await gateway()
    response = await client.post(
        "/api/v2/write?bucket=mydb",
        data=f"cpu v=1 {T}",
        headers={**auth(WRITER), "X-Request-Id": "abc-123"},
    )
    assert "abc-123" == response.headers["X-Request-Id"]
    assert "influx-gateway" == response.headers["X-Influxdb-Build"]
    assert response.headers["X-Influxdb-Version"]
    other = await client.get("/ping", headers={"Request-Id": "r-9"})
    assert "r-9" == other.headers["X-Request-Id"]


async def test_accepted_lines_are_counted(gateway: Any) -> None:
    """gateway_write_lines_total and gateway_write_bytes_total count accepted traffic exactly."""
    client = await gateway()
    data = f"cpu v=1 {T}\ncpu v=2 {T}\ncpu v=3 {T}\n".encode()
    await client.post("/api/v2/write?bucket=mydb", data=data, headers=auth(WRITER))
    metrics = state_of(client).metrics
    assert 3.0 == metrics.write_lines.labels("mydb", "writer", "accepted")._value.get()
    assert float(len(data)) == metrics.write_bytes.labels("mydb", "writer")._value.get()
    text = (await (await client.get("/metrics")).read()).decode()
    assert 'gateway_write_lines_total{database="mydb",result="accepted",token="writer"} 3.0' in text
    assert WRITER not in text
