"""The real upstream servers (influxd 1.x, VictoriaMetrics) and the helpers that read them back.

These pin down what each real upstream stores for a given write, so gateway tests can
compare point by point. See tests/realservers.py for the VictoriaMetrics mapping.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.realservers import (
    INFLUXDB1_ADMIN,
    VICTORIA_METRICS,
    InfluxPoint,
    RealServer,
    http,
    influxdb1,
    influxdb1_create_database,
    influxdb1_points,
    influxdb1_query,
    launch,
    require,
    victoria_metrics,
    vm_points,
    vm_series,
)

pytestmark = pytest.mark.slow

# Escapes in measurement, tag key/value and field key; every field type; ns timestamps
# that differ only in the last digits.
INFLUX_LINES = (
    b"cpu\\ load,host=a\\ b,region=x\\,y\\=z "
    b'i=42i,f=1.5,s="he said \\"hi\\" \\\\ done",b=true,f\\ k=2.0 1700000000123456789\n'
    b"cpu\\ load,host=c f=-2.25,b=false,i=-7i 1700000000000000001\n"
    b"cpu\\ load,host=a\\ b,region=x\\,y\\=z f=0.5 1700000000123456790\n"
)
# The same minus the string field: VictoriaMetrics has no string values.
VM_LINES = (
    b"cpu\\ load,host=a\\ b,region=x\\,y\\=z i=42i,f=1.5,b=true,f\\ k=2.0 1700000000123456789\n"
    b"cpu\\ load,host=c f=-2.25,b=false,i=-7i 1700000000000000001\n"
    b"cpu\\ load,host=a\\ b,region=x\\,y\\=z f=0.5 1700000000124999999\n"
)
HOST_AB = {"host": "a b", "region": "x,y=z"}
HOST_C = {"host": "c"}


def _typed(points: list[InfluxPoint]) -> list[tuple[dict[str, str], dict[str, object], int]]:
    """Fields as (type name, value): 2 == 2.0 and True == 1 must not pass for each other."""
    return [({**t}, {k: (type(v).__name__, v) for k, v in f.items()}, ts) for t, f, ts in points]


def _write(server: RealServer, path_and_query: str, body: bytes) -> int:
    status, raw = http("POST", server.url + path_and_query, body)
    assert 204 == status, raw
    return status


@pytest.fixture(name="influx")
def fixture_influx(tmp_path: Path) -> Iterator[RealServer]:
    with influxdb1(tmp_path) as server:
        influxdb1_create_database(server, "db1")
        yield server


@pytest.fixture(name="vm")
def fixture_vm(tmp_path: Path) -> Iterator[RealServer]:
    with victoria_metrics(tmp_path) as server:
        yield server


def test_influxdb1_stores_points_exactly(influx: RealServer) -> None:
    """influxd keeps escapes, every field type and ns timestamps exactly; the helper reads them."""
    _write(influx, "/write?db=db1", INFLUX_LINES)
    expected: list[InfluxPoint] = [
        (HOST_C, {"b": False, "f": -2.25, "i": -7}, 1700000000000000001),
        (
            HOST_AB,
            {"b": True, "f": 1.5, "f k": 2.0, "i": 42, "s": 'he said "hi" \\ done'},
            1700000000123456789,
        ),
        (HOST_AB, {"f": 0.5}, 1700000000123456790),
    ]
    assert _typed(expected) == _typed(influxdb1_points(influx, "db1", "cpu load"))


def test_influxdb1_query_flattens_rows(influx: RealServer) -> None:
    """influxdb1_query returns one dict per row with time in ns and GROUP BY tags merged."""
    _write(influx, "/write?db=db1", INFLUX_LINES)
    rows = influxdb1_query(
        influx, "db1", 'SELECT "f" FROM "cpu load" WHERE "host" = \'c\' GROUP BY "host"'
    )
    assert [{"host": "c", "time": 1700000000000000001, "f": -2.25}] == rows
    assert [{"name": "db1"}] == influxdb1_query(influx, "", "SHOW DATABASES")


def test_influxdb1_with_auth_requires_credentials(tmp_path: Path) -> None:
    """With auth on, anonymous writes get 401 and the admin user can write and read."""
    with influxdb1(tmp_path, auth=True) as server:
        assert INFLUXDB1_ADMIN == (server.username, server.password)
        status, _ = http("POST", server.url + "/write?db=db1", b"m v=1 1\n")
        assert 401 == status
        influxdb1_create_database(server, "db1")
        user, password = INFLUXDB1_ADMIN
        _write(server, f"/write?db=db1&u={user}&p={password}", b"m v=1i 5\n")
        assert [({}, {"v": 1}, 5)] == influxdb1_points(server, "db1", "m")


def test_influxdb1_stops_and_frees_its_port(tmp_path: Path) -> None:
    """Leaving the context manager ends the process and closes the port."""
    with influxdb1(tmp_path) as server:
        port = int(server.url.rsplit(":", 1)[1])
    assert server.process.returncode is not None
    with socket.socket() as sock:
        assert 0 != sock.connect_ex(("127.0.0.1", port))


def test_vm_v1_write_becomes_one_series_per_field(vm: RealServer) -> None:
    """/write?db=X: series measurement_field{tags, db="X"}, ms timestamps (truncated), floats."""
    _write(vm, "/write?db=db1&precision=ns", VM_LINES)
    ab = {"db": "db1", **HOST_AB}
    c = {"db": "db1", **HOST_C}
    expected = [
        ("cpu load_b", ab, [(1700000000123, 1.0)]),
        ("cpu load_b", c, [(1700000000000, 0.0)]),
        ("cpu load_f", ab, [(1700000000123, 1.5), (1700000000124, 0.5)]),
        ("cpu load_f", c, [(1700000000000, -2.25)]),
        ("cpu load_f k", ab, [(1700000000123, 2.0)]),
        ("cpu load_i", ab, [(1700000000123, 42.0)]),
        ("cpu load_i", c, [(1700000000000, -7.0)]),
    ]
    assert expected == vm_series(vm)


def test_vm_points_regroups_series_into_points(vm: RealServer) -> None:
    """vm_points puts the per-field series back together, one point per labels and ms."""
    _write(vm, "/write?db=db1&precision=ns", VM_LINES)
    expected = [
        ({"db": "db1", **HOST_C}, {"b": 0.0, "f": -2.25, "i": -7.0}, 1700000000000),
        ({"db": "db1", **HOST_AB}, {"b": 1.0, "f": 1.5, "f k": 2.0, "i": 42.0}, 1700000000123),
        ({"db": "db1", **HOST_AB}, {"f": 0.5}, 1700000000124),
    ]
    assert expected == vm_points(vm, "cpu load")


def test_vm_v2_write_ignores_bucket_and_org(vm: RealServer) -> None:
    """/api/v2/write?bucket=B&org=O stores no label for bucket or org (and no db label)."""
    _write(
        vm, "/api/v2/write?bucket=b&org=o&precision=ns", b"v2m,host=h v=1i 1700000000000000000\n"
    )
    assert [("v2m_v", {"host": "h"}, [(1700000000000, 1.0)])] == vm_series(vm)


def test_vm_v2_write_honours_db_argument(vm: RealServer) -> None:
    """Only a db=X query argument gives /api/v2/write data the db label."""
    _write(vm, "/api/v2/write?bucket=b&db=x&precision=ns", b"v2m v=1 1700000000000000000\n")
    assert [("v2m_v", {"db": "x"}, [(1700000000000, 1.0)])] == vm_series(vm)


def test_vm_guesses_timestamp_unit_without_precision(vm: RealServer) -> None:
    """Without precision VM reads a small timestamp as seconds; precision=ns is exact."""
    _write(vm, "/write", b"guessed v=1 1\n")
    _write(vm, "/write?precision=ns", b"exact v=1 1000000\n")
    assert [({}, {"v": 1.0}, 1000)] == vm_points(vm, "guessed")
    assert [({}, {"v": 1.0}, 1)] == vm_points(vm, "exact")


def test_vm_turns_string_fields_into_numbers(vm: RealServer) -> None:
    """String fields are not dropped: numeric text becomes its number, other text 0."""
    _write(vm, "/write?db=d&precision=ns", b's a="abc",b="12",c=1 1700000000000000000\n')
    assert [({"db": "d"}, {"a": 0.0, "b": 12.0, "c": 1.0}, 1700000000000)] == vm_points(vm, "s")


def test_vm_keeps_duplicate_samples(vm: RealServer) -> None:
    """Two writes of one series in one ms are both kept; vm_points returns both points."""
    _write(vm, "/write?precision=ns", b"d v=1 1700000000000000000\nd v=2 1700000000000500000\n")
    assert [({}, {"v": 1.0}, 1700000000000), ({}, {"v": 2.0}, 1700000000000)] == vm_points(vm, "d")


def test_start_failure_reports_server_log(tmp_path: Path) -> None:
    """A server that exits at start-up fails the test with its command and log."""
    binary = require(VICTORIA_METRICS)
    with pytest.raises(
        pytest.fail.Exception, match=r"(?s)did not start.*flag provided but not defined"
    ):
        launch("victoria-metrics", tmp_path, lambda *_: [binary, "-no-such-flag"], "/health", 200)


def test_require_fails_with_install_hint() -> None:
    """A missing binary fails (never skips) and says to run .ci/run."""
    with pytest.raises(pytest.fail.Exception, match=r"Run \.ci/run"):
        require("definitely-not-installed-binary")
