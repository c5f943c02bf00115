"""Known traffic in, exact metric values out (SPEC 7)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry

from gateway.observability import MAX_DATABASE_LABELS, OTHER, Metrics
from tests.http.conftest import EXPIRED, READER, WRITER, auth, state_of

T = 1_699_999_990_000_000_000


def sample(client: Any, name: str, **labels: str) -> float:
    """A metric sample's value (0 when absent)."""
    value = state_of(client).metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def test_known_traffic_gives_exact_counters(gateway: Any) -> None:
    """Three good lines, one bad line, one 401 and one 403 are counted exactly."""
    client = await gateway()
    good = f"cpu v=1 {T}\ncpu v=2 {T}\n".encode()
    await client.post("/api/v2/write?bucket=mydb", data=good, headers=auth(WRITER))
    await client.post(
        "/api/v2/write?bucket=mydb", data=f"cpu v=3 {T}\ncpu v=\n".encode(), headers=auth(WRITER)
    )
    await client.post("/api/v2/write?bucket=mydb", data=b"cpu v=1", headers=auth(EXPIRED))
    await client.post("/api/v2/write?bucket=mydb", data=b"cpu v=1", headers=auth(READER))
    await client.get("/ping")
    accepted = sample(
        client, "gateway_write_lines_total", database="mydb", token="writer", result="accepted"
    )
    rejected = sample(
        client, "gateway_write_lines_total", database="mydb", token="writer", result="rejected"
    )
    assert (3.0, 1.0) == (accepted, rejected)
    assert float(len(good) + len(f"cpu v=3 {T}\ncpu v=\n")) == sample(
        client, "gateway_write_bytes_total", database="mydb", token="writer"
    )
    assert 1.0 == sample(client, "gateway_auth_failures_total", reason="expired")
    assert 1.0 == sample(client, "gateway_auth_failures_total", reason="forbidden")
    assert 1.0 == sample(client, "gateway_http_requests_total", endpoint="v2_write", status="204")
    assert 1.0 == sample(client, "gateway_http_requests_total", endpoint="v2_write", status="400")
    assert 1.0 == sample(client, "gateway_http_requests_total", endpoint="v2_write", status="401")
    assert 1.0 == sample(client, "gateway_http_requests_total", endpoint="v2_write", status="403")
    assert 1.0 == sample(client, "gateway_http_requests_total", endpoint="ping", status="204")
    assert 4.0 == sample(client, "gateway_http_request_duration_seconds_count", endpoint="v2_write")
    assert 1.0 == sample(client, "gateway_write_rejections_total", reason="parse")
    assert 2.0 == sample(client, "gateway_write_rejections_total", reason="auth")


async def test_endpoint_labels(gateway: Any) -> None:
    """Every endpoint has its label; unknown paths count as "other"."""
    client = await gateway()
    await client.post(f"/write?db=mydb&p={WRITER}", data=f"cpu v=1 {T}")
    await client.get("/health")
    await client.get("/ready")
    await client.get("/metrics")
    await client.get("/query?q=SHOW+DATABASES", headers=auth(WRITER))
    await client.get("/api/v2/query")
    await client.get("/nowhere")
    for endpoint in ("v1_write", "health", "ready", "metrics", "query", "v2_query", "other"):
        total = sum(
            s.value
            for m in state_of(client).metrics.registry.collect()
            if m.name == "gateway_http_requests"
            for s in m.samples
            if s.name == "gateway_http_requests_total" and s.labels["endpoint"] == endpoint
        )
        assert 1.0 == total, endpoint


def test_database_labels_are_capped() -> None:
    """Beyond MAX_DATABASE_LABELS distinct databases, new names count as "other"."""
    metrics = Metrics(CollectorRegistry())
    labels = [metrics.database_label(f"db{i}") for i in range(MAX_DATABASE_LABELS + 5)]
    assert MAX_DATABASE_LABELS == len(set(labels) - {OTHER})
    assert OTHER == labels[-1]
    assert "db0" == metrics.database_label("db0")


async def test_no_token_value_in_metrics(gateway: Any) -> None:
    """Token labels carry names, never token values."""
    client = await gateway()
    await client.post("/api/v2/write?bucket=mydb", data=f"cpu v=1 {T}", headers=auth(WRITER))
    text = await (await client.get("/metrics")).text()
    assert 'token="writer"' in text
    assert WRITER not in text


async def test_implausible_timestamps_count_as_precision_rejections(gateway: Any) -> None:
    """A request whose only bad lines have implausible timestamps is rejected for "precision"."""
    client = await gateway()
    await client.post("/api/v2/write?bucket=mydb", data=b"cpu v=1 1700000000", headers=auth(WRITER))
    await client.post("/api/v2/write?bucket=mydb", data=b"cpu v=", headers=auth(WRITER))
    assert 1.0 == sample(client, "gateway_write_rejections_total", reason="precision")
    assert 1.0 == sample(client, "gateway_write_rejections_total", reason="parse")
