"""Property tests for gateway.lineprotocol: round trips, robustness, idempotence, equivalences."""

from __future__ import annotations

import re
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.errors import LineProtocolBodyError
from gateway.lineprotocol import (
    PRECISIONS,
    Point,
    Precision,
    TimeRules,
    UInt,
    ValidationResult,
    fastpath,
    iter_lines,
    parse_points,
    rescale,
    validate,
)
from gateway.lineprotocol.split import logical_lines, trim_leading
from gateway.lineprotocol.syntax import LineSyntaxError, ParsedLine, _parse_step_by_step, parse_line

NOW = 1_700_000_000_000_000_000
INT64 = (-(2**63), 2**63 - 1)
NO_GUARD = TimeRules(guard=False)
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- generated valid points ---------------------------------------------------------------

_CHARS = st.characters(blacklist_categories=("Cs",), blacklist_characters="\t\n")
_SPECIAL = st.sampled_from([",", "=", " ", "\\", '"', "#", "\x00", "\r", "é", "🎉", "time"])
_NAME = (
    st.lists(st.one_of(_CHARS, _SPECIAL), min_size=1, max_size=6)
    .map("".join)
    .filter(lambda name: not name.endswith("\\"))
)
_MEASUREMENT = _NAME.filter(lambda name: "\x00" not in name and not name.startswith("#"))
_KEY = _NAME.filter(lambda name: name != "time")
_VALUE = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(*INT64),
    st.integers(0, 2**64 - 1).map(UInt),
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=12),
    st.booleans(),
)


@st.composite
def points(draw: st.DrawFn) -> Point:
    """A point InfluxDB 3 accepts: unique keys, no `time`, no tag/field name clash."""
    tag_keys = draw(st.lists(_KEY, max_size=3, unique=True))
    field_keys = draw(
        st.lists(_KEY.filter(lambda key: key not in tag_keys), min_size=1, max_size=4, unique=True)
    )
    return Point(
        measurement=draw(_MEASUREMENT),
        tags=tuple((key, draw(_NAME)) for key in tag_keys),
        fields=tuple((key, draw(_VALUE)) for key in field_keys),
        timestamp=draw(st.none() | st.integers(*INT64)),
    )


def _escape(text: str, special: str) -> str:
    return re.sub("[" + re.escape(special) + "]", lambda found: "\\" + found.group(), text)


def serialize(point: Point) -> bytes:
    """Line protocol for a point, escaping what needs escaping."""
    line = _escape(point.measurement, "\\, ")
    for key, value in point.tags:
        line += "," + _escape(key, "\\,= ") + "=" + _escape(value, "\\,= ")
    pairs = []
    for key, value in point.fields:
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, UInt):
            text = f"{int(value)}u"
        elif isinstance(value, int):
            text = f"{value}i"
        elif isinstance(value, float):
            text = repr(value)
        else:
            text = '"' + _escape(value, '\\"') + '"'
        pairs.append(_escape(key, "\\,= ") + "=" + text)
    line += " " + ",".join(pairs)
    if point.timestamp is not None:
        line += f" {point.timestamp}"
    return line.encode()


def typed(point: Point) -> tuple[object, ...]:
    """A point with its field types made explicit (1 == 1.0 == True == UInt(1) otherwise)."""
    fields = tuple((key, type(value).__name__, value) for key, value in point.fields)
    return (point.measurement, point.tags, fields, point.timestamp)


@SETTINGS
@given(st.lists(points(), min_size=1, max_size=5))
def test_generated_points_round_trip(generated: list[Point]) -> None:
    """Serialized valid points are accepted, and parse back to the same points."""
    body = b"\n".join(serialize(point) for point in generated)
    assert [typed(point) for point in generated] == [typed(p) for p in parse_points(body)]
    result = validate(body, "ns", now_ns=NOW, rules=NO_GUARD)
    assert ((), len(generated)) == (result.errors, result.accepted)
    stamped = [
        Point(p.measurement, p.tags, p.fields, NOW if p.timestamp is None else p.timestamp)
        for p in generated
    ]
    assert [typed(point) for point in stamped] == [typed(p) for p in parse_points(result.body)]


# --- line-ish text -------------------------------------------------------------------------

_ATOMS = st.sampled_from(
    [
        "m",
        "cpu",
        ",",
        "=",
        " ",
        "  ",
        "\\",
        '"',
        "\n",
        "\r",
        "\t",
        "#",
        "\x00",
        "t=a",
        "f=1",
        "f=1i",
        's="x"',
        "1.5",
        "-",
        "1e3",
        "2u",
        "true",
        "T",
        "time",
        "1700000000000000000",
        "1700000000",
        "é",
        ",g=",
        " 1700000000000000000\n",
    ]
)


def _mostly(good: list[str], bad: list[str]) -> st.SearchStrategy[str]:
    """Usually one of `good`, sometimes one of `bad`."""
    return st.one_of(st.sampled_from(good), st.sampled_from(good), st.sampled_from(good + bad))


_NAMEISH = _mostly(["m", "cpu", "a", "b", "é"], ["time", "a\\ b", "a,b", "x=y", 'q"', "\\", "#c"])
_VALUEISH = _mostly(
    ["1", "-1.5", "1e10", "1E-5", "-0", "1i", "2u", "t", "FALSE", '""', '"a b"', '"x=y,z"'],
    [
        ".5",
        "1.",
        "+1",
        "1e",
        "1e+",
        "NaN",
        "inf",
        "-9223372036854775808i",
        "9223372036854775808i",
        "18446744073709551615u",
        "-1u",
        "1.5i",
        "tRue",
        "fals",
        '"a\\"b"',
        '"open',
        '"multi\nline"',
        "",
        "1 2",
    ],
)
_STAMPISH = _mostly(
    ["", " 1700000000000000000", " 1699999999999999999"],
    [" 1700000000", " -5", " 0017", " 1.5", " x", "  ", " 99999999999999999999"],
)


@st.composite
def lineish(draw: st.DrawFn) -> str:
    """A line that is valid more often than not, with plausible mistakes mixed in."""
    line = draw(_NAMEISH)
    for _ in range(draw(st.integers(0, 3))):
        line += "," + draw(_NAMEISH) + "=" + draw(_NAMEISH)
    separator = draw(_mostly([" "], ["  ", "\t"]))
    fields = [draw(_NAMEISH) + "=" + draw(_VALUEISH) for _ in range(draw(st.integers(1, 4)))]
    line += separator + ",".join(fields) + draw(_mostly([""], [","]))
    return line + draw(_STAMPISH) + draw(_mostly([""], [" ", "\r", "\t"]))


_TEXT = st.one_of(
    st.lists(lineish(), max_size=6).map("\n".join),
    st.lists(_ATOMS, max_size=30).map("".join),
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=60),
)
_PRECISION = st.sampled_from(PRECISIONS)
_RULES = st.sampled_from(
    [
        TimeRules(),
        NO_GUARD,
        TimeRules(round_to_ns=10**9),
        TimeRules(guard=False, round_to_ns=60 * 10**9),
    ]
)


@SETTINGS
@given(st.binary(max_size=120), _PRECISION)
def test_arbitrary_bytes_raise_only_body_errors(body: bytes, precision: Precision) -> None:
    """Any bytes: a result, or LineProtocolBodyError for non-UTF-8 -- nothing else."""
    try:
        result = validate(body, precision, now_ns=NOW)
    except LineProtocolBodyError:
        with pytest.raises(UnicodeDecodeError):
            body.decode("utf-8")
    else:
        assert result.accepted + result.rejected <= body.count(b"\n") + 1


@SETTINGS
@given(_TEXT, _PRECISION, _RULES)
def test_arbitrary_text_never_raises(text: str, precision: Precision, rules: TimeRules) -> None:
    """Any text is decided line by line without an exception."""
    result = validate(text.encode(), precision, now_ns=NOW, rules=rules)
    assert len(result.errors) == min(result.rejected, 100)


@SETTINGS
@given(_TEXT, _PRECISION, _RULES)
def test_accepted_output_revalidates_unchanged(
    text: str, precision: Precision, rules: TimeRules
) -> None:
    """Validating the output again accepts every line and changes nothing (not even a copy)."""
    first = validate(text.encode(), precision, now_ns=NOW, rules=rules)
    second = validate(first.body, first.precision, now_ns=NOW, rules=rules)
    assert ((), first.accepted) == (second.errors, second.accepted)
    assert second.body is first.body
    assert first.accepted == len(list(iter_lines(first.body)))


@SETTINGS
@given(_TEXT, _PRECISION, _RULES)
def test_bulk_path_agrees_with_exact_parser(
    text: str, precision: Precision, rules: TimeRules
) -> None:
    """With the bulk fast paths switched off, every decision and byte stays the same."""
    body = text.encode()
    expected = validate(body, precision, now_ns=NOW, rules=rules)
    never = re.compile(rb"(?!)")
    with (
        mock.patch.object(fastpath, "PLAIN_LINES", never),
        mock.patch.object(fastpath, "BLANK_LINES", never),
    ):
        exact = validate(body, precision, now_ns=NOW, rules=rules)
    assert _summary(expected) == _summary(exact)


_EDGE_NAMES = [
    "time",
    "a b",
    "a\\ b",
    "a,b",
    "a\\,b",
    "x=y",
    "x\\=y",
    'q"',
    "\\",
    "a\\\\",
    "#c",
    "c#",
    "\x00",
    "a\rb",
    "é",
    "a\tb",
    "a\\\nb",
    "",
]
_EDGE_VALUES = [
    "1",
    "-1.5",
    "1e10",
    "1E-5",
    "1e+5",
    "-0",
    "01.50",
    "1e400",
    ".5",
    "1.",
    "+1",
    "1e",
    "1e+",
    "1.2.3",
    "0x10",
    "NaN",
    "inf",
    "-inf",
    "1i",
    "-0i",
    "-9223372036854775808i",
    "9223372036854775807i",
    "9223372036854775808i",
    "-9223372036854775809i",
    "0000000000000000000000001i",
    "18446744073709551615u",
    "18446744073709551616u",
    "-1u",
    "1.5i",
    "1I",
    "t",
    "T",
    "true",
    "True",
    "TRUE",
    "f",
    "F",
    "false",
    "False",
    "FALSE",
    "tRue",
    "truee",
    "fals",
    "yes",
    '""',
    '"a b"',
    '"x=y,z"',
    '"a\\"b"',
    '"a\\\\"',
    '"open',
    '"a"b',
    '"a\nb"',
    '"a\rb"',
    "",
    "1 2",
    "1\t",
]
_EDGE_STAMPS = [
    "",
    " 1700000000000000000",
    " -0",
    " 0017",
    " 01700000000000000000",
    " 1.5",
    " x",
    "  ",
    " 9223372036854775807",
    " 9223372036854775808",
    " 1700000000",
    "\t1",
    " 1 ",
    " 1\r",
]


@st.composite
def near_valid_line(draw: st.DrawFn) -> str:
    """A clean plain line with exactly one slot holding an edge-case token."""
    slots = ["m", "t", "v", "f", "1", " 1700000000000000000"]
    slot = draw(st.integers(0, len(slots) - 1))
    if slot == 4:
        slots[4] = draw(st.sampled_from(_EDGE_VALUES))
    elif slot == 5:
        slots[5] = draw(st.sampled_from(_EDGE_STAMPS))
    else:
        slots[slot] = draw(st.sampled_from(_EDGE_NAMES))
    measurement, tag, value, field, field_value, stamp = slots
    extra = draw(st.sampled_from(["", ",g=2", ",g=2i", ",f=2", ',s="x"']))
    return f"{measurement},{tag}={value} {field}={field_value}{extra}{stamp}"


@settings(max_examples=300, deadline=None)
@given(st.lists(near_valid_line(), min_size=1, max_size=4).map("\n".join), _PRECISION)
def test_bulk_path_agrees_on_near_valid_lines(text: str, precision: Precision) -> None:
    """Edge-case tokens in otherwise plain lines: the bulk path decides as the exact parser."""
    body = text.encode()
    expected = validate(body, precision, now_ns=NOW)
    never = re.compile(rb"(?!)")
    with (
        mock.patch.object(fastpath, "PLAIN_LINES", never),
        mock.patch.object(fastpath, "BLANK_LINES", never),
    ):
        exact = validate(body, precision, now_ns=NOW)
    assert _summary(expected) == _summary(exact)


def _summary(result: ValidationResult) -> tuple[object, ...]:
    return (
        result.body,
        result.accepted,
        result.rejected,
        result.errors,
        result.min_time_ns,
        result.max_time_ns,
    )


def _parse_or_none(parser: object, line: bytes) -> ParsedLine | None:
    try:
        return parser(line)  # type: ignore[operator, no-any-return]
    except LineSyntaxError:
        return None


@SETTINGS
@given(_TEXT)
def test_whole_line_regex_agrees_with_step_parser(text: str) -> None:
    """The one-regex parse accepts exactly what the token-by-token walk accepts, identically."""
    for start, end in logical_lines(text.encode()):
        line = text.encode()[start:end]
        assert _parse_or_none(_parse_step_by_step, line) == _parse_or_none(parse_line, line)


# --- IOx's splitter, ported character by character, as the reference --------------------


def reference_split(text: str) -> list[str]:
    """IOx `split_lines`, a literal port of its closure (including the trailing empty piece)."""
    pieces, current = [], []
    quoted = fields = in_escape = False
    equals = commas = 0
    for char in text:
        split = False
        if in_escape:
            in_escape = False
        elif char == "\\":
            in_escape = True
        elif char == " ":
            fields = True
        elif fields and not quoted and char == "=":
            equals += 1
        elif fields and not quoted and char == ",":
            commas += 1
        elif fields and char == '"' and equals > commas:
            quoted = not quoted
        elif char == "\n" and not quoted:
            quoted = fields = False
            equals = commas = 0
            split = True
        if split:
            pieces.append("".join(current))
            current = []
        else:
            current.append(char)
    pieces.append("".join(current))
    return pieces


def reference_trim(line: str) -> str:
    """IOx `trim_leading`: blanks and whole comments, repeatedly."""
    while True:
        line = line.lstrip(" \t\n")
        if not line.startswith("#"):
            return line
        newline = line.find("\n")
        line = line[newline:] if newline >= 0 else ""


_SPLIT_TEXT = st.lists(
    st.sampled_from(["a", " ", "=", ",", '"', "\\", "\n", "#", "\t", "é"]), max_size=40
).map("".join)


@settings(max_examples=400, deadline=None)
@given(_SPLIT_TEXT)
def test_splitter_matches_iox_character_by_character(text: str) -> None:
    """Our run-based splitter cuts exactly where IOx's per-character state machine does."""
    expected = reference_split(text)
    if expected[-1] == "":
        expected.pop()
    body = text.encode()
    assert expected == [body[start:end].decode() for start, end in logical_lines(body)]


@settings(max_examples=300, deadline=None)
@given(_SPLIT_TEXT)
def test_trim_leading_matches_iox(text: str) -> None:
    """Leading blanks and comment lines are skipped as IOx skips them."""
    offset, skipped = trim_leading(text.encode())
    assert reference_trim(text) == text.encode()[offset:].decode()
    assert text.encode()[:offset].count(b"\n") == skipped


# --- rescale -----------------------------------------------------------------------------


@SETTINGS
@given(st.lists(points(), min_size=1, max_size=4), st.sampled_from(["s", "ms", "us"]))
def test_rescale_to_finer_and_back_round_trips(generated: list[Point], coarse: Precision) -> None:
    """Scaling to a finer precision and back gives the same body."""
    sane = [
        Point(p.measurement, p.tags, p.fields, p.timestamp and p.timestamp % 10**9)
        for p in generated
    ]
    body = b"\n".join(serialize(point) for point in sane)
    result = validate(body, coarse, now_ns=NOW, rules=NO_GUARD)
    assert not result.errors
    finer = rescale(result.body, coarse, "ns")
    assert result.body == rescale(finer, "ns", coarse)
    assert [
        summary * {"s": 10**9, "ms": 10**6, "us": 10**3}[coarse]
        for summary in (int(line.rsplit(b" ", 1)[1]) for line in iter_lines(result.body))
    ] == [int(line.rsplit(b" ", 1)[1]) for line in iter_lines(finer)]
