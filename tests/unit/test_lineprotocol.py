"""Unit tests for gateway.lineprotocol.validate: the acceptance table and the gateway's rules."""

from __future__ import annotations

import time

import pytest

from gateway.errors import LineProtocolBodyError
from gateway.lineprotocol import LineError, TimeRules, ValidationResult, validate
from tests.unit.lp_corpus import INVALID, NOW, SWALLOWS_NEXT_LINES, VALID, T

NO_GUARD = TimeRules(guard=False)


def check(body: bytes, precision: str = "ns", **options: object) -> ValidationResult:
    """validate() with the corpus clock."""
    return validate(body, precision, now_ns=NOW, **options)  # type: ignore[arg-type]


def reasons(result: ValidationResult) -> list[tuple[int, str]]:
    """(line, reason) of every listed error."""
    return [(error.line, error.reason) for error in result.errors]


@pytest.mark.parametrize(
    ("line", "expected"),
    [pytest.param(line, expected, id=name) for name, line, expected in VALID],
)
def test_valid_line_is_accepted_and_normalized(line: bytes, expected: bytes | None) -> None:
    """A valid line is accepted, alone in the output, normalized as expected."""
    result = check(line + b"\n")
    assert ([], 1) == (reasons(result), result.accepted)
    assert (line if expected is None else expected) + b"\n" == result.body


@pytest.mark.parametrize(
    ("line", "reason"),
    [pytest.param(line, reason, id=name) for name, line, reason in INVALID],
)
def test_invalid_line_is_rejected_with_reason(line: bytes, reason: str) -> None:
    """An invalid line is rejected with a precise reason and nothing is accepted."""
    result = check(line + b"\n")
    assert [(1, reason)] == reasons(result)
    assert (0, 1, b"") == (result.accepted, result.rejected, result.body)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        pytest.param(line, reason, id=name)
        for name, line, reason in INVALID
        if name not in SWALLOWS_NEXT_LINES
    ],
)
def test_invalid_line_does_not_hide_its_neighbours(line: bytes, reason: str) -> None:
    """A bad line between two good ones costs exactly itself, reported on line 2."""
    good = b"ok f=1 " + T + b"\n"
    result = check(good + line + b"\n" + good)
    assert [(2, reason)] == reasons(result)
    assert (2, good + good) == (result.accepted, result.body)


def test_line_error_renders_influxdb_style() -> None:
    """LineError reads like InfluxDB 3's per-line message."""
    assert "error parsing line 3 (1-based): no fields" == str(LineError(3, "no fields"))


def test_plain_body_is_returned_without_copy() -> None:
    """A body that needs no change comes back as the very same object."""
    body = b"".join(
        b"cpu,cpu=cpu%d,host=h1 usage_user=1.5,usage_idle=96.1 %s\n" % (i, T) for i in range(50)
    )
    result = check(body)
    assert result.body is body
    assert (50, 0) == (result.accepted, result.rejected)


def test_escaped_body_that_needs_no_change_is_returned_without_copy() -> None:
    """Lines that take the exact parser but need no change still keep the input object."""
    body = b'm,t=a\\ b f="x\\"y",g="multi\nline" ' + T + b"\n" + b"n f=1 " + T + b"\n"
    assert check(body).body is body


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"m f=1 " + T, id="no-final-newline"),
        pytest.param(b"m f=1 " + T + b"\n\n", id="blank-line"),
        pytest.param(b"# hello\nm f=1 " + T + b"\n", id="comment"),
        pytest.param(b"m f=1 " + T + b"\r\n", id="crlf"),
        pytest.param(b"m f=1\n", id="missing-timestamp"),
    ],
)
def test_body_needing_a_change_is_rewritten(body: bytes) -> None:
    """Any normalization produces a new, clean body."""
    result = check(body)
    assert b"m f=1 " + T + b"\n" == result.body


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\n\n  \n\t\n", id="blank-lines"),
        pytest.param(b"# one\n   # two\n\t#three", id="comments"),
        pytest.param(b"\r\n \r\n", id="crlf-blank-lines"),
    ],
)
def test_body_without_lines_has_neither_accepted_nor_rejected(body: bytes) -> None:
    """Blank and comment lines are no lines at all: the caller answers "no data"."""
    result = check(body)
    assert (0, 0, b"", None, None) == (
        result.accepted,
        result.rejected,
        result.body,
        result.min_time_ns,
        result.max_time_ns,
    )


def test_crlf_body_loses_its_carriage_returns() -> None:
    """CR before each newline and at the very end is removed, but not inside strings."""
    body = b"a f=1 " + T + b'\r\nb s="x\r\ny" ' + T + b"\r\nc f=1 " + T + b"\r"
    result = check(body)
    assert b"a f=1 " + T + b'\nb s="x\r\ny" ' + T + b"\nc f=1 " + T + b"\n" == result.body


def test_line_numbers_count_blank_comment_and_string_lines() -> None:
    """Errors carry the physical line where the bad line starts, as an editor shows it."""
    body = b"\n".join(
        [
            b"# header",  # 1
            b"",  # 2
            b'ok s="one',  # 3
            b'two" ' + T,  # 4 (inside the string of line 3)
            b"bad",  # 5
            b"  # indented comment",  # 6
            b'bad2 s="x\ny" 1.5',  # 7-8
            b"bad3 f=1.",  # 9
        ]
    )
    result = check(body)
    assert [
        (5, "no fields"),
        (7, "unexpected `.5` after the timestamp"),
        (9, "invalid float value `1.`"),
    ] == reasons(result)
    assert 1 == result.accepted


def test_unterminated_string_swallows_the_rest_like_influxdb() -> None:
    """An open quote keeps the line going until a closing quote: here, to the end of the body."""
    body = b'a s="x\nb f=1 ' + T + b"\nc f=1 " + T + b"\n"
    result = check(body)
    assert ([(1, "unterminated string value for field `s`")], 0) == (
        reasons(result),
        result.accepted,
    )


def test_comment_with_quote_swallows_following_lines_like_influxdb() -> None:
    """IOx's splitter counts `=` in a comment too: `a="` opens a string until the next quote."""
    body = b'# a="b\nm f=1 ' + T + b"\nm f=2 " + T + b'"\nm f=3 ' + T + b"\n"
    result = check(body)
    assert (1, 1) == (result.accepted, result.rejected)
    assert 2 == result.errors[0].line
    assert b"m f=3 " + T + b"\n" == result.body


def test_escaped_newline_continues_a_name() -> None:
    """A backslash escapes a newline too: the measurement spans two physical lines."""
    body = b"m\\\nx f=1 " + T + b"\nn f=1 " + T + b"\n"
    result = check(body)
    assert (2, body) == (result.accepted, result.body)


def test_comma_in_field_key_escaped_so_output_splits_like_input() -> None:
    """`a,b=1,s="x=y"` (last line of a body) is accepted; its output no longer joins the next line."""
    line = b'm a,b=1,s="x=y" ' + T
    result = check(line)
    assert b'm a\\,b=1,s="x=y" ' + T + b"\n" == result.body
    assert 1 == check(result.body + b"n f=1 " + T).accepted - 1


def test_comma_in_field_key_followed_by_string_joins_lines_like_influxdb() -> None:
    """Mid-body, the same line makes IOx's splitter join it with the next: both are lost."""
    body = b'm a,b=1,s="x=y" ' + T + b"\nn f=2 " + T + b"\n"
    result = check(body)
    assert (0, 1) == (result.accepted, result.rejected)


def test_leading_blank_changes_quote_counting_like_influxdb() -> None:
    """A leading space puts IOx's splitter in field mode early; `t=x=y"` then opens a string."""
    body = b' m,t=x=y" f=1 ' + T + b"\nn f=2 " + T + b"\n"
    result = check(body)
    assert (0, 1) == (result.accepted, result.rejected)


def test_max_errors_caps_the_list_not_the_count() -> None:
    """Only the first max_errors errors are listed; rejected counts all of them."""
    body = b"bad\n" * 150 + b"ok f=1 " + T + b"\n"
    result = check(body, max_errors=100)
    assert (150, 100, 1) == (result.rejected, len(result.errors), result.accepted)
    assert list(range(1, 101)) == [error.line for error in result.errors]


def test_min_and_max_time_cover_accepted_lines_only() -> None:
    """min/max time are in ns over accepted lines (stamped ones included)."""
    body = b"a f=1 1699999999000000000\nb f=1.\nc f=1\nd f=1 1700000000500000000\n"
    result = check(body)
    assert (1699999999000000000, 1700000000500000000) == (result.min_time_ns, result.max_time_ns)


def test_max_line_bytes_rejects_long_lines() -> None:
    """A line longer than max_line_bytes is a line error naming both sizes."""
    body = b"m f=1 " + T + b"\n" + b"m,t=" + b"x" * 40 + b" f=1 " + T + b"\n"
    result = check(body, max_line_bytes=30)
    assert [(2, "line too long: 68 bytes, limit is 30")] == reasons(result)
    assert 1 == result.accepted


def test_max_line_bytes_checked_in_plain_runs() -> None:
    """The bulk path checks line sizes too, and keeps the short lines."""
    short = b"m f=1 " + T + b"\n"
    body = short * 10 + b"m f=" + b"1" * 100 + b" " + T + b"\n" + short * 10
    result = check(body, max_line_bytes=64)
    assert [(11, "line too long: 124 bytes, limit is 64")] == reasons(result)
    assert 20 == result.accepted


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(
            b"\xff f=1", "invalid UTF-8 in line 1 (byte offset 0 of the body)", id="first-byte"
        ),
        pytest.param(
            b"m f=1 " + T + b'\nm s="\xc3\x28" ' + T,
            "invalid UTF-8 in line 2 (byte offset 31 of the body)",
            id="second-line",
        ),
        pytest.param(
            b'm s="\xed\xa0\x80"',
            "invalid UTF-8 in line 1 (byte offset 5 of the body)",
            id="surrogate",
        ),
        pytest.param(
            b"m f=1\n\n\xe2\x82",
            "invalid UTF-8 in line 3 (byte offset 7 of the body)",
            id="truncated",
        ),
    ],
)
def test_invalid_utf8_rejects_the_body(body: bytes, message: str) -> None:
    """A body that is not UTF-8 is no line protocol at all; the message locates the byte."""
    with pytest.raises(LineProtocolBodyError) as raised:
        check(body)
    assert message == str(raised.value)


@pytest.mark.parametrize(
    ("precision", "body", "expected"),
    [
        pytest.param("m", b"m f=1 28333333\n", b"m f=1 1699999980\n", id="minutes"),
        pytest.param("h", b"m f=1 472222\n", b"m f=1 1699999200\n", id="hours"),
        pytest.param(
            "m", b'm s="a b" 28333333\n', b'm s="a b" 1699999980\n', id="minutes-exact-parser"
        ),
        pytest.param("s", b"m f=1 1700000000\n", b"m f=1 1700000000\n", id="seconds-unchanged"),
    ],
)
def test_minutes_and_hours_become_seconds(precision: str, body: bytes, expected: bytes) -> None:
    """m and h timestamps are converted exactly to s, and the output precision says so."""
    result = check(body, precision)
    assert (expected, "s") == (result.body, result.precision)


@pytest.mark.parametrize(
    ("precision", "stamp"),
    [
        pytest.param("ns", b"1700000000123456789", id="ns"),
        pytest.param("us", b"1700000000123456", id="us"),
        pytest.param("ms", b"1700000000123", id="ms"),
        pytest.param("s", b"1700000000", id="s"),
        pytest.param("m", b"1699999980", id="m-in-seconds"),
        pytest.param("h", b"1699999200", id="h-in-seconds"),
    ],
)
def test_missing_timestamp_gets_now_in_request_precision(precision: str, stamp: bytes) -> None:
    """A line without timestamp gets the receive time truncated to the request precision."""
    now = NOW + 123_456_789
    result = validate(b'm f=1\nm s="x y"\n', precision, now_ns=now)  # type: ignore[arg-type]
    assert b"m f=1 " + stamp + b'\nm s="x y" ' + stamp + b"\n" == result.body


@pytest.mark.parametrize(
    ("precision", "timestamp", "reason"),
    [
        pytest.param(
            "ns",
            b"1700000000",
            "timestamp 1700000000 with precision=ns is 1970-01-01T00:00:01.7Z; did you mean precision=s?",
            id="seconds-sent-as-ns",
        ),
        pytest.param(
            "us",
            b"1700000000000",
            "timestamp 1700000000000 with precision=us is 1970-01-20T16:13:20Z; did you mean precision=ms?",
            id="ms-sent-as-us",
        ),
        pytest.param(
            "ms",
            b"1700000000",
            "timestamp 1700000000 with precision=ms is 1970-01-20T16:13:20Z; did you mean precision=s?",
            id="s-sent-as-ms",
        ),
        pytest.param(
            "ns",
            b"1700007200000000000",
            "timestamp 1700007200000000000 with precision=ns is 2023-11-15T00:13:20Z; more than 1h in the future",
            id="future",
        ),
        pytest.param(
            "s",
            b"1000",
            "timestamp 1000 with precision=s is 1970-01-01T00:16:40Z; before the minimum time 1971-01-01T00:00:00Z",
            id="past",
        ),
        pytest.param(
            "ns",
            b"-5",
            "timestamp -5 with precision=ns is 1969-12-31T23:59:59.999999995Z; before the minimum time 1971-01-01T00:00:00Z",
            id="negative",
        ),
        pytest.param(
            "s",
            b"1700000000000000000",
            "timestamp 1700000000000000000 with precision=s is out of range "
            "(it does not fit in int64 nanoseconds); did you mean precision=ns?",
            id="ns-sent-as-s-overflows",
        ),
        pytest.param(
            "s",
            b"100000000000",
            "timestamp 100000000000 with precision=s is out of range "
            "(it does not fit in int64 nanoseconds); did you mean precision=ms?",
            id="overflow-after-scaling",
        ),
    ],
)
def test_guard_rejects_implausible_timestamps(
    precision: str, timestamp: bytes, reason: str
) -> None:
    """The plausibility guard names the date and, when one fits, the precision meant."""
    for line in (b"m f=1 " + timestamp, b'm f="x y" ' + timestamp):  # bulk and exact paths
        result = check(line + b"\n", precision)
        assert [(1, reason)] == reasons(result)


def test_guard_off_accepts_any_int64_timestamp() -> None:
    """Without the guard only int64 (after scaling) limits timestamps; negatives are fine."""
    body = b"m f=1 -9223372036854775808\nm f=1 0\nm f=1 -5\n"
    result = check(body, rules=NO_GUARD)
    assert (3, body) == (result.accepted, result.body)


def test_guard_uses_custom_bounds() -> None:
    """max_future and min_time come from the rules; the message shows the configured bound."""
    rules = TimeRules(max_future_ns=86_400 * 10**9, min_time_ns=0)
    tomorrow = str(NOW + 2 * 86_400 * 10**9).encode()
    result = check(b"m f=1 " + tomorrow + b"\nm f=1 5\n", rules=rules)
    assert [
        (
            1,
            f"timestamp {tomorrow.decode()} with precision=ns is 2023-11-16T22:13:20Z; more than 1d in the future",
        )
    ] == reasons(result)
    assert 1 == result.accepted


def test_stamped_timestamps_are_not_guarded() -> None:
    """The gateway's own clock is trusted: a missing timestamp is never a guard error."""
    result = validate(b"m f=1\n", "ns", now_ns=5)
    assert (1, b"m f=1 5\n") == (result.accepted, result.body)


@pytest.mark.parametrize(
    ("precision", "round_to", "body", "expected"),
    [
        pytest.param(
            "ns",
            10**9,
            b"m f=1 1700000000123456789\n",
            b"m f=1 1700000000000000000\n",
            id="ns-to-1s",
        ),
        pytest.param(
            "ms", 10**9, b"m f=1 1700000000999\n", b"m f=1 1700000000000\n", id="ms-to-1s"
        ),
        pytest.param(
            "ns",
            60 * 10**9,
            b'm s="x y" 1700000039000000000\n',
            b'm s="x y" 1699999980000000000\n',
            id="exact-parser",
        ),
        pytest.param(
            "m", 3_600 * 10**9, b"m f=1 28333333\n", b"m f=1 1699999200\n", id="minutes-to-1h"
        ),
        pytest.param("ns", 10**9, b"m f=1\n", b"m f=1 1700000000000000000\n", id="stamp-rounded"),
    ],
)
def test_round_to_truncates_timestamps(
    precision: str, round_to: int, body: bytes, expected: bytes
) -> None:
    """round_to truncates every timestamp to a multiple of itself."""
    result = validate(
        body, precision, now_ns=NOW + 123_456_789, rules=TimeRules(round_to_ns=round_to)
    )  # type: ignore[arg-type]
    assert expected == result.body


def test_round_to_coarser_than_precision_changes_nothing() -> None:
    """round_to finer than the precision leaves the body untouched (and uncopied)."""
    body = b"m f=1 1700000000\n"
    assert body is check(body, "s", rules=TimeRules(round_to_ns=10**6)).body


def test_nul_bytes_follow_influxdb() -> None:
    """NUL is refused in a measurement and accepted in tags, field keys and strings."""
    body = b'a\x00 f=1\nb,t\x00=v\x00 f\x00=1,s="\x00" ' + T + b"\n"
    result = check(body)
    assert [(1, "NUL character in measurement")] == reasons(result)
    assert b'b,t\x00=v\x00 f\x00=1,s="\x00" ' + T + b"\n" == result.body


@pytest.mark.parametrize(
    "line",
    [
        pytest.param(b'm f="' + b'"' * 1_048_000 + b'"', id="quotes"),
        pytest.param(b'm f="a' + b'"a' * 524_000, id="alternating-quotes"),
        pytest.param(b'm f="' + b"\\" * 1_048_000, id="backslashes"),
        pytest.param(b"m " + b"a=1," * 262_000 + b"a=1", id="many-fields"),
        pytest.param(b"m," + b"a=b," * 262_000 + b"a=b f=1", id="many-tags"),
        pytest.param(b"m f=" + b"1" * 1_048_000 + b"i", id="long-integer"),
        pytest.param(b"m f=1 " + b"9" * 1_048_000, id="long-timestamp"),
        pytest.param(b"m " + b"=" * 1_048_000, id="equals"),
        pytest.param(b"m f=1" + b"," * 1_048_000, id="commas"),
        pytest.param(b"m " + b'a=1,b="=,' * 131_000, id="strings-and-separators"),
        pytest.param(b"m," + b"\\ " * 524_000 + b"=v f=1", id="escaped-spaces"),
        pytest.param(b"m f=" + b"1e1" * 349_000, id="float-like"),
    ],
)
def test_adversarial_megabyte_line_is_fast(line: bytes) -> None:
    """A 1 MiB hostile line is decided in well under a second (no backtracking blow-up)."""
    body = line + b"\nok f=1 " + T + b"\n"
    started = time.perf_counter()
    result = check(body)
    elapsed = time.perf_counter() - started
    assert elapsed < 1.0
    assert result.accepted + result.rejected >= 1


def test_implausible_counts_only_guard_rejections() -> None:
    """`implausible` counts the lines the timestamp guard refused, not syntax errors."""
    result = validate(b"m f=1 1700000000\nm f=\nm f=2\n", "ns", now_ns=NOW)
    assert (2, 1, 1) == (result.rejected, result.implausible, result.accepted)
