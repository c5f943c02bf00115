"""Unit tests for reading accepted bodies back: parse_points, summarize, iter_lines, rescale."""

from __future__ import annotations

import pytest

from gateway.lineprotocol import (
    NS_PER_UNIT,
    PRECISIONS,
    LineSummary,
    Point,
    UInt,
    iter_lines,
    parse_points,
    rescale,
    summarize,
    validate,
)


def test_precision_table() -> None:
    """The precisions and their sizes in nanoseconds, as integers."""
    assert ("ns", "us", "ms", "s", "m", "h") == PRECISIONS
    assert {
        "ns": 1,
        "us": 1_000,
        "ms": 1_000_000,
        "s": 1_000_000_000,
        "m": 60_000_000_000,
        "h": 3_600_000_000_000,
    } == NS_PER_UNIT


def test_parse_points_unescapes_and_types_everything() -> None:
    """Names are unescaped, values typed (unsigned as UInt), tags in line order."""
    body = b'm\\ x,b=2\\,3,a=1 s="q\\"\\\\z",i=-2i,u=3u,f=1.5,t=T 17\n'
    [point] = parse_points(body)
    assert (
        Point(
            "m x",
            (("b", "2,3"), ("a", "1")),
            (("s", 'q"\\z'), ("i", -2), ("u", 3), ("f", 1.5), ("t", True)),
            17,
        )
        == point
    )
    assert [str, int, UInt, float, bool] == [type(value) for _, value in point.fields]


def test_parse_points_applies_influxdb_field_rules() -> None:
    """A repeated field keeps its last value at its last position; `time` fields are dropped."""
    [point] = parse_points(b"m v=2,bananas=42,time=5,v=3,platanos=24\n")
    assert (("bananas", 42.0), ("v", 3.0), ("platanos", 24.0)) == point.fields
    assert point.timestamp is None


def test_parse_points_skips_comments_and_keeps_multiline_strings() -> None:
    """Comments and blank lines are skipped; a string may span lines."""
    body = b'# c\n\nm s="a\nb" 1\r\n  n f=1\n'
    assert [("m", "a\nb", 1), ("n", 1.0, None)] == [
        (p.measurement, p.fields[0][1], p.timestamp) for p in parse_points(body)
    ]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(
            b"m f=1\n\nm f=1.\n",
            "error parsing line 3 (1-based): invalid float value `1.`",
            id="syntax",
        ),
        pytest.param(
            b"m,t=a t=1\n",
            "error parsing line 1 (1-based): `t` is used both as a tag and as a field",
            id="rule",
        ),
        pytest.param(b"# x\n\xff", "", id="utf8"),
    ],
)
def test_parse_points_raises_value_error_on_first_bad_line(body: bytes, message: str) -> None:
    """The first bad line raises ValueError naming its line (invalid UTF-8 too)."""
    with pytest.raises(ValueError, match=None) as raised:
        parse_points(body)
    assert message in str(raised.value)


def test_uint_is_an_int_that_shows_it_is_unsigned() -> None:
    """UInt compares as an int and says what it is."""
    assert (5, "UInt(5)") == (UInt(5), repr(UInt(5)))


def test_summarize_sorts_tags_into_a_canonical_series_key() -> None:
    """The series key is measurement plus tags sorted by key, escaped canonically."""
    assert LineSummary(b"cpu", b"cpu,host=a,region=b", 123) == summarize(
        b"cpu,region=b,host=a f=1 123"
    )


@pytest.mark.parametrize(
    ("line", "measurement", "series_key"),
    [
        pytest.param(
            b"m\\ x,t\\ k=v\\,1 f=1 5", b"m x", b"m\\ x,t\\ k=v\\,1", id="escapes-kept-canonical"
        ),
        pytest.param(b"m,a,b=c f=1 5", b"m", b"m,a\\,b=c", id="raw-comma-in-tag-key-escaped"),
        pytest.param(b"m,t=x=y f=1 5", b"m", b"m,t=x\\=y", id="raw-equals-in-tag-value-escaped"),
        pytest.param(b"m,t=a\\=b f=1 5", b"m", b"m,t=a\\=b", id="escaped-equals-same-as-raw"),
        pytest.param(b"m\\=x f=1 5", b"m\\=x", b"m\\=x", id="measurement-unknown-escape"),
        pytest.param(b'm s="a b" 5', b"m", b"m", id="no-tags"),
    ],
)
def test_summarize_names(line: bytes, measurement: bytes, series_key: bytes) -> None:
    """Equal names give equal series keys whatever optional escaping the writer used."""
    summary = summarize(line)
    assert (measurement, series_key, 5) == (
        summary.measurement,
        summary.series_key,
        summary.timestamp,
    )


def test_iter_lines_is_quote_and_escape_aware() -> None:
    """Logical lines of a normalized body: a string or an escaped newline does not end a line."""
    body = b'a s="x\ny" 1\nb\\\nc f=1 2\nd f=1 3\n'
    assert [b'a s="x\ny" 1', b"b\\\nc f=1 2", b"d f=1 3"] == list(iter_lines(body))


def test_iter_lines_of_validated_body_counts_accepted_lines() -> None:
    """Every accepted line comes back as one logical line."""
    result = validate(b'n s="p\nq"\nm a,b=1,s="x=y"', "s", now_ns=1_700_000_000 * 10**9)
    assert 2 == result.accepted == len(list(iter_lines(result.body)))


@pytest.mark.parametrize(
    ("src", "dst", "expected"),
    [
        pytest.param("s", "ns", b"m f=1 1000000000\nm f=1 -2000000000\n", id="finer"),
        pytest.param("s", "m", b"m f=1 0\nm f=1 -1\n", id="coarser-floors"),
        pytest.param("s", "s", b"m f=1 1\nm f=1 -2\n", id="same"),
    ],
)
def test_rescale_converts_every_timestamp(src: str, dst: str, expected: bytes) -> None:
    """Finer multiplies, coarser floor-divides (negatives round down)."""
    assert expected == rescale(b"m f=1 1\nm f=1 -2\n", src, dst)  # type: ignore[arg-type]


def test_rescale_same_precision_returns_same_object() -> None:
    """No conversion, no copy."""
    body = b"m f=1 1\n"
    assert body is rescale(body, "ms", "ms")


def test_rescale_handles_strings_with_newlines_and_spaces() -> None:
    """Only the timestamp at the end of each logical line changes."""
    body = b'm s="a 1\nb 2" 3\nn f=1 4\n'
    assert b'm s="a 1\nb 2" 3000\nn f=1 4000\n' == rescale(body, "ms", "us")
