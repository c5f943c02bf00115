"""Real upstream servers for tests: InfluxDB 1.x (`influxd`) and VictoriaMetrics.

Both run as plain foreground child processes on a free 127.0.0.1 port with every
file in a fresh directory under the test's tmp_path; nothing goes through systemd.
`.ci/run` installs the Debian packages (`influxdb`, `victoria-metrics`) when the
binaries are missing. A missing binary fails the test (it never skips silently).

What VictoriaMetrics 1.79 (Debian bookworm) does with line protocol, observed:

- `m,t=v f1=1,f2=2 ts` becomes one series per field: `m_f1{t="v"}`, `m_f2{t="v"}`
  (separator `-influxMeasurementFieldSeparator`, default `_`; also for a
  single-field line, since `-influxSkipSingleField` is off). Escapes are undone:
  `m\\ x,t\\ k=v\\ v f\\ k=1` gives `m x_f k{"t k"="v v"}`. Absent tags are absent labels.
- Values are float64. Integers: `42i` -> 42.0 (beyond 2**53 rounded). Booleans:
  true -> 1.0, false -> 0.0. Strings are NOT dropped: a string that parses as a
  number becomes that number (`"12"` -> 12.0), any other string becomes 0.0.
  Floats keep only about 12-13 significant digits (3.141592653589793 ->
  3.141592653589, 0.30000000000000004 -> 0.3) and -0.0 -> 0.0.
- Timestamps are stored in milliseconds, truncated (`...123456789` ns -> `...123` ms).
  Without a `precision` argument VictoriaMetrics GUESSES the unit from the magnitude
  (>= 1e17 ns, >= 1e14 us, >= 1e11 ms, else seconds; so `1` means 1 s, not 1 ns);
  with `precision=ns|us|ms|s` it converts exactly (`1` ns -> 0 ms). A line without a
  timestamp gets the receive time. Timestamps before 1970 or more than ~2 days in the
  future are dropped with only a log warning; the write still answers 204.
- `/write?db=X` adds the label `db="X"` (`-influxDBLabel`); a tag named `db` in the
  line wins over the query argument. `/write` without `db` adds no label.
- `/api/v2/write?bucket=B&org=O` ignores bucket and org entirely (no label); only a
  `db=X` query argument on /api/v2/write adds `db="X"`.
- Invalid lines are skipped (logged) and the request still answers 204; duplicate
  samples (same series, same millisecond) are all kept (no deduplication).
- Freshly written rows become searchable after about 1 s, or immediately after
  GET /internal/force_flush, which vm_series() calls.
"""

from __future__ import annotations

import json
import math
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

INFLUXD = "influxd"
VICTORIA_METRICS = "victoria-metrics"
DEBIAN_PACKAGE = {INFLUXD: "influxdb", VICTORIA_METRICS: "victoria-metrics"}
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
HTTP_TIMEOUT_S = 10.0
INFLUXDB1_ADMIN = ("admin", "admin-password")
_LOG_TAIL_CHARS = 6000
_PORT_ATTEMPTS = 3

Labels = dict[str, str]
Series = tuple[str, Labels, list[tuple[int, float]]]


@dataclass
class RealServer:
    """A running upstream server process and where it keeps its files."""

    name: str
    url: str
    process: subprocess.Popen[bytes]
    data_dir: Path
    log_path: Path
    username: str | None = None
    password: str | None = None

    def stop(self) -> None:
        """Stop the process: SIGTERM, then SIGKILL if it lingers. Idempotent."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_TIMEOUT_S)

    def log_tail(self) -> str:
        """The last few thousand characters the server wrote to stdout/stderr."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"<cannot read {self.log_path}: {exc}>"
        return text[-_LOG_TAIL_CHARS:]

    def auth_params(self) -> dict[str, str]:
        """InfluxDB 1.x `u`/`p` query parameters, empty when auth is off."""
        if self.username is None or self.password is None:
            return {}
        return {"u": self.username, "p": self.password}


def require(binary: str) -> str:
    """Path of `binary`, or fail the test saying how to install it."""
    path = shutil.which(binary)
    if path is None:
        package = DEBIAN_PACKAGE.get(binary, binary)
        pytest.fail(
            f"{binary!r} is not on PATH; real-server tests need it. Run .ci/run "
            f"(installs it when missing) or `apt-get install -y {package}`.",
            pytrace=False,
        )
    return path


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1 (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http(
    method: str,
    url: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = HTTP_TIMEOUT_S,
) -> tuple[int, bytes]:
    """One HTTP request; returns (status, body) for every status, errors included."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return int(exc.code), exc.read()


def _wait_ready(server: RealServer, ready_path: str, ready_status: int) -> str | None:
    """Poll until `ready_path` answers `ready_status`; returns None or why it failed."""
    deadline = time.monotonic() + START_TIMEOUT_S
    last = "no answer yet"
    while time.monotonic() < deadline:
        code = server.process.poll()
        if code is not None:
            return f"process exited with status {code}"
        try:
            status, body = http("GET", server.url + ready_path, timeout=1.0)
        except OSError as exc:
            last = repr(exc)
        else:
            if status == ready_status:
                return None
            last = f"status {status}: {body[:200]!r}"
        time.sleep(0.05)
    return f"not ready within {START_TIMEOUT_S:.0f} s (last: {last})"


def launch(
    name: str,
    tmp_path: Path,
    argv: Callable[[Path, Path, int], list[str]],
    ready_path: str,
    ready_status: int,
    port: int | None = None,
) -> RealServer:
    """Start a server on `port` or a free one (argv from work dir, data dir, port), retrying
    with another free port if one was taken between choosing it and the server binding it."""
    failure = ""
    fixed_port = port
    for _attempt in range(1 if fixed_port else _PORT_ATTEMPTS):
        tmp_path.mkdir(parents=True, exist_ok=True)
        work_dir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=tmp_path))
        data_dir = work_dir / "data"
        data_dir.mkdir()
        log_path = work_dir / "server.log"
        port = fixed_port or free_port()
        command: list[str] = argv(work_dir, data_dir, port)
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=work_dir,
                start_new_session=True,  # a Ctrl-C in the terminal reaches pytest, not the server
            )
        server = RealServer(name, f"http://127.0.0.1:{port}", process, data_dir, log_path)
        try:
            why = _wait_ready(server, ready_path, ready_status)
        except BaseException:  # e.g. Ctrl-C while waiting: do not leave the server running
            server.stop()
            raise
        if why is None:
            return server
        server.stop()
        failure = (
            f"{name} did not start: {why}\ncommand: {' '.join(command)}\n"
            f"log {log_path}:\n{server.log_tail()}"
        )
        if "address already in use" not in server.log_tail().lower():
            break
    pytest.fail(failure, pytrace=False)


def _influxdb1_config(data_dir: Path, port: int, rpc_port: int, auth: bool) -> str:
    meta, data, wal = data_dir / "meta", data_dir / "data", data_dir / "wal"
    # influxd 1.6 rejects nothing it does not know, so both spellings of the
    # usage-reporting switch are harmless: Debian patched it to `reporting-enabled`.
    return f"""\
reporting-disabled = true
reporting-enabled = false
# The backup/restore RPC service (top-level in 1.6, not an [rpc] section).
bind-address = "127.0.0.1:{rpc_port}"

[meta]
  dir = {_toml_str(meta)}
  logging-enabled = false

[data]
  dir = {_toml_str(data)}
  wal-dir = {_toml_str(wal)}
  index-version = "inmem"
  query-log-enabled = false

[monitor]
  # No _internal database: SHOW DATABASES lists only what tests create.
  store-enabled = false

[http]
  enabled = true
  bind-address = "127.0.0.1:{port}"
  auth-enabled = {"true" if auth else "false"}
  log-enabled = false
  pprof-enabled = false

[continuous_queries]
  log-enabled = false

[logging]
  level = "warn"
  suppress-logo = true
"""


def _toml_str(path: Path) -> str:
    # JSON string escapes are valid TOML basic-string escapes.
    return json.dumps(str(path))


@contextmanager
def influxdb1(
    tmp_path: Path, *, auth: bool = False, port: int | None = None
) -> Iterator[RealServer]:
    """Run influxd 1.x on `port` or a free one; with auth=True, with admin INFLUXDB1_ADMIN."""
    binary = require(INFLUXD)

    def argv(work_dir: Path, data_dir: Path, port: int) -> list[str]:
        config = work_dir / "influxdb.conf"
        config.write_text(_influxdb1_config(data_dir, port, free_port(), auth))
        return [binary, "run", "-config", str(config)]

    server = launch("influxdb1", tmp_path, argv, "/ping", 204, port)
    try:
        if auth:
            # With auth on and no users yet, influxd accepts exactly this statement unauthenticated.
            user, password = INFLUXDB1_ADMIN
            influxdb1_query(
                server, "", f"CREATE USER {user} WITH PASSWORD '{password}' WITH ALL PRIVILEGES"
            )
            server.username, server.password = user, password
        yield server
    finally:
        server.stop()


@contextmanager
def victoria_metrics(tmp_path: Path) -> Iterator[RealServer]:
    """Run single-node VictoriaMetrics on a free port, tuned so writes are readable at once."""
    binary = require(VICTORIA_METRICS)

    def argv(work_dir: Path, data_dir: Path, port: int) -> list[str]:
        return [
            binary,
            f"-storageDataPath={data_dir}",
            f"-httpListenAddr=127.0.0.1:{port}",
            "-retentionPeriod=100y",  # accept old test timestamps (back to 1970)
            "-search.latencyOffset=0s",  # query results include the newest samples
            "-search.disableCache",
            "-loggerLevel=WARN",  # keeps dropped-row warnings and bad-line errors
        ]

    server = launch("victoria-metrics", tmp_path, argv, "/health", 200)
    try:
        yield server
    finally:
        server.stop()


def influxdb1_create_database(server: RealServer, db: str) -> None:
    """CREATE DATABASE `db` (idempotent in InfluxDB 1.x)."""
    influxdb1_query(server, "", f"CREATE DATABASE {_influxql_ident(db)}")


def influxdb1_query(server: RealServer, db: str, q: str) -> list[dict[str, object]]:
    """Run InfluxQL via POST /query (epoch=ns); rows of every series, flattened.

    Each row maps column -> value (incl. "time" in ns for SELECTs); the series' GROUP BY
    tags are merged in. An error in any statement fails the test with the message.
    """
    params = {"q": q, "epoch": "ns"}
    if db:
        params["db"] = db
    body = urllib.parse.urlencode(params).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    # influxd 1.6 reads u/p from the URL only, never from a form body.
    url = server.url + "/query?" + urllib.parse.urlencode(server.auth_params())
    status, raw = http("POST", url, body, headers)
    if status != 200:
        pytest.fail(f"influxdb1 query {q!r} -> {status}: {raw[:500]!r}", pytrace=False)
    rows: list[dict[str, object]] = []
    for result in json.loads(raw)["results"]:
        if "error" in result:
            pytest.fail(f"influxdb1 query {q!r} failed: {result['error']}", pytrace=False)
        for series in result.get("series", []):
            tags = series.get("tags") or {}
            for values in series.get("values", []):
                rows.append({**tags, **dict(zip(series["columns"], values, strict=True))})
    return rows


InfluxPoint = tuple[dict[str, str], dict[str, object], int]


def influxdb1_points(server: RealServer, db: str, measurement: str) -> list[InfluxPoint]:
    """Every point of `measurement` as (tags, fields, time_ns), sorted by time then tags.

    Tags come from GROUP BY * (empty tag values, i.e. tags a point lacks, are left out);
    fields are the non-null columns, typed by SHOW FIELD KEYS so a float that JSON spells
    `2` is still 2.0. A tag and a field with the same key stay apart (checked on 1.6).
    """
    ident = _influxql_ident(measurement)
    field_types: dict[str, set[str]] = {}
    for key_row in influxdb1_query(server, db, f"SHOW FIELD KEYS FROM {ident}"):
        field_types.setdefault(str(key_row["fieldKey"]), set()).add(str(key_row["fieldType"]))
    params = {"q": f"SELECT * FROM {ident} GROUP BY *", "epoch": "ns", "db": db}
    params.update(server.auth_params())
    status, raw = http("GET", server.url + "/query?" + urllib.parse.urlencode(params))
    if status != 200:
        pytest.fail(f"influxdb1 SELECT from {measurement!r} -> {status}: {raw!r}", pytrace=False)
    points: list[InfluxPoint] = []
    for result in json.loads(raw)["results"]:
        if "error" in result:
            pytest.fail(f"influxdb1 SELECT from {measurement!r}: {result['error']}", pytrace=False)
        for series in result.get("series", []):
            tags = {k: v for k, v in (series.get("tags") or {}).items() if v != ""}
            columns = series["columns"]
            for values in series["values"]:
                row: dict[str, Any] = dict(zip(columns, values, strict=True))
                time_ns = int(row.pop("time"))
                fields = {
                    key: float(value) if field_types.get(key) == {"float"} else value
                    for key, value in row.items()
                    if value is not None
                }
                points.append((tags, fields, time_ns))
    points.sort(key=lambda p: (p[2], sorted(p[0].items())))
    return points


def _influxql_ident(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def vm_force_flush(server: RealServer) -> None:
    """Make every row received so far searchable (GET /internal/force_flush)."""
    status, raw = http("GET", server.url + "/internal/force_flush")
    if status != 200:
        pytest.fail(f"victoria-metrics force_flush -> {status}: {raw!r}", pytrace=False)


def vm_series(server: RealServer, match: str = '{__name__!=""}') -> list[Series]:
    """All series matching `match` as (metric name, labels, [(ts_ms, value)]), after a flush.

    Uses /api/v1/export over the whole storable time range. Export may split one series
    over several JSON lines; they are merged. Series are sorted by name then labels,
    samples by (timestamp, value); duplicate samples are kept.
    """
    vm_force_flush(server)
    # The default end is "now" truncated to seconds, which can hide samples written
    # in the current second; VM accepts timestamps up to ~2 days ahead, so look 3 ahead.
    end_s = int(time.time()) + 3 * 86400
    body = urllib.parse.urlencode({"match[]": match, "start": "0", "end": str(end_s)}).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    status, raw = http("POST", server.url + "/api/v1/export", body, headers)
    if status != 200:
        pytest.fail(f"victoria-metrics export {match!r} -> {status}: {raw[:500]!r}", pytrace=False)
    merged: dict[tuple[str, tuple[tuple[str, str], ...]], list[tuple[int, float]]] = {}
    for line in raw.splitlines():
        if not line.strip():
            continue
        item = json.loads(line)
        labels = dict(item["metric"])
        name = labels.pop("__name__")
        key = (name, tuple(sorted(labels.items())))
        samples = merged.setdefault(key, [])
        for ts, value in zip(item["timestamps"], item["values"], strict=True):
            samples.append((int(ts), float(value)))
    return [
        (name, dict(labels), sorted(samples, key=lambda s: (s[0], _float_order(s[1]))))
        for (name, labels), samples in sorted(merged.items())
    ]


def _float_order(value: float) -> float:
    return -math.inf if math.isnan(value) else value


VmPoint = tuple[dict[str, str], dict[str, float], int]


def vm_points(server: RealServer, measurement: str, separator: str = "_") -> list[VmPoint]:
    """Samples of `measurement` regrouped as line-protocol-like points (labels, fields, ts_ms).

    Series `measurement{sep}field{labels}` at one timestamp become one point whose fields
    map field -> float; labels include the `db` label VM adds. When one series has several
    samples at the same millisecond (duplicates), as many points are returned, the n-th
    point taking the n-th sample of each field. Sorted by ts, then labels, then fields.
    Limitation: measurement `cpu` with field `a_b` and measurement `cpu_a` with field `b`
    both give `cpu_a_b`; name measurements so that cannot happen.
    """
    prefix = measurement + separator
    grouped: dict[tuple[tuple[tuple[str, str], ...], int], dict[str, list[float]]] = {}
    for name, labels, samples in vm_series(server):
        if not name.startswith(prefix) or len(name) == len(prefix):
            continue
        field = name[len(prefix) :]
        label_key = tuple(sorted(labels.items()))
        for ts, value in samples:
            grouped.setdefault((label_key, ts), {}).setdefault(field, []).append(value)
    points: list[VmPoint] = []
    for (label_key, ts), fields in grouped.items():
        for n in range(max(len(values) for values in fields.values())):
            point_fields = {f: values[n] for f, values in fields.items() if n < len(values)}
            points.append((dict(label_key), point_fields, ts))
    points.sort(key=lambda p: (p[2], sorted(p[0].items()), sorted(p[1].items())))
    return points
