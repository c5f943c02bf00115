"""End to end with real upstreams: the real `influx-gateway run` process forwarding to a real
InfluxDB 1.x (api v1) and a real VictoriaMetrics (api v2), written to with the real
influxdb-client library, read back from each server point by point; and kill -9 under load."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest

from tests.e2e.conftest import RunningGateway, WriteLoad, cli, start_gateway, wait_until
from tests.realservers import (
    RealServer,
    free_port,
    influxdb1,
    influxdb1_create_database,
    influxdb1_points,
    influxdb1_query,
    victoria_metrics,
    vm_points,
)

pytestmark = pytest.mark.slow

T0 = (time.time_ns() // 10**9 - 600) * 10**9  # ten minutes ago, whole seconds


def write_config(tmp_path: Path, upstreams: str, extra: str = "") -> Path:
    """A gateway config with the given [[upstreams]] tables."""
    path = tmp_path / "gateway.toml"
    path.write_text(f'{extra}\n[buffer]\nfsync = "always"\n{upstreams}')
    return path


def upstream(name: str, url: str, api: str, databases: str = '["*"]', extra: str = "") -> str:
    """One [[upstreams]] table with fast flushing and retries."""
    return (
        f'[[upstreams]]\nname = "{name}"\nurl = "{url}"\napi = "{api}"\ndatabases = {databases}\n'
        f'flush_interval = "100ms"\nretry_max_delay = "500ms"\n{extra}\n'
    )


@pytest.fixture(name="influx")
def fixture_influx(tmp_path: Path) -> Iterator[RealServer]:
    """A real InfluxDB 1.x with database "telegraf"."""
    with influxdb1(tmp_path / "influx") as server:
        influxdb1_create_database(server, "telegraf")
        yield server


@pytest.fixture(name="vm")
def fixture_vm(tmp_path: Path) -> Iterator[RealServer]:
    """A real VictoriaMetrics."""
    with victoria_metrics(tmp_path / "vm") as server:
        yield server


def delivered_ids(influx: RealServer) -> set[int]:
    """The ids of the `load` points (tests/e2e/conftest.py WriteLoad) InfluxDB holds."""
    rows = influxdb1_query(influx, "telegraf", 'SELECT "id" FROM "load"')
    return {int(row["id"]) for row in rows}  # type: ignore[call-overload]


def gateway_with(tmp_path: Path, config: Path) -> RunningGateway:
    """Start the real gateway on a config."""
    return start_gateway(tmp_path, "-c", str(config))


def assert_both_hold(
    influx: RealServer,
    vm: RealServer,
    measurement: str,
    expected: Sequence[tuple[Mapping[str, str], Mapping[str, float], int]],
) -> None:
    """The influxd database "telegraf" holds exactly `expected` (tags, fields, ns), and
    VictoriaMetrics the same points as it stores them (float fields, ms timestamps)."""
    wait_until(
        lambda: len(influxdb1_points(influx, "telegraf", measurement)) == len(expected),
        15,
        "influx points",
    )
    assert expected == influxdb1_points(influx, "telegraf", measurement)
    wait_until(
        lambda: len(vm_points(vm, measurement)) == len(expected), 15, "victoria-metrics points"
    )
    vm_expected = [
        (tags, {k: float(v) for k, v in fields.items()}, ts // 10**6)
        for tags, fields, ts in expected
    ]
    assert vm_expected == vm_points(vm, measurement)


def test_mirror_to_influxdb1_and_victoria_metrics(
    tmp_path: Path, influx: RealServer, vm: RealServer
) -> None:
    """influxdb-client writes through the gateway; both real upstreams hold every point."""
    from influxdb_client import InfluxDBClient, Point, WritePrecision
    from influxdb_client.client.write_api import SYNCHRONOUS

    config = write_config(
        tmp_path, upstream("influx", influx.url, "v1") + upstream("vm", vm.url, "v2")
    )
    gateway = gateway_with(tmp_path, config)
    try:
        with InfluxDBClient(url=gateway.url, token=gateway.token, org="o", enable_gzip=True) as c:
            api = c.write_api(write_options=SYNCHRONOUS)
            points = [
                Point("cpu")
                .tag("host", f"h{i % 3}")
                .field("usage", i + 0.5)
                .field("count", i)
                .time(T0 + i * 10**9, WritePrecision.NS)
                for i in range(30)
            ]
            api.write(bucket="telegraf", record=points)
        expected = [
            ({"host": f"h{i % 3}"}, {"count": i, "usage": i + 0.5}, T0 + i * 10**9)
            for i in range(30)
        ]
        assert_both_hold(influx, vm, "cpu", expected)
    finally:
        assert 0 == gateway.stop()


def test_plain_upstreams_get_batches_of_many_writes_exactly(
    tmp_path: Path, influx: RealServer, vm: RealServer
) -> None:
    """gzip = false: a batch of many accepted writes goes out as their payloads one after the
    other (never joined into one buffer); both real upstreams hold every point, exactly."""
    tables = "".join(
        f'[[upstreams]]\nname = "{name}"\nurl = "{url}"\napi = "{api}"\ngzip = false\n'
        f'flush_interval = "1s"\nretry_max_delay = "500ms"\n'
        for name, url, api in (("influx", influx.url, "v1"), ("vm", vm.url, "v2"))
    )
    gateway = gateway_with(tmp_path, write_config(tmp_path, tables))
    try:
        for w in range(40):  # 40 records of 25 lines, written faster than flush_interval
            body = "".join(
                f"disk,host=h{w},dev=d{i} used={w * 25 + i}i {T0 + (w * 25 + i) * 10**9}\n"
                for i in range(25)
            )
            assert 204 == gateway.write("/api/v2/write?bucket=telegraf", body.encode())
        expected = [
            ({"dev": f"d{i}", "host": f"h{w}"}, {"used": w * 25 + i}, T0 + (w * 25 + i) * 10**9)
            for w in range(40)
            for i in range(25)
        ]
        assert_both_hold(influx, vm, "disk", expected)
        sent = gateway.metric_values(
            "gateway_upstream_requests_total", upstream="influx", status="204"
        )
        assert len(sent) == 1 and 0 < sent[0] < 40  # batched: fewer requests than writes
    finally:
        assert 0 == gateway.stop()


def test_gzip_upstreams_get_large_bodies_compressed_once(
    tmp_path: Path, influx: RealServer, vm: RealServer
) -> None:
    """gzip = true (the default): a large gzip body whose lines are all accepted is forwarded as
    the client's own gzip stream, and a large plain body as compressed once at acceptance, one
    request per body; both real servers read every point."""
    config = write_config(
        tmp_path, upstream("influx", influx.url, "v1") + upstream("vm", vm.url, "v2")
    )
    gateway = gateway_with(tmp_path, config)
    sizes = [2000, 2000, 2000, 6000]  # the last one plain, above the size validated in a thread
    firsts = [sum(sizes[:w]) for w in range(len(sizes))]
    try:
        for w, (count, first) in enumerate(zip(sizes, firsts, strict=True)):
            body = "".join(
                f"net,host=h{w},nic=eth{i % 4} bytes_recv={first + i}i,drop=0i "
                f"{T0 + (first + i) * 10**6}\n"
                for i in range(count)
            )
            gzipped = w < 3
            path = "/api/v2/write?bucket=telegraf"
            assert 204 == gateway.write(path, body.encode(), gzipped=gzipped)
        expected = [
            (
                {"host": f"h{w}", "nic": f"eth{i % 4}"},
                {"bytes_recv": first + i, "drop": 0},
                T0 + (first + i) * 10**6,
            )
            for w, (count, first) in enumerate(zip(sizes, firsts, strict=True))
            for i in range(count)
        ]
        assert_both_hold(influx, vm, "net", expected)
        for name in ("influx", "vm"):
            sent = gateway.metric_values(
                "gateway_upstream_requests_total", upstream=name, status="204"
            )
            assert sent == [4]  # one request per body: each went alone, compressed once
    finally:
        assert 0 == gateway.stop()


def test_upstream_down_then_back_loses_nothing(tmp_path: Path) -> None:
    """The upstream is down while writes get 204; started again, it receives every line."""
    port = free_port()
    config = write_config(tmp_path, upstream("influx", f"http://127.0.0.1:{port}", "v1"))
    gateway = gateway_with(tmp_path, config)
    try:
        for i in range(20):
            body = f"mem,host=a used={i}i {T0 + i * 10**9}\n".encode()
            assert 204 == gateway.write("/api/v2/write?bucket=telegraf", body)
        status = cli(
            "buffer", "status", "--json", "-c", str(config), "--data-dir", str(gateway.data_dir)
        )
        assert b'"pending_records": 20' in status.stdout
        with influxdb1(tmp_path / "influx", port=port) as server:
            influxdb1_create_database(server, "telegraf")
            wait_until(
                lambda: len(influxdb1_points(server, "telegraf", "mem")) == 20, 20, "20 points"
            )
            used = [fields["used"] for _, fields, _ in influxdb1_points(server, "telegraf", "mem")]
            assert list(range(20)) == used
    finally:
        gateway.stop()


@pytest.mark.parametrize("segment", ["64MiB", "64KiB"])
def test_kill_9_under_load_delivers_every_acknowledged_line(
    tmp_path: Path, influx: RealServer, segment: str
) -> None:
    """kill -9 while writers are busy; after a restart on the same data dir every line that got
    a 204 reaches the real upstream (duplicates allowed, loss never). With small segments the
    buffer rolls and reuses consumed segments' files all along."""
    config = write_config(tmp_path, upstream("influx", influx.url, "v1"))
    config.write_text(
        config.read_text().replace(
            'fsync = "always"', f'fsync = "always"\nsegment_bytes = "{segment}"'
        )
    )
    gateway = gateway_with(tmp_path, config)

    def last_segment() -> int:
        return max(int(p.stem) for p in (gateway.data_dir / "buffer" / "log").glob("*.seg"))

    with WriteLoad(gateway, T0) as load:
        time.sleep(1.5)
        if segment == "64KiB":  # the premise: many rolls, consumed files renamed to later ones
            wait_until(lambda: last_segment() > 10, 20, "more than 10 segments")
        gateway.process.kill()  # SIGKILL, mid-load
        gateway.process.wait(timeout=10)
    acknowledged = load.acknowledged
    assert len(acknowledged) > 100
    if segment == "64KiB":
        assert last_segment() > 10
    restarted = gateway_with(tmp_path, config)
    try:
        wait_until(
            lambda: set(acknowledged) <= delivered_ids(influx), 30, "every acknowledged line"
        )
        assert set() == set(acknowledged) - delivered_ids(influx)
    finally:
        restarted.stop()


def test_kill_9_while_the_upstream_is_away_then_back_delivers_every_large_gzip_body(
    tmp_path: Path, influx: RealServer
) -> None:
    """Batches of 1,700 lines (above 64 KiB) while the upstream is unreachable, half of them
    gzip bodies buffered as the client sent them; kill -9; restarted with the upstream back,
    the gateway reads the buffer back from disk and sends each of those as the stream it is
    (not inflated, one request each) to the gzip upstream: every acknowledged line arrives."""
    away = write_config(tmp_path, upstream("influx", f"http://127.0.0.1:{free_port()}", "v1"))
    gateway = gateway_with(tmp_path, away)
    with WriteLoad(gateway, T0, lines=1700) as load:
        time.sleep(1.5)
        gateway.process.kill()  # SIGKILL, mid-load
        gateway.process.wait(timeout=10)
    acknowledged = load.acknowledged
    gzip_batches = len({i // 1700 for i in acknowledged if (i // 10**9) % 2 == 1})
    assert gzip_batches >= 2
    status = json.loads(
        cli(
            "buffer", "status", "--json", "-c", str(away), "--data-dir", str(gateway.data_dir)
        ).stdout
    )
    [pending] = status
    assert pending["pending_records"] * 1700 >= len(acknowledged)  # nothing was forwarded
    back = write_config(tmp_path, upstream("influx", influx.url, "v1"))
    restarted = gateway_with(tmp_path, back)
    try:
        wait_until(
            lambda: set(acknowledged) <= delivered_ids(influx), 60, "every acknowledged line"
        )
        assert set() == set(acknowledged) - delivered_ids(influx)
        sent = restarted.metric_values(
            "gateway_upstream_requests_total", upstream="influx", status="204"
        )
        assert sent and sent[0] >= gzip_batches  # each gzip body went alone
    finally:
        restarted.stop()


def test_sigterm_drains_the_buffer_and_exits_0(tmp_path: Path, influx: RealServer) -> None:
    """SIGTERM right after a burst: the gateway drains to the upstream within shutdown_timeout,
    exits 0, and the upstream holds every line."""
    config = write_config(
        tmp_path,
        upstream("influx", influx.url, "v1").replace(
            'flush_interval = "100ms"', 'flush_interval = "2s"'
        ),
        extra='[server]\nshutdown_timeout = "10s"\n',
    )
    gateway = gateway_with(tmp_path, config)
    for i in range(10):
        assert 204 == gateway.write(
            "/api/v2/write?bucket=telegraf", f"drain v={i}i {T0 + i}\n".encode()
        )
    assert 0 == gateway.stop()
    assert 10 == len(influxdb1_points(influx, "telegraf", "drain"))
    assert "buffer drained" in gateway.stderr()
