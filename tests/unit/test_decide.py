"""The upstream status table (SPEC 6), backoff, Retry-After and partial-write bodies."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.forward.decide import (
    MAX_RETRY_AFTER,
    REASONS,
    UpstreamDecision,
    UpstreamResponse,
    backoff,
    decide,
    parse_partial_write,
    parse_retry_after,
)

NOW = 1_700_000_000.0  # Tue, 14 Nov 2023 22:13:20 GMT

# Partial-write bodies as each server sends them.
V3_PARTIAL = orjson.dumps(
    {
        "error": "partial write of line protocol occurred",
        "data": [
            {
                "original_line": "cpu,host=a val= 123",
                "line_number": 2,
                "error_message": "No fields were provided",
            },
            {
                "original_line": "cpu v=x 1",
                "line_number": 4,
                "error_message": "invalid column type for column 'v', expected "
                "iox::column_type::field::float, got iox::column_type::field::string",
            },
        ],
    }
)
DEDICATED_PARTIAL = orjson.dumps(
    {
        "code": "invalid",
        "line": 2,
        "message": "partial write of line protocol occurred:\n  errors encountered on line(s):\n"
        "  error parsing line 2 (1-based): Invalid measurement was provided\n"
        "  error parsing line 4 (1-based): Unable to parse timestamp value '1234610000000000000000'",
    }
)
V1_PARTIAL = orjson.dumps(
    {
        "error": 'partial write: field type conflict: input field "value" on measurement "cpu" '
        "is type float, already exists as type integer dropped=1"
    }
)
V2_PARTIAL = orjson.dumps(
    {
        "code": "unprocessable entity",
        "message": "failure writing points to database: partial write: field type conflict: "
        'input field "v" on measurement "m" is type float, already exists as type integer dropped=1',
    }
)
V1_NO_DB = b'{"error":"database not found: \\"telegraf\\""}'
V2_NO_BUCKET = b'{"code":"not found","message":"bucket \\"telegraf\\" not found"}'
V3_NO_DB = b"database not found telegraf"


class MaxRandom(random.Random):
    """A random source whose `uniform` always picks the upper bound: backoff at its ceiling."""

    def uniform(self, a: float, b: float) -> float:
        return b


def _decide(
    status: int | None,
    body: bytes = b"",
    *,
    retry_after: str | None = None,
    error: str | None = None,
    attempt: int = 1,
    batch_lines: int = 10,
    on_missing_database: Any = "retry",
    retry_max_delay: float = 60.0,
    rng: random.Random | None = None,
) -> UpstreamDecision:
    return decide(
        UpstreamResponse(status, body, retry_after, error),
        attempt=attempt,
        batch_lines=batch_lines,
        on_missing_database=on_missing_database,
        retry_max_delay=retry_max_delay,
        now=NOW,
        rng=rng or random.Random(1),
    )


# -- the table, row by row -----------------------------------------------------------------------

ROWS = [
    pytest.param(dict(status=200), ("done", "ok", "pass"), id="200"),
    pytest.param(dict(status=204), ("done", "ok", "pass"), id="204"),
    pytest.param(
        dict(status=400, body=V3_PARTIAL), ("partial", "partial_write", "pass"), id="400-partial-v3"
    ),
    pytest.param(
        dict(status=422, body=V3_PARTIAL),
        ("partial", "partial_write", "pass"),
        id="422-partial-v3-limit",
    ),
    pytest.param(
        dict(status=400, body=DEDICATED_PARTIAL),
        ("partial", "partial_write", "pass"),
        id="400-partial-dedicated",
    ),
    pytest.param(
        dict(status=400, body=V1_PARTIAL), ("partial", "partial_write", "pass"), id="400-partial-v1"
    ),
    pytest.param(
        dict(status=422, body=V2_PARTIAL), ("partial", "partial_write", "pass"), id="422-partial-v2"
    ),
    pytest.param(
        dict(status=400, body=b'{"code":"invalid","message":"failed to parse line protocol: x"}'),
        ("deadletter", "rejected", "pass"),
        id="400",
    ),
    pytest.param(dict(status=406), ("deadletter", "rejected", "pass"), id="406"),
    pytest.param(
        dict(status=422, body=b'{"code":"unprocessable entity","message":"x"}'),
        ("deadletter", "rejected", "pass"),
        id="422",
    ),
    pytest.param(dict(status=401), ("retry", "auth", "fail"), id="401"),
    pytest.param(dict(status=403), ("retry", "auth", "fail"), id="403"),
    pytest.param(
        dict(status=404, body=V1_NO_DB),
        ("retry", "database_not_found", "warn"),
        id="404-db-v1-retry",
    ),
    pytest.param(
        dict(status=404, body=V2_NO_BUCKET),
        ("retry", "database_not_found", "warn"),
        id="404-bucket-v2-retry",
    ),
    pytest.param(
        dict(status=404, body=V3_NO_DB),
        ("retry", "database_not_found", "warn"),
        id="404-db-v3-retry",
    ),
    pytest.param(
        dict(status=404, body=V1_NO_DB, on_missing_database="deadletter"),
        ("deadletter", "database_not_found", "warn"),
        id="404-db-deadletter",
    ),
    pytest.param(
        dict(status=404, body=b"404 page not found"),
        ("retry", "not_found", "fail"),
        id="404-wrong-path",
    ),
    pytest.param(
        dict(status=404, body=V2_NO_BUCKET, on_missing_database="deadletter", batch_lines=1),
        ("deadletter", "database_not_found", "warn"),
        id="404-bucket-deadletter",
    ),
    pytest.param(dict(status=413, batch_lines=2), ("split", "too_large", "pass"), id="413-split"),
    pytest.param(
        dict(status=413, batch_lines=1), ("deadletter", "too_large", "pass"), id="413-single-line"
    ),
    pytest.param(dict(status=429), ("retry", "rate_limited", "warn"), id="429"),
    pytest.param(dict(status=502), ("retry", "unavailable", "warn"), id="502"),
    pytest.param(dict(status=503), ("retry", "unavailable", "warn"), id="503"),
    pytest.param(dict(status=504), ("retry", "unavailable", "warn"), id="504"),
    pytest.param(dict(status=500), ("retry", "server_error", "warn"), id="500"),
    pytest.param(dict(status=501), ("retry", "server_error", "warn"), id="501"),
    pytest.param(dict(status=599), ("retry", "server_error", "warn"), id="599"),
    pytest.param(
        dict(status=None, error="timeout after 30s"), ("retry", "timeout", "warn"), id="timeout"
    ),
    pytest.param(
        dict(status=None, error="connection refused: x"),
        ("retry", "connection", "warn"),
        id="refused",
    ),
    pytest.param(
        dict(status=None, error="connection reset: x"), ("retry", "connection", "warn"), id="reset"
    ),
    pytest.param(dict(status=None), ("retry", "connection", "warn"), id="no-error-text"),
    pytest.param(dict(status=100), ("retry", "unexpected_status", "fail"), id="100"),
    pytest.param(dict(status=301), ("retry", "unexpected_status", "fail"), id="301"),
    pytest.param(dict(status=405), ("retry", "unexpected_status", "fail"), id="405"),
    pytest.param(dict(status=409), ("retry", "unexpected_status", "fail"), id="409"),
]


@pytest.mark.parametrize(("kwargs", "expected"), ROWS)
def test_status_table_row(kwargs: dict[str, Any], expected: tuple[str, str, str]) -> None:
    """Each upstream answer maps to its SPEC 6 outcome, metric reason and health."""
    decision = _decide(**kwargs)
    assert expected == (decision.outcome, decision.reason, decision.health)


@pytest.mark.parametrize(("kwargs", "expected"), ROWS)
def test_every_reason_is_a_known_label(kwargs: dict[str, Any], expected: object) -> None:
    """Every decision's reason is one of the documented metric label values."""
    assert _decide(**kwargs).reason in REASONS


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(status=204),
        dict(status=400, body=V3_PARTIAL),
        dict(status=400),
        dict(status=413, batch_lines=2),
    ],
    ids=["done", "partial", "deadletter", "split"],
)
def test_settled_outcomes_do_not_wait(kwargs: dict[str, Any]) -> None:
    """Done, partial, dead-letter and split carry no delay."""
    assert 0.0 == _decide(**kwargs).delay


def test_partial_carries_the_rejected_line_numbers() -> None:
    """A partial write names the batch lines the upstream refused."""
    assert (2, 4) == _decide(400, V3_PARTIAL).rejected_lines


def test_partial_without_line_numbers_is_empty() -> None:
    """An InfluxDB 2.x partial write does not say which lines: rejected_lines is empty."""
    assert () == _decide(422, V2_PARTIAL).rejected_lines


# -- delays --------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [401, 403, 404, 500, None])
def test_retry_waits_the_backoff(status: int | None) -> None:
    """A retried answer waits the backoff of its attempt."""
    assert 2.0 == _decide(status, attempt=3, rng=MaxRandom()).delay


def test_retry_delay_is_capped_by_retry_max_delay() -> None:
    """The backoff never exceeds the upstream's retry_max_delay."""
    assert 5.0 == _decide(500, attempt=30, retry_max_delay=5.0, rng=MaxRandom()).delay


@pytest.mark.parametrize("status", [429, 502, 503, 504])
def test_retry_after_longer_than_backoff_is_honoured(status: int) -> None:
    """429/502/503/504 wait the Retry-After when it is longer than the backoff."""
    assert 30.0 == _decide(status, retry_after="30", rng=MaxRandom()).delay


def test_retry_after_may_exceed_retry_max_delay() -> None:
    """Retry-After is honoured beyond retry_max_delay, up to 10 minutes."""
    assert 300.0 == _decide(429, retry_after="300", retry_max_delay=60.0).delay


def test_retry_after_is_capped_at_ten_minutes() -> None:
    """A huge Retry-After waits 600 s."""
    assert MAX_RETRY_AFTER == _decide(503, retry_after="86400").delay


def test_backoff_longer_than_retry_after_wins() -> None:
    """With a short Retry-After, the (longer) backoff is used."""
    assert 8.0 == _decide(503, retry_after="1", attempt=5, rng=MaxRandom()).delay


def test_retry_after_as_http_date_is_honoured() -> None:
    """A Retry-After HTTP-date one minute ahead waits 60 s."""
    assert 60.0 == _decide(503, retry_after="Tue, 14 Nov 2023 22:14:20 GMT", rng=MaxRandom()).delay


def test_other_5xx_ignore_retry_after() -> None:
    """A 500 waits the backoff only, as the table says, whatever its Retry-After."""
    assert 0.5 == _decide(500, retry_after="300", rng=MaxRandom()).delay


# -- messages ------------------------------------------------------------------------------------


def test_message_is_the_status_and_the_body() -> None:
    """The message shows the status and the upstream's own words."""
    assert 'HTTP 400: {"error":"bad"}' == _decide(400, b'{"error":"bad"}').message


def test_message_is_one_line_of_at_most_500_body_characters() -> None:
    """A long multi-line body becomes one line, cut at 500 characters of body."""
    message = _decide(400, b"a\nb\r\n" + b"x" * 2000).message
    assert "HTTP 400: a b " + "x" * 495 == message


def test_message_without_body_is_the_status() -> None:
    """An empty body gives just the status."""
    assert "HTTP 503" == _decide(503).message


def test_message_of_a_connection_failure_is_the_error() -> None:
    """With no answer, the message is the client's description of what went wrong."""
    assert "timeout after 30s" == _decide(None, error="timeout after 30s").message


def test_unexpected_status_message_says_data_is_kept() -> None:
    """An unexpected status is reported as such, with a hint to check the upstream config."""
    message = _decide(302, b"moved").message
    assert message.startswith("unexpected HTTP 302: moved;") and "retrying" in message


def test_wrong_path_404_message_hints_at_the_config() -> None:
    """A 404 that is not about a database points at the upstream url/api."""
    assert "url or api" in _decide(404, b"404 page not found").message


# -- backoff -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempt", "expected"), [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (8, 60.0)]
)
def test_backoff_ceiling_doubles_per_attempt_up_to_cap(attempt: int, expected: float) -> None:
    """The ceiling is base * 2**(attempt-1), capped."""
    assert expected == backoff(attempt, cap=60.0, rng=MaxRandom())


def test_backoff_is_jittered() -> None:
    """Full jitter: successive delays of the same attempt differ."""
    rng = random.Random(7)
    assert len({backoff(6, cap=60.0, rng=rng) for _ in range(20)}) > 1


def test_backoff_with_zero_cap_is_zero() -> None:
    """retry_max_delay = 0 means retry at once."""
    assert 0.0 == backoff(5, cap=0.0, rng=MaxRandom())


def test_backoff_survives_huge_attempt_numbers() -> None:
    """An upstream down for days (attempt in the millions) does not overflow."""
    assert 60.0 == backoff(10**9, cap=60.0, rng=MaxRandom())


@given(
    attempt=st.integers(min_value=-5, max_value=10_000),
    cap=st.floats(min_value=0.0, max_value=1e6),
    base=st.floats(min_value=0.001, max_value=100.0),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_backoff_is_always_within_zero_and_cap(
    attempt: int, cap: float, base: float, seed: int
) -> None:
    """Whatever the attempt, base and seed: 0 <= delay <= cap."""
    delay = backoff(attempt, base=base, cap=cap, rng=random.Random(seed))
    assert 0.0 <= delay <= cap


# -- Retry-After ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("120", 120.0, id="seconds"),
        pytest.param(" 5 ", 5.0, id="padded"),
        pytest.param("0", 0.0, id="zero"),
        pytest.param("1.5", 1.5, id="fraction"),
        pytest.param("Tue, 14 Nov 2023 22:14:20 GMT", 60.0, id="http-date"),
        pytest.param("Tuesday, 14-Nov-23 22:14:20 GMT", 60.0, id="rfc850-date"),
        pytest.param("Tue Nov 14 22:14:20 2023", 60.0, id="asctime-date"),
        pytest.param("Tue, 14 Nov 2023 22:00:00 GMT", 0.0, id="past-date"),
        pytest.param("99999999999999999999", 600.0, id="huge-seconds"),
        pytest.param("Fri, 01 Jan 2100 00:00:00 GMT", 600.0, id="far-date"),
        pytest.param(None, None, id="absent"),
        pytest.param("", None, id="empty"),
        pytest.param("soon", None, id="garbage"),
        pytest.param("-5", None, id="negative"),
        pytest.param("1e3", None, id="exponent"),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    """Delta-seconds and HTTP-dates are read and capped at 600 s; anything else is None."""
    assert expected == parse_retry_after(value, NOW)


@given(st.text(max_size=64))
def test_parse_retry_after_never_fails(value: str) -> None:
    """Any header text gives None or a wait between 0 and 600 s."""
    seconds = parse_retry_after(value, NOW)
    assert seconds is None or 0.0 <= seconds <= MAX_RETRY_AFTER


# -- partial-write bodies ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        pytest.param(400, V3_PARTIAL, (2, 4), id="influxdb3"),
        pytest.param(400, DEDICATED_PARTIAL, (2, 4), id="cloud-dedicated"),
        pytest.param(400, V1_PARTIAL, (), id="influxdb1"),
        pytest.param(
            400,
            b'{"error":"partial write: points beyond retention policy dropped=3"}',
            (),
            id="influxdb1-retention",
        ),
        pytest.param(422, V2_PARTIAL, (), id="influxdb2"),
        pytest.param(422, V3_PARTIAL, (2, 4), id="influxdb3-schema-limit"),
    ],
)
def test_partial_write_body_of_each_server(
    status: int, body: bytes, expected: tuple[int, ...]
) -> None:
    """Each server's partial-write body is recognised, with its line numbers when it gives them."""
    assert expected == parse_partial_write(status, body)


@pytest.mark.parametrize(
    ("status", "body"),
    [
        pytest.param(
            400,
            b'{"error":"parsing failed for write_lp endpoint","data":{"line_number":2}}',
            id="influxdb3-accept-partial-false",
        ),
        pytest.param(
            400,
            b'{"code":"invalid","line":2,"message":"failed to parse line protocol:\\n  error parsing line 2 (1-based): x"}',
            id="dedicated-whole-batch",
        ),
        pytest.param(
            400,
            b'{"code":"invalid","message":"unable to parse \'cpu\': missing fields"}',
            id="influxdb2-parse-error",
        ),
        pytest.param(400, b"bad request", id="plain-text"),
        pytest.param(400, b"", id="empty"),
        pytest.param(400, b"[1, 2]", id="json-array"),
        pytest.param(500, V3_PARTIAL, id="server-error-status"),
        pytest.param(204, b"", id="success"),
    ],
)
def test_not_a_partial_write(status: int, body: bytes) -> None:
    """Whole-batch rejections and other bodies are not partial writes."""
    assert None is parse_partial_write(status, body)


def test_partial_write_line_numbers_are_sorted_and_unique() -> None:
    """Repeated or unordered line numbers come back once each, ascending."""
    body = orjson.dumps(
        {
            "error": "partial write of line protocol occurred",
            "data": [{"line_number": n, "error_message": "x"} for n in (5, 2, 5)],
        }
    )
    assert (2, 5) == parse_partial_write(400, body)


def test_partial_write_item_without_line_number_makes_lines_unknown() -> None:
    """One InfluxDB 3 error without a usable line number: the rejected lines are unknown."""
    body = orjson.dumps(
        {
            "error": "partial write of line protocol occurred",
            "data": [{"line_number": 2, "error_message": "x"}, {"error_message": "y"}],
        }
    )
    assert () == parse_partial_write(400, body)


def test_partial_write_body_cut_short_makes_lines_unknown() -> None:
    """A partial-write body truncated at the 64 KiB read limit gives unknown lines, not None."""
    assert () == parse_partial_write(400, V3_PARTIAL[:60])


def test_partial_write_listing_100_errors_may_be_cut() -> None:
    """A list of 100 line errors may have been cut by the server: the lines are unknown."""
    errors = "".join(f"\n  error parsing line {n} (1-based): x" for n in range(1, 101))
    body = orjson.dumps(
        {
            "code": "invalid",
            "line": 1,
            "message": "partial write of line protocol occurred:" + errors,
        }
    )
    assert () == parse_partial_write(400, body)
