"""POST /write (v1): parameters, auth forms, db/rp mapping and the {"error"} shape."""

from __future__ import annotations

from typing import Any

import pytest

from tests.http.conftest import WRITER, auth, basic, exported

T = 1_699_999_990


async def test_v1_write_with_u_p(gateway: Any) -> None:
    """u/p query parameters authenticate (p is the token)."""
    client = await gateway()
    response = await client.post(f"/write?db=mydb&u=x&p={WRITER}&precision=s", data=f"cpu v=1 {T}")
    assert 204 == response.status
    assert f"cpu v=1 {T * 10**9}\n".encode() == exported(client, "mydb")


async def test_v1_write_with_basic_auth(gateway: Any) -> None:
    """Basic auth (Telegraf's outputs.influxdb) authenticates."""
    client = await gateway()
    response = await client.post(
        "/write?db=mydb&precision=s", data=f"cpu v=1 {T}", headers=basic("telegraf", WRITER)
    )
    assert 204 == response.status


async def test_v1_missing_db(gateway: Any) -> None:
    """No db: 400 database is required, with X-Influxdb-Error."""
    client = await gateway()
    response = await client.post("/write", data=b"cpu v=1", headers=auth(WRITER))
    assert 400 == response.status
    assert b'{"error":"database is required"}' == await response.read()
    assert "database is required" == response.headers["X-Influxdb-Error"]


@pytest.mark.parametrize(
    ("rp", "database"), [("", "mydb"), ("autogen", "mydb"), ("default", "mydb")]
)
async def test_v1_default_rp_maps_to_db(gateway: Any, rp: str, database: str) -> None:
    """rp empty/autogen/default writes to db itself."""
    client = await gateway()
    response = await client.post(
        f"/write?db=mydb&rp={rp}&precision=s", data=f"cpu v=1 {T}", headers=auth(WRITER)
    )
    assert 204 == response.status
    assert exported(client, database)


async def test_v1_other_rp_maps_to_db_slash_rp(gateway: Any) -> None:
    """Another rp writes to the database "db/rp"."""
    client = await gateway()
    response = await client.post(
        "/write?db=db&rp=rp&precision=s", data=f"cpu v=1 {T}", headers=auth(WRITER)
    )
    assert 204 == response.status
    assert f"cpu v=1 {T * 10**9}\n".encode() == exported(client, "db/rp")


async def test_v1_rewrite_rule(gateway: Any) -> None:
    """[[rewrite]] rules apply to the v1 name; permission is checked on the result."""
    client = await gateway("[[rewrite]]\nmatch = '^(.+)/weekly$'\ndatabase = 'edge_\\1'\n")
    response = await client.post(
        "/write?db=x&rp=weekly&precision=s", data=f"cpu v=1 {T}", headers=auth(WRITER)
    )
    assert 204 == response.status
    assert exported(client, "edge_x")


@pytest.mark.parametrize(
    ("precision", "factor"), [("n", 1), ("u", 1000), ("ms", 10**6), ("h", 3600 * 10**9)]
)
async def test_v1_precisions(gateway: Any, precision: str, factor: int) -> None:
    """v1 precision spellings n/u/ms/.../h are honoured."""
    client = await gateway()
    value = 1_699_999_990 * 10**9 // factor
    response = await client.post(
        f"/write?db=mydb&precision={precision}", data=f"cpu v=1 {value}", headers=auth(WRITER)
    )
    assert 204 == response.status
    assert f"cpu v=1 {value * factor}\n".encode() == exported(client, "mydb")


async def test_v1_bad_precision(gateway: Any) -> None:
    """An unknown v1 precision: 400 naming it."""
    client = await gateway()
    response = await client.post(
        "/write?db=mydb&precision=x", data=b"cpu v=1", headers=auth(WRITER)
    )
    assert 400 == response.status
    assert '"x"' in (await response.json())["error"]


async def test_v1_unauthorized(gateway: Any) -> None:
    """v1 401 uses the {"error"} shape."""
    client = await gateway()
    response = await client.post("/write?db=mydb", data=b"cpu v=1")
    assert 401 == response.status
    assert {"error": "unauthorized access"} == await response.json()
    assert "unauthorized access" == response.headers["X-Influxdb-Error"]


async def test_v1_partial_write_uses_the_same_text(gateway: Any) -> None:
    """v1 line errors carry the v2 text in "error"; the header has its first line."""
    client = await gateway()
    response = await client.post(
        "/write?db=mydb&precision=s", data=f"cpu v=1 {T}\ncpu\n", headers=auth(WRITER)
    )
    assert 400 == response.status
    error = (await response.json())["error"]
    assert error.startswith(
        "partial write of line protocol occurred:\n  errors encountered on line(s):\n"
        "  error parsing line 2 (1-based): "
    )
    assert "partial write of line protocol occurred:" == response.headers["X-Influxdb-Error"]
