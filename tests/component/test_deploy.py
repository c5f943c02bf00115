"""The deploy artifacts: the Grafana dashboard and the Prometheus rules and scrape config.

They must be well formed, pass promtool, and query only what a gateway exports. The live checks
share one gateway (an upstream, the local store, and traffic that makes every labelled metric
appear) served from a background thread, and one real Prometheus, from Debian's `prometheus`
package like promtool, that scrapes it every second and evaluates alerts.yml.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Coroutine, Iterator
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from gateway.app import create_app
from gateway.config import load_config
from gateway.http.state import STATE
from gateway.server import _reload_policy
from tests.fakeupstream import FakeUpstream, Step
from tests.http.conftest import WRITER, auth, make_policy

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "influx-gateway.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
SCRAPE_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
JOB = "influx-gateway"  # the job name alerts.yml and prometheus.yml agree on
METRIC = re.compile(r"\bgateway_[a-z0-9_]+")
SELECTOR = re.compile(r"\b(gateway_[a-z0-9_]+)\s*\{([^}]*)\}")
MATCHER = re.compile(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)")
TARGET_LABELS = {"job", "instance"}  # added by Prometheus, not in the exposition
GRAFANA_INTERVALS = {"__rate_interval": "1m", "__interval": "15s", "__range": "1h"}
LEGEND_LABEL = re.compile(r"\{\{\s*(\w+)\s*\}\}")
NEEDS_PROMETHEUS = (
    "not found: install Debian's `prometheus` package (run .ci/run, which installs it, or "
    "`apt-get install prometheus`)"
)
T = time.time_ns() // 10**9 * 10**9
R = TypeVar("R")


# -- helpers ------------------------------------------------------------------------------------


def dashboard() -> dict[str, Any]:
    """The dashboard, parsed."""
    parsed: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return parsed


def query_panels() -> list[dict[str, Any]]:
    """Every panel that has queries (rows are only headings)."""
    return [panel for panel in dashboard()["panels"] if panel["type"] != "row"]


def dashboard_targets() -> list[tuple[str, dict[str, Any]]]:
    """(panel title, target) for every query of every panel."""
    return [(panel["title"], target) for panel in query_panels() for target in panel["targets"]]


def template_queries() -> dict[str, str]:
    """The label_values(...) query of every query template variable, by variable name."""
    return {
        variable["name"]: variable["definition"]
        for variable in dashboard()["templating"]["list"]
        if variable["type"] == "query"
    }


def dashboard_exprs() -> list[str]:
    """Every PromQL expression of the dashboard: panel targets and template variables."""
    return [target["expr"] for _, target in dashboard_targets()] + list(template_queries().values())


def grafana_to_promql(expr: str) -> str:
    """An expression as Grafana sends it with every variable on "All" (.*)."""
    return re.sub(r"\$\{?(\w+)\}?", lambda m: GRAFANA_INTERVALS.get(m.group(1), ".*"), expr)


def referenced_metrics(exprs: list[str]) -> set[str]:
    """Every gateway_* name in the expressions."""
    return {name for expr in exprs for name in METRIC.findall(expr)}


def exported_names(scrape: str) -> set[str]:
    """Names a query may use: every sample name, and the base name of a histogram with samples."""
    names: set[str] = set()
    for family in text_string_to_metric_families(scrape):
        names |= {sample.name for sample in family.samples}
        if family.type == "histogram" and family.samples:
            names.add(family.name)
    return names


def exported_labels(scrape: str) -> dict[str, set[str]]:
    """Label names per sample name in the scrape."""
    labels: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(scrape):
        for sample in family.samples:
            labels.setdefault(sample.name, set()).update(sample.labels)
    return labels


def unknown_labels(exprs: list[str], scrape: str) -> list[str]:
    """`metric{label}` for every matcher on a label that the metric does not have."""
    labels = exported_labels(scrape)
    return sorted(
        f"{metric}{{{label}}}"
        for expr in exprs
        for metric, matchers in SELECTOR.findall(expr)
        for label in MATCHER.findall(matchers)
        if label not in labels.get(metric, set()) | TARGET_LABELS
    )


def require(program: str) -> str:
    """The path of a program from Debian's prometheus package; fail (never skip) without it."""
    path = shutil.which(program)
    if path is None:
        pytest.fail(f"{program} {NEEDS_PROMETHEUS}")
    return path


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    """Run promtool; its output is kept for the assertion message."""
    return subprocess.run(
        [require("promtool"), *args], capture_output=True, text=True, timeout=60, check=False
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def timestamp(rfc3339: str) -> float:
    """Seconds since the epoch of an RFC 3339 time as Prometheus writes it (nanoseconds, Z)."""
    seconds, _, rest = rfc3339.partition(".")
    fraction = re.match(r"\d*", rest)
    assert fraction is not None
    zone = rest[fraction.end() :] if rest else seconds[19:]
    whole = datetime.fromisoformat(seconds[:19] + zone.replace("Z", "+00:00")).timestamp()
    return whole + float(f"0.{fraction.group() or 0}")


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Poll until the condition holds; fail naming what did not happen."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout}s: {what}")
        time.sleep(0.1)


# -- the live gateway ---------------------------------------------------------------------------


class LiveGateway:
    """A gateway app with one upstream (a FakeUpstream) and the local store, on 127.0.0.1,
    served by an event loop in a background thread so module-scoped fixtures can share it."""

    def __init__(self, tmp_path: Path) -> None:
        self._tmp_path = tmp_path
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="gateway", daemon=True)
        self._fake: FakeUpstream | None = None
        self._client: TestClient[Any, Any] | None = None

    @property
    def url(self) -> str:
        """http://127.0.0.1:port of the gateway."""
        assert self._client is not None
        return str(self._client.make_url("")).rstrip("/")

    @property
    def address(self) -> str:
        """host:port of the gateway, as a scrape target."""
        return self.url.removeprefix("http://")

    def run(self, coro: Coroutine[Any, Any, R]) -> R:
        """Run a coroutine on the gateway's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=60)

    def __enter__(self) -> LiveGateway:
        self._thread.start()
        self.run(self._start())
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.run(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.run_until_complete(self._loop.shutdown_default_executor())
        self._loop.close()

    async def _start(self) -> None:
        # Answers in order: the first batch is refused for good (400, dead-lettered), the
        # second gets 503 (one retry, upstream down for a moment), then everything is 204.
        self._fake = FakeUpstream()
        await self._fake.__aenter__()
        self._fake.script(Step(400, b'{"code":"invalid","message":"unable to parse"}'), Step(503))
        config_path = self._tmp_path / "gw.toml"
        config_path.write_text(
            f'data_dir = "{self._tmp_path / "data"}"\n'
            '[server]\nshutdown_timeout = "100ms"\n'
            "[store]\nenabled = true\n"
            f'[[upstreams]]\nname = "up"\nurl = "{self._fake.url}"\ntoken = "up-secret"\n'
            'flush_interval = "50ms"\nretry_max_delay = "200ms"\ngzip = false\n'
        )
        config = load_config(config_path, env={})
        app = create_app(config, registry=CollectorRegistry(), policy=make_policy())
        self._client = TestClient(TestServer(app, host="127.0.0.1"))
        await self._client.start_server()
        await self._send_traffic()

    async def _stop(self) -> None:
        if self._client is not None:
            await self._client.close()
        if self._fake is not None:
            await self._fake.__aexit__(None, None, None)

    async def _write(self, body: bytes, headers: dict[str, str]) -> int:
        assert self._client is not None
        response = await self._client.post("/api/v2/write?bucket=mydb", data=body, headers=headers)
        return response.status

    def _sample(self, name: str, **labels: str) -> float | None:
        assert self._client is not None
        registry = self._client.server.app[STATE].metrics.registry
        return registry.get_sample_value(name, labels)

    async def _wait_for_sample(self, name: str, **labels: str) -> None:
        # Counters exist at 0 from the start: wait for them to count; gauges only to exist.
        deadline = time.monotonic() + 10
        while (value := self._sample(name, **labels)) is None or (
            name.endswith("_total") and value == 0
        ):
            if time.monotonic() > deadline:
                raise AssertionError(f"no sample of {name}{labels} within 10s")
            await asyncio.sleep(0.02)

    async def _send_traffic(self) -> None:
        """A request of every kind, so that every labelled metric has a sample."""
        good = b"cpu,host=a v=1i %d\ncpu,host=b v=2i %d\n" % (T, T)
        assert 401 == await self._write(good, {})
        assert 400 == await self._write(b"this is not line protocol\n", auth(WRITER))
        assert 204 == await self._write(good, auth(WRITER))
        await self._wait_for_sample(
            "gateway_upstream_lines_total", upstream="up", result="deadletter"
        )
        assert 204 == await self._write(good, auth(WRITER))
        await self._wait_for_sample("gateway_upstream_lines_total", upstream="up", result="sent")
        await self._wait_for_sample(
            "gateway_upstream_retries_total", upstream="up", reason="unavailable"
        )
        await self._wait_for_sample("gateway_store_lines_total", database="mydb")
        # The SIGHUP handler (signals are not installed in-process); the data dir has no policy
        # file, so the reload fails and counts result="error".
        assert self._client is not None
        _reload_policy(self._client.server.app)
        await self._wait_for_sample("gateway_policy_reloads_total", result="error")
        # Buffer gauges are set by a refresh loop (every 2 s), not by the write path.
        await self._wait_for_sample("gateway_buffer_bytes", upstream="up")
        await self._wait_for_sample("gateway_buffer_oldest_age_seconds", upstream="store")


class Prometheus:
    """A real Prometheus server scraping the gateway every second and evaluating alerts.yml."""

    def __init__(self, tmp_path: Path, target: str) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            f"rule_files:\n  - {json.dumps(str(ALERTS))}\n"
            f"scrape_configs:\n  - job_name: {JOB}\n"
            f"    static_configs:\n      - targets: [{json.dumps(target)}]\n"
        )
        self.log = tmp_path / "prometheus.log"
        with self.log.open("wb") as log:
            self._process = subprocess.Popen(
                [
                    require("prometheus"),
                    f"--config.file={config}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address={self.url.removeprefix('http://')}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/<path>: the `data` of a success, or an AssertionError with the error."""
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = json.load(response)
        except urllib.error.HTTPError as e:
            body = json.load(e)
        if body["status"] != "success":
            raise AssertionError(f"{body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's series."""
        result: list[dict[str, Any]] = self.api("query", query=expr)["result"]
        return result

    def ready(self) -> bool:
        """Whether the server answers /-/ready."""
        if self._process.poll() is not None:
            pytest.fail(f"prometheus exited: {self.log.read_text()}")
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def rules(self) -> list[dict[str, Any]]:
        """Every loaded rule, as evaluated last."""
        return [rule for group in self.api("rules")["groups"] for rule in group["rules"]]

    def stop(self) -> None:
        """Terminate the server and wait for it."""
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(name="gateway", scope="module")
def fixture_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveGateway]:
    """A running gateway that has seen every kind of traffic."""
    with LiveGateway(tmp_path_factory.mktemp("gateway")) as gateway:
        yield gateway


@pytest.fixture(name="scrape", scope="module")
def fixture_scrape(gateway: LiveGateway) -> str:
    """The gateway's /metrics text."""
    with urllib.request.urlopen(f"{gateway.url}/metrics", timeout=10) as response:
        text: str = response.read().decode()
        return text


@pytest.fixture(name="prometheus", scope="module")
def fixture_prometheus(
    tmp_path_factory: pytest.TempPathFactory, gateway: LiveGateway
) -> Iterator[Prometheus]:
    """Prometheus with 3+ scrapes of the gateway and a rule evaluation after them."""
    prometheus = Prometheus(tmp_path_factory.mktemp("prometheus"), gateway.address)
    try:
        wait_until(prometheus.ready, "prometheus ready")
        wait_until(
            lambda: bool(prometheus.query(f'count_over_time(up{{job="{JOB}"}}[1m]) >= 3')),
            "three scrapes of the gateway",
        )
        scraped = time.time()
        wait_until(
            lambda: all(timestamp(rule["lastEvaluation"]) > scraped for rule in prometheus.rules()),
            "a rule evaluation after the third scrape",
        )
        yield prometheus
    finally:
        prometheus.stop()


@pytest.fixture(name="alert_rules")
def fixture_alert_rules(prometheus: Prometheus) -> list[dict[str, Any]]:
    """The alerting rules of alerts.yml as Prometheus loaded them."""
    return [rule for rule in prometheus.rules() if rule["type"] == "alerting"]


# -- the dashboard file -------------------------------------------------------------------------


def test_dashboard_is_json_with_panels_that_all_have_queries() -> None:
    """The dashboard parses; every panel that is not a row has at least one PromQL target."""
    without = [
        panel["title"]
        for panel in query_panels()
        if not panel.get("targets") or not all(t.get("expr") for t in panel["targets"])
    ]
    assert [] == without
    assert len(query_panels()) >= 20


def test_dashboard_targets_use_the_datasource_variable() -> None:
    """Every panel and target queries the ${datasource} variable, so any Prometheus can be picked."""
    datasources = {json.dumps(panel["datasource"], sort_keys=True) for panel in query_panels()} | {
        json.dumps(target["datasource"], sort_keys=True) for _, target in dashboard_targets()
    }
    assert {'{"type": "prometheus", "uid": "${datasource}"}'} == datasources


def test_dashboard_declares_its_template_variables() -> None:
    """datasource, then job, instance, database, token and upstream from label_values()."""
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert ["datasource", "job", "instance", "database", "token", "upstream"] == list(variables)
    assert "prometheus" == variables["datasource"]["query"]
    assert all(q.startswith("label_values(gateway_") for q in template_queries().values())


def test_dashboard_panel_ids_are_unique() -> None:
    """No two panels share an id (Grafana would mix up their links and edits)."""
    ids = [panel["id"] for panel in dashboard()["panels"]]
    assert sorted(set(ids)) == sorted(ids)


def test_dashboard_schema_and_uid_are_fixed() -> None:
    """schemaVersion 39 and a fixed uid, so re-importing replaces the dashboard."""
    assert (39, "influx-gateway") == (dashboard()["schemaVersion"], dashboard()["uid"])


# -- promtool -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_alert_rules_pass_promtool_check() -> None:
    """`promtool check rules` accepts alerts.yml (valid YAML, PromQL and templates)."""
    result = run_promtool("check", "rules", str(ALERTS))
    assert 0 == result.returncode, result.stdout + result.stderr


@pytest.mark.slow
def test_scrape_config_passes_promtool_check() -> None:
    """`promtool check config` accepts the example prometheus.yml and the rules it loads."""
    result = run_promtool("check", "config", str(SCRAPE_CONFIG))
    assert 0 == result.returncode, result.stdout + result.stderr


def alert_test(tmp_path: Path, series: str, values: str, at: str, firing: str | None) -> str:
    """Run alerts.yml over one input series with `promtool test rules`, expecting exactly the
    alert `firing` (with the series' labels and severity "warning") at `at`, or none; return
    promtool's output when the expectation does not hold, "" when it does."""
    labels = series[series.index("{") + 1 : -1]
    expected = "[]"
    if firing is not None:
        expected = json.dumps(
            [
                {
                    "labels": f'ALERTS{{alertname="{firing}", alertstate="firing", severity="warning", {labels}}}',
                    "value": 1,
                }
            ]
        )
    test_file = tmp_path / "alerts_test.yml"
    test_file.write_text(
        f"rule_files:\n  - {json.dumps(str(ALERTS))}\n"
        "evaluation_interval: 1m\n"
        "tests:\n  - interval: 1m\n"
        f"    input_series:\n      - series: {json.dumps(series)}\n        values: {json.dumps(values)}\n"
        f'    promql_expr_test:\n      - expr: ALERTS{{alertstate="firing"}}\n'
        f"        eval_time: {at}\n        exp_samples: {expected}\n"
    )
    result = run_promtool("test", "rules", str(test_file))
    return "" if result.returncode == 0 else result.stdout + result.stderr


DEADLETTER = 'gateway_upstream_lines_total{instance="gw:8086", job="influx-gateway", upstream="up", result="deadletter"}'
BUFFER = 'gateway_buffer_bytes{instance="gw:8086", job="influx-gateway", upstream="up"}'


@pytest.mark.slow
def test_dead_letter_alert_fires_for_the_first_dead_letter(tmp_path: Path) -> None:
    """A dead-letter counter that appears at 1 and stays there (increase() alone sees 0) fires."""
    assert "" == alert_test(tmp_path, DEADLETTER, "_x4 1x30", "8m", "DeadLettersGrowing")


@pytest.mark.slow
def test_dead_letter_alert_fires_once_for_a_new_growing_series(tmp_path: Path) -> None:
    """Both branches of the expression match a new, growing series: one alert, no eval error."""
    assert "" == alert_test(tmp_path, DEADLETTER, "_x4 1 2 3 4x30", "8m", "DeadLettersGrowing")


@pytest.mark.slow
def test_dead_letter_alert_resolves_after_its_window(tmp_path: Path) -> None:
    """15 minutes after the last dead letter the alert is gone."""
    assert "" == alert_test(tmp_path, DEADLETTER, "_x4 1 2 2x40", "25m", None)


@pytest.mark.slow
def test_buffer_alert_ignores_a_large_steady_backlog(tmp_path: Path) -> None:
    """2 GiB pending but not growing: BufferFilling stays quiet."""
    assert "" == alert_test(tmp_path, BUFFER, "2147483648x60", "50m", None)


@pytest.mark.slow
def test_buffer_alert_fires_for_a_large_growing_backlog(tmp_path: Path) -> None:
    """2 GiB pending and 10 MiB more every minute: BufferFilling fires after 15 minutes."""
    assert "" == alert_test(tmp_path, BUFFER, "2147483648+10485760x60", "50m", "BufferFilling")


# -- metric references against a live scrape ----------------------------------------------------


def test_every_metric_the_dashboard_queries_is_exported(scrape: str) -> None:
    """Each gateway_* name in a dashboard query or variable has samples in a live /metrics."""
    assert set() == referenced_metrics(dashboard_exprs()) - exported_names(scrape)


def test_every_label_the_dashboard_matches_on_is_exported(scrape: str) -> None:
    """Each label in a dashboard selector (but job/instance) is a label of that metric."""
    assert [] == unknown_labels(dashboard_exprs(), scrape)


def test_every_exported_metric_is_on_the_dashboard(scrape: str) -> None:
    """The dashboard shows every gateway_* family the gateway exports."""
    families = {
        family.name + ("_total" if family.type == "counter" else "")
        for family in text_string_to_metric_families(scrape)
        if family.name.startswith("gateway_") and not family.name.endswith("_created")
    }
    referenced = {
        re.sub(r"_(bucket|sum|count)$", "", n) for n in referenced_metrics(dashboard_exprs())
    }
    assert set() == families - referenced


@pytest.mark.slow
def test_every_metric_the_alerts_query_is_exported(
    scrape: str, alert_rules: list[dict[str, Any]]
) -> None:
    """Each gateway_* name in an alert expression has samples in a live /metrics."""
    exprs = [rule["query"] for rule in alert_rules]
    assert set() == referenced_metrics(exprs) - exported_names(scrape)


@pytest.mark.slow
def test_every_label_the_alerts_match_on_is_exported(
    scrape: str, alert_rules: list[dict[str, Any]]
) -> None:
    """Each label in an alert selector (but job/instance) is a label of that metric."""
    assert [] == unknown_labels([rule["query"] for rule in alert_rules], scrape)


# -- the dashboard and the rules in a real Prometheus --------------------------------------------


@pytest.mark.slow
def test_every_dashboard_query_returns_series(prometheus: Prometheus) -> None:
    """Every panel query, variables on "All", runs in Prometheus and returns data."""
    failures = []
    for title, target in dashboard_targets():
        try:
            if not prometheus.query(grafana_to_promql(target["expr"])):
                failures.append(f"{title} [{target['refId']}]: no series")
        except AssertionError as e:
            failures.append(f"{title} [{target['refId']}]: {e}")
    assert [] == failures


@pytest.mark.slow
def test_every_legend_names_labels_of_its_series(prometheus: Prometheus) -> None:
    """Each {{label}} of a legend is a label of every series its query returns."""
    failures = []
    for title, target in dashboard_targets():
        wanted = set(LEGEND_LABEL.findall(target["legendFormat"]))
        for series in prometheus.query(grafana_to_promql(target["expr"])):
            if missing := wanted - set(series["metric"]):
                failures.append(f"{title} [{target['refId']}]: {sorted(missing)}")
    assert [] == failures


@pytest.mark.slow
def test_every_template_variable_has_values(prometheus: Prometheus) -> None:
    """Each label_values(selector, label) variable finds values in Prometheus."""
    empty = []
    for name, definition in template_queries().items():
        match = re.fullmatch(r"label_values\((.*), (\w+)\)", definition)
        assert match is not None, definition
        selector, label = match.groups()
        if not prometheus.query(f"count by ({label}) ({grafana_to_promql(selector)})"):
            empty.append(name)
    assert [] == empty


@pytest.mark.slow
def test_every_alert_rule_evaluates_without_error(alert_rules: list[dict[str, Any]]) -> None:
    """Prometheus evaluates every rule of alerts.yml with health "ok"."""
    assert {rule["name"]: "ok" for rule in alert_rules} == {
        rule["name"]: rule["health"] for rule in alert_rules
    }


@pytest.mark.slow
def test_every_alert_has_for_severity_summary_and_description(
    alert_rules: list[dict[str, Any]],
) -> None:
    """Each alert waits (`for`), has a severity label and summary and description annotations."""
    incomplete = [
        rule["name"]
        for rule in alert_rules
        if not rule["duration"]
        or rule["labels"].get("severity") not in {"critical", "warning", "info"}
        or not rule["annotations"].get("summary")
        or not rule["annotations"].get("description")
    ]
    assert [] == incomplete
    assert len(alert_rules) >= 8


@pytest.mark.slow
def test_every_alert_tells_the_operator_a_command_to_run(
    alert_rules: list[dict[str, Any]],
) -> None:
    """Each description names an `influx-gateway ...` command (buffer status, deadletter list, ...)."""
    silent = [
        rule["name"]
        for rule in alert_rules
        if "`influx-gateway " not in rule["annotations"]["description"]
    ]
    assert [] == silent


@pytest.mark.slow
def test_traffic_raises_exactly_the_dead_letter_and_reload_alerts(
    prometheus: Prometheus,
) -> None:
    """One dead-lettered batch and one failed reload make exactly those two alerts active."""
    active = {alert["labels"]["alertname"] for alert in prometheus.api("alerts")["alerts"]}
    assert {"DeadLettersGrowing", "PolicyReloadFailed"} == active
