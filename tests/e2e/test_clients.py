"""End to end: the real `influx-gateway run` process, real client libraries, read back with
`influx-gateway store export`."""

from __future__ import annotations

import base64
import gzip
import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.conftest import RunningGateway, cli

pytestmark = pytest.mark.slow

NOW_S = int(time.time())
JS_CLIENT = Path(__file__).parent / "jsclient"  # package.json pins @influxdata/influxdb-client


def export(gateway: RunningGateway, database: str, *args: str) -> list[str]:
    """`store export --database DB` of the running gateway's data dir, as lines."""
    result = cli(
        "store", "export", "--database", database, "--data-dir", str(gateway.data_dir), *args
    )
    return result.stdout.decode().splitlines()


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    """POST with urllib; returns (status, body) for any status."""
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_first_run_prints_the_admin_token_and_creates_the_policy(
    running_gateway: RunningGateway,
) -> None:
    """The embedded default creates policy.toml with an admin token and prints it once with curl."""
    assert running_gateway.token.startswith("igw_")
    stderr = running_gateway.stderr()
    assert 1 == stderr.count(running_gateway.token) - stderr.count(f"Token {running_gateway.token}")
    assert "curl" in stderr
    policy = (running_gateway.data_dir / "policy.toml").read_text()
    assert 'name = "admin"' in policy
    assert running_gateway.token not in policy


def test_influxdb_client_v2_with_batching_and_gzip(running_gateway: RunningGateway) -> None:
    """The official influxdb-client (v2 API, batching, gzip) writes; export shows every point."""
    from influxdb_client import InfluxDBClient, Point, WritePrecision
    from influxdb_client.client.write_api import WriteOptions

    with (
        InfluxDBClient(
            url=running_gateway.url, token=running_gateway.token, org="any", enable_gzip=True
        ) as client,
        client.write_api(
            write_options=WriteOptions(batch_size=50, flush_interval=200, max_retries=0)
        ) as write_api,
    ):
        for i in range(120):
            write_api.write(
                bucket="mydb",
                record=Point("cpu")
                .tag("host", f"h{i % 3}")
                .field("usage", i * 0.5)
                .field("n", i)
                .time(NOW_S - 120 + i, WritePrecision.S),
            )
    lines = export(running_gateway, "mydb")
    assert 120 == len(lines)
    assert f"cpu,host=h0 n=0i,usage=0 {(NOW_S - 120) * 10**9}" == lines[0]
    assert f"cpu,host=h2 n=119i,usage=59.5 {(NOW_S - 1) * 10**9}" == lines[-1]


def test_influxdb3_python(running_gateway: RunningGateway) -> None:
    """influxdb3-python writes through the v2 API; export shows the points."""
    from influxdb_client_3 import InfluxDBClient3, Point, WritePrecision

    with InfluxDBClient3(
        host=running_gateway.url, token=running_gateway.token, database="v3db"
    ) as client:
        client.write(record=f"weather,city=oslo temp=3.5 {NOW_S}", write_precision=WritePrecision.S)
        client.write(
            record=Point("weather")
            .tag("city", "rome")
            .field("temp", 18.25)
            .time(NOW_S, WritePrecision.S),
            write_precision=WritePrecision.S,
        )
    assert [
        f"weather,city=oslo temp=3.5 {NOW_S * 10**9}",
        f"weather,city=rome temp=18.25 {NOW_S * 10**9}",
    ] == export(running_gateway, "v3db")


@pytest.fixture(name="js_client", scope="session")
def fixture_js_client() -> Path:
    """The official JavaScript client, installed from the npm registry by its lock file (once)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.fail(
            "node and npm are needed for the JavaScript client test (.ci/run installs them)"
        )
    if not (JS_CLIENT / "node_modules" / "@influxdata" / "influxdb-client").is_dir():
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--silent"],
            cwd=JS_CLIENT,
            check=True,
            timeout=300,
        )
    return JS_CLIENT / "write.mjs"


def test_influxdb_client_js(running_gateway: RunningGateway, js_client: Path) -> None:
    """@influxdata/influxdb-client (JS): batched gzip writes land; a bad line comes back to the
    client as the gateway's 400 with its line number, and the good lines of it are stored."""
    result = subprocess.run(
        ["node", str(js_client), running_gateway.url, running_gateway.token, "js", str(NOW_S)],
        capture_output=True,
        timeout=60,
        check=True,
    )
    outcome = json.loads(result.stdout)
    assert {
        "status": 400,
        "body": {
            "code": "invalid",
            "line": 2,
            "message": "partial write of line protocol occurred:\n"
            "  errors encountered on line(s):\n"
            "  error parsing line 2 (1-based): missing value for field `v`",
        },
        "contentType": "application/json; charset=utf-8",
    } == outcome["error"]
    expected = [
        f"cpu,client=js,host=h{i % 3} n={i}i,usage={i * 0.5:g} {(NOW_S - 120 + i) * 10**9}"
        for i in range(120)
    ]
    assert sorted(expected) == sorted(export(running_gateway, "js"))
    assert [f"ok v=1 {NOW_S * 10**9}", f"ok v=3 {NOW_S * 10**9}"] == export(
        running_gateway, "js_bad"
    )
    log = running_gateway.stderr()
    assert '"user_agent":"influxdb-client-js/1.35.0"' in log
    assert '"encoding":"gzip"' in log  # batches of 50 points are above its gzip threshold


def test_telegraf_influxdb_v2_shaped_request(running_gateway: RunningGateway) -> None:
    """A request shaped like Telegraf's outputs.influxdb_v2: gzip, no precision, Token auth."""
    body = "".join(
        f"cpu,cpu=cpu{i},host=edge usage_idle={90 + i}.5,usage_user=1.25 {NOW_S * 10**9}\n"
        for i in range(4)
    ).encode()
    status, _ = post(
        f"{running_gateway.url}/api/v2/write?bucket=telegraf&org=my-org",
        gzip.compress(body),
        {
            "Authorization": f"Token {running_gateway.token}",
            "Content-Encoding": "gzip",
            "Content-Type": "text/plain; charset=utf-8",
            "User-Agent": "Telegraf/1.32.0 Go/1.23.2",
        },
    )
    assert 204 == status
    assert body.decode().splitlines() == export(running_gateway, "telegraf")


def test_telegraf_influxdb_v1_shaped_requests(running_gateway: RunningGateway) -> None:
    """Telegraf's outputs.influxdb: CREATE DATABASE via /query, then /write?db&rp with Basic auth."""
    basic = "Basic " + base64.b64encode(f"telegraf:{running_gateway.token}".encode()).decode()
    headers = {"Authorization": basic, "User-Agent": "Telegraf/1.32.0 Go/1.23.2"}
    status, body = post(
        f"{running_gateway.url}/query",
        b"q=CREATE+DATABASE+%22tg%22",
        {**headers, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert 200 == status
    assert {"results": [{"statement_id": 0}]} == json.loads(body)
    line = f"mem,host=edge used=123i {NOW_S * 10**9}\n".encode()
    status, _ = post(
        f"{running_gateway.url}/write?db=tg&rp=&consistency=any",
        gzip.compress(line),
        {**headers, "Content-Encoding": "gzip"},
    )
    assert 204 == status
    assert [line.decode().strip()] == export(running_gateway, "tg")


def test_influxdb_v1_python_client(running_gateway: RunningGateway) -> None:
    """The v1 Python `influxdb` client (u/p parameters) creates a database and writes."""
    from influxdb import InfluxDBClient

    client = InfluxDBClient(
        host="127.0.0.1",
        port=running_gateway.port,
        username="u",
        password=running_gateway.token,
        database="v1db",
    )
    client.create_database("v1db")
    assert client.write_points(
        [{"measurement": "disk", "tags": {"path": "/"}, "fields": {"free": 42}, "time": NOW_S}],
        time_precision="s",
    )
    client.close()
    assert [f"disk,path=/ free=42i {NOW_S * 10**9}"] == export(running_gateway, "v1db")


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_write_and_error(running_gateway: RunningGateway) -> None:
    """curl: a write gets 204; a missing bucket gets the documented 400 body."""
    base = [
        "curl",
        "-s",
        "-o",
        "/dev/stderr",
        "-w",
        "%{http_code}",
        "-H",
        f"Authorization: Token {running_gateway.token}",
    ]
    ok = subprocess.run(
        [
            *base,
            f"{running_gateway.url}/api/v2/write?bucket=curl&precision=s",
            "--data-binary",
            f"cpu v=1 {NOW_S}",
        ],
        capture_output=True,
        timeout=10,
        check=True,
    )
    assert b"204" == ok.stdout
    bad = subprocess.run(
        [*base, f"{running_gateway.url}/api/v2/write", "--data-binary", "cpu v=1"],
        capture_output=True,
        timeout=10,
        check=True,
    )
    assert b"400" == bad.stdout
    assert b'{"code":"invalid","message":"missing bucket value"}' == bad.stderr


def test_export_filters_and_stats(running_gateway: RunningGateway) -> None:
    """export --measurement/--start/--end filter; store stats summarizes."""
    body = (
        f"a,h=1 v=1 {(NOW_S - 30) * 10**9}\nb,h=1 v=2 {(NOW_S - 20) * 10**9}\n"
        f"a,h=2 v=3 {(NOW_S - 10) * 10**9}\n"
    ).encode()
    status, _ = post(
        f"{running_gateway.url}/api/v2/write?bucket=f",
        body,
        {"Authorization": f"Token {running_gateway.token}"},
    )
    assert 204 == status
    assert 2 == len(export(running_gateway, "f", "--measurement", "a"))
    start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW_S - 20))
    assert [f"b,h=1 v=2 {(NOW_S - 20) * 10**9}"] == export(
        running_gateway, "f", "--start", start, "--end", "-5s"
    )[:1]
    stats = json.loads(
        cli("store", "stats", "--json", "--data-dir", str(running_gateway.data_dir)).stdout
    )
    row = next(s for s in stats if s["database"] == "f")
    assert (3, 3, 2) == (row["points"], row["series"], row["measurements"])


def test_export_bounds_are_exact_to_the_nanosecond(running_gateway: RunningGateway) -> None:
    """--start (inclusive) and --end (exclusive) in RFC3339 with nine fraction digits cut
    between points a few nanoseconds apart."""
    base = (NOW_S - 15) * 10**9
    points = [base + 123_456_500, base + 123_456_789, base + 123_456_790]
    status, _ = post(
        f"{running_gateway.url}/api/v2/write?bucket=ns",
        "".join(f"m v={i} {ts}\n" for i, ts in enumerate(points)).encode(),
        {"Authorization": f"Token {running_gateway.token}"},
    )
    assert 204 == status
    second = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(NOW_S - 15))
    exported = export(
        running_gateway,
        "ns",
        "--start",
        f"{second}.123456789Z",
        "--end",
        f"{second}.123456790Z",
    )
    assert [f"m v=1 {points[1]}"] == exported


def test_sigterm_exits_zero_and_data_survives(
    running_gateway: RunningGateway, tmp_path: Path
) -> None:
    """SIGTERM: graceful exit 0; what got 204 is still exported afterwards."""
    status, _ = post(
        f"{running_gateway.url}/api/v2/write?bucket=keep&precision=s",
        f"cpu v=1 {NOW_S}".encode(),
        {"Authorization": f"Bearer {running_gateway.token}"},
    )
    assert 204 == status
    assert 0 == running_gateway.stop()
    assert [f"cpu v=1 {NOW_S * 10**9}"] == export(running_gateway, "keep")


def test_kill_9_loses_no_acknowledged_write(
    running_gateway: RunningGateway, tmp_path: Path
) -> None:
    """kill -9 right after a burst of 204s: every acknowledged line is in the store."""
    acknowledged = 0
    for i in range(50):
        status, _ = post(
            f"{running_gateway.url}/api/v2/write?bucket=crash&precision=s",
            f"cpu,i={i} v={i} {NOW_S}".encode(),
            {"Authorization": f"Token {running_gateway.token}"},
        )
        assert 204 == status
        acknowledged += 1
    running_gateway.stop(sig=9)
    assert acknowledged == len(export(running_gateway, "crash"))


def test_port_in_use_exits_3(running_gateway: RunningGateway, tmp_path: Path) -> None:
    """A second gateway on the same port exits 3 with a message."""
    other = tmp_path / "other"
    result = cli(
        "run",
        "--listen",
        f"127.0.0.1:{running_gateway.port}",
        "--data-dir",
        str(other),
        check=False,
    )
    assert 3 == result.returncode
    assert b"cannot listen" in result.stderr
