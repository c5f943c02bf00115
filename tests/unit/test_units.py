"""Values written as text: durations, sizes, RFC3339 and relative times (gateway/units.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.units import (
    format_duration,
    format_time,
    parse_duration,
    parse_size,
    parse_time,
    parse_when,
)

NOW = 1_750_000_000_000_000_000
# Every timestamp line protocol can carry: int64 nanoseconds (1677 to 2262).
EPOCH_NS = st.integers(min_value=-(2**63), max_value=2**63 - 1)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("30s", 30),
        ("5m", 300),
        ("1h", 3600),
        ("30d", 2_592_000),
        (10, 10),
        ("0", 0),
    ],
)
def test_durations(text: str | int, seconds: float) -> None:
    """Durations accept ms, s, m, h, d and plain seconds."""
    assert seconds == parse_duration(text)


@pytest.mark.parametrize("text", ["30", "1y", "abc", "", True])
def test_bad_durations(text: object) -> None:
    """A duration without a unit (other than 0) or with an unknown unit is refused."""
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("10GiB", 10 * 2**30),
        ("50MB", 50_000_000),
        ("64KiB", 65536),
        ("1KB", 1000),
        (123, 123),
        ("7", 7),
    ],
)
def test_sizes(text: str | int, size: int) -> None:
    """Sizes accept KiB/MiB/GiB, KB/MB/GB and plain bytes."""
    assert size == parse_size(text)


@given(st.floats(min_value=0.001, max_value=10**7, allow_nan=False))
def test_format_duration_round_trips(seconds: float) -> None:
    """What format_duration prints, parse_duration reads back (to float precision)."""
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds, rel=1e-6)


def test_rfc3339_time() -> None:
    """Times are RFC3339 strings or TOML datetimes, in UTC nanoseconds."""
    assert 31_536_000 * 10**9 == parse_time("1971-01-01T00:00:00Z")


def test_rfc3339_keeps_nanoseconds() -> None:
    """A fraction of a second is read to the nanosecond, not cut to datetime's microseconds."""
    assert 1_700_000_000_123_456_789 == parse_time("2023-11-14T22:13:20.123456789Z")


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("2024-01-01T00:00:00.5Z", 1_704_067_200_500_000_000),
        ("2024-01-01T00:00:00.123456789123Z", 1_704_067_200_123_456_789),
        ("2024-01-01T01:00:00.25+01:00", 1_704_067_200_250_000_000),
        ("2024-01-01T00:00:00", 1_704_067_200_000_000_000),
        ("1969-12-31T23:59:59.9Z", -100_000_000),
    ],
)
def test_rfc3339_fractions_offsets_and_naive_times(text: str, ns: int) -> None:
    """Digits past the ninth are cut, offsets apply, a time without one is UTC."""
    assert ns == parse_time(text)


def test_toml_datetimes_are_times() -> None:
    """A TOML datetime (a datetime object) converts like its RFC3339 spelling."""
    moment = datetime(2024, 1, 1, 1, tzinfo=timezone(timedelta(hours=1)))
    assert parse_time("2024-01-01T00:00:00Z") == parse_time(moment)


@pytest.mark.parametrize("text", ["yesterday", "2024-13-01T00:00:00Z", "", "1h ago"])
def test_bad_times_name_what_is_expected(text: str) -> None:
    """Neither RFC3339 nor a duration: the message quotes the value and both forms."""
    with pytest.raises(ValueError, match=r"RFC3339.*duration") as e:
        parse_when(text, NOW)
    assert f'"{text}"' in str(e.value)


@given(EPOCH_NS)
def test_format_time_round_trips(ns: int) -> None:
    """What format_time prints (RFC3339, Z, to the nanosecond), parse_when reads back exactly."""
    text = format_time(ns)
    assert text.endswith("Z")
    assert ns == parse_when(text, NOW)


def test_format_time_drops_trailing_zeros() -> None:
    """Whole seconds print without a fraction, others with only the digits they need."""
    assert "2024-01-01T00:00:00Z" == format_time(1_704_067_200 * 10**9)
    assert "2024-01-01T00:00:00.5Z" == format_time(1_704_067_200_500_000_000)


@pytest.mark.parametrize(
    ("text", "offset_ns"),
    [
        ("-1h", -3_600 * 10**9),
        ("+30d", 30 * 86_400 * 10**9),
        ("30d", 30 * 86_400 * 10**9),
        ("-1.5s", -1_500_000_000),
        ("-250ms", -250_000_000),
        (" -5m ", -300 * 10**9),
    ],
)
def test_relative_times_count_from_now(text: str, offset_ns: int) -> None:
    """A signed duration is relative to now; without a sign it counts forward."""
    assert NOW + offset_ns == parse_when(text, NOW)


def test_a_relative_time_needs_a_unit() -> None:
    """A bare number is neither a duration on the command line nor a time."""
    with pytest.raises(ValueError, match="invalid time"):
        parse_when("-30", NOW)


def test_absolute_times_ignore_now() -> None:
    """An RFC3339 time is the same whatever now is."""
    assert parse_when("2024-01-01T00:00:00Z", 0) == parse_when("2024-01-01T00:00:00Z", NOW)
    assert datetime(2024, 1, 1, tzinfo=UTC).timestamp() * 10**9 == parse_when(
        "2024-01-01T00:00:00Z", NOW
    )
