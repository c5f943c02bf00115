"""Merging the metrics of several workers into the gateway's."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gateway.metricsmerge import merge_expositions
from gateway.observability import Metrics


def samples(exposition: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(exposition.decode())
        for s in family.samples
    }


def worker() -> Metrics:
    return Metrics(CollectorRegistry())


def test_counters_histograms_and_additive_gauges_are_summed() -> None:
    a, b = worker(), worker()
    a.write_lines.labels("db", "tok", "accepted").inc(5)
    b.write_lines.labels("db", "tok", "accepted").inc(7)
    b.write_lines.labels("db", "tok", "rejected").inc(1)  # only one worker saw it
    a.http_duration.labels("v2_write").observe(0.01)
    b.http_duration.labels("v2_write").observe(0.2)
    a.buffer_bytes.labels("up").set(10)
    b.buffer_bytes.labels("up").set(5)
    merged = samples(
        merge_expositions(
            [generate_latest(a.registry).decode(), generate_latest(b.registry).decode()]
        )
    )
    labels = (("database", "db"), ("result", "accepted"), ("token", "tok"))
    assert merged[("gateway_write_lines_total", labels)] == 12
    rejected = (("database", "db"), ("result", "rejected"), ("token", "tok"))
    assert merged[("gateway_write_lines_total", rejected)] == 1
    endpoint = (("endpoint", "v2_write"),)
    assert merged[("gateway_http_request_duration_seconds_count", endpoint)] == 2
    assert abs(merged[("gateway_http_request_duration_seconds_sum", endpoint)] - 0.21) < 1e-9
    le_05 = (("endpoint", "v2_write"), ("le", "0.05"))
    assert merged[("gateway_http_request_duration_seconds_bucket", le_05)] == 1
    assert merged[("gateway_buffer_bytes", (("upstream", "up"),))] == 15


def test_gauges_that_do_not_add_up() -> None:
    a, b = worker(), worker()
    a.upstream_up.labels("up").set(1)
    b.upstream_up.labels("up").set(0)
    a.buffer_full.set(0)
    b.buffer_full.set(1)
    a.buffer_oldest_age.labels("up").set(3.0)
    b.buffer_oldest_age.labels("up").set(9.0)
    merged = samples(
        merge_expositions(
            [generate_latest(a.registry).decode(), generate_latest(b.registry).decode()]
        )
    )
    assert merged[("gateway_upstream_up", (("upstream", "up"),))] == 0  # down for one worker
    assert merged[("gateway_buffer_full", ())] == 1
    assert merged[("gateway_buffer_oldest_age_seconds", (("upstream", "up"),))] == 9.0
    build = [v for (name, _), v in merged.items() if name == "gateway_build_info"]
    assert build == [1.0]


def test_one_exposition_is_unchanged_in_value() -> None:
    a = worker()
    a.write_bytes.labels("db", "tok").inc(123)
    text = generate_latest(a.registry)
    assert samples(merge_expositions([text.decode()])) == samples(text)
