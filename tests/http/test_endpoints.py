"""/ping, /health, /ready, /metrics, /query, /api/v2/query, unknown paths and methods."""

from __future__ import annotations

from typing import Any

from tests.http.conftest import READER, WRITER, auth, state_of


async def test_ping(gateway: Any) -> None:
    """GET and HEAD /ping answer 204 without auth."""
    client = await gateway()
    assert 204 == (await client.get("/ping")).status
    assert 204 == (await client.head("/ping")).status


async def test_ping_verbose(gateway: Any) -> None:
    """?verbose=true answers 200 with the version."""
    client = await gateway()
    response = await client.get("/ping?verbose=true")
    assert 200 == response.status
    assert {"version": state_of(client).version} == await response.json()


async def test_health(gateway: Any) -> None:
    """/health passes with the documented fields."""
    client = await gateway()
    response = await client.get("/health")
    assert 200 == response.status
    body = await response.json()
    assert "influx-gateway" == body["name"]
    assert "pass" == body["status"]
    assert "ready for writes" == body["message"]
    assert isinstance(body["checks"], list)


async def test_health_fails_while_shutting_down(gateway: Any) -> None:
    """/health is 503 fail while writes are refused; writes get 503."""
    client = await gateway()
    state_of(client).shutting_down = True
    response = await client.get("/health")
    assert 503 == response.status
    assert "fail" == (await response.json())["status"]
    write = await client.post("/api/v2/write?bucket=mydb", data=b"cpu v=1", headers=auth(WRITER))
    assert 503 == write.status
    assert "Retry-After" in write.headers


async def test_ready(gateway: Any) -> None:
    """/ready is 200 once storage is open."""
    client = await gateway()
    assert 200 == (await client.get("/ready")).status
    state_of(client).ready = False
    assert 503 == (await client.get("/ready")).status


async def test_metrics_exposition(gateway: Any) -> None:
    """/metrics serves the Prometheus text format with the gateway_ metrics."""
    client = await gateway()
    await client.get("/ping")
    response = await client.get("/metrics")
    assert 200 == response.status
    assert response.headers["Content-Type"].startswith("text/plain")
    text = await response.text()
    assert 'gateway_http_requests_total{endpoint="ping",status="204"} 1.0' in text


async def test_v2_query_not_supported(gateway: Any) -> None:
    """/api/v2/query: 501 with the documented body."""
    client = await gateway()
    response = await client.post("/api/v2/query", data=b"{}", headers=auth(WRITER))
    assert 501 == response.status
    assert {
        "code": "not implemented",
        "message": "/api/v2/query is not supported; query with SQL or InfluxQL (Flight, or /query)",
    } == await response.json()


async def test_create_database_is_answered_locally(gateway: Any) -> None:
    """CREATE DATABASE (Telegraf's v1 start-up) succeeds when the token may write it."""
    client = await gateway()
    response = await client.post(
        "/query", data={"q": 'CREATE DATABASE "mydb"'}, headers=auth(WRITER)
    )
    assert 200 == response.status
    assert {"results": [{"statement_id": 0}]} == await response.json()
    response = await client.get("/query?q=CREATE+DATABASE+edge_1", headers=auth(WRITER))
    assert {"results": [{"statement_id": 0}]} == await response.json()


async def test_create_database_forbidden(gateway: Any) -> None:
    """CREATE DATABASE for a database the token may not write: 403."""
    client = await gateway()
    response = await client.post("/query?q=CREATE DATABASE other", headers=auth(WRITER))
    assert 403 == response.status
    assert "other" in (await response.json())["error"]


async def test_query_without_upstream(gateway: Any) -> None:
    """Other InfluxQL with no upstream: 501 {"error"} saying how to query instead."""
    client = await gateway()
    response = await client.get("/query?db=mydb&q=SELECT+*+FROM+cpu", headers=auth(READER))
    assert 501 == response.status
    error = (await response.json())["error"]
    assert 'no upstream serves database "mydb"' in error
    assert 'api "v1", "v2" or "v3"' in error
    assert "store export --database DB" in error


async def test_query_without_read_permission(gateway: Any) -> None:
    """A token without read permission on db: 403."""
    client = await gateway()
    response = await client.get("/query?db=other&q=SELECT+1", headers=auth(READER))
    assert 403 == response.status


async def test_query_unauthorized(gateway: Any) -> None:
    """/query without a token: 401."""
    client = await gateway()
    response = await client.get("/query?db=mydb&q=SELECT+1")
    assert 401 == response.status
    assert {"error": "unauthorized access"} == await response.json()


async def test_unknown_path_is_json_404(gateway: Any) -> None:
    """An unknown path: 404 JSON."""
    client = await gateway()
    response = await client.get("/nope")
    assert 404 == response.status
    assert "application/json; charset=utf-8" == response.headers["Content-Type"]
    assert "not found" == (await response.json())["code"]


async def test_wrong_method_is_json_405(gateway: Any) -> None:
    """A wrong method: 405 JSON with Allow."""
    client = await gateway()
    response = await client.get("/api/v2/write?bucket=mydb", headers=auth(WRITER))
    assert 405 == response.status
    assert "method not allowed" == (await response.json())["code"]
    assert "POST" in response.headers["Allow"]


async def test_request_ids_are_carried_into_related_log_lines(gateway: Any) -> None:
    """A line logged deep inside a write (not the access line) carries the request's ids."""
    import structlog

    client = await gateway()
    state = state_of(client)
    original = state.destinations.append

    async def logging_append(record: Any) -> None:
        structlog.get_logger("test").info("inside the write")
        await original(record)

    state.destinations.append = logging_append  # type: ignore[method-assign]
    with structlog.testing.capture_logs(
        processors=[structlog.contextvars.merge_contextvars]
    ) as logs:
        await client.post(
            "/api/v2/write?bucket=mydb",
            data=b"cpu v=1",
            headers={**auth(WRITER), "X-Request-Id": "rid-1", "Zap-Trace-Span": "span-9"},
        )
    inside = [entry for entry in logs if entry["event"] == "inside the write"]
    assert [("rid-1", "span-9")] == [(e.get("request_id"), e.get("trace_span")) for e in inside]
