"""Reading accepted bodies back: points, per-line summaries, line iteration, precision rescaling.

Everything here works on bodies `validate` produced (normalized: every line timestamped, one
space before the timestamp, newline-terminated), except `parse_points`, which takes any body and
applies the same splitting, leniencies and rules as `validate` (but no timestamp guard). None of
it is on the write hot path.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from gateway.lineprotocol.precision import NS_PER_UNIT, Precision, int64_token, uint64_token
from gateway.lineprotocol.rules import resolve_fields
from gateway.lineprotocol.split import logical_lines, trim_leading
from gateway.lineprotocol.syntax import (
    FLOAT,
    INTEGER,
    MEASUREMENT_ESCAPES,
    NAME_ESCAPES,
    STRING,
    UNSIGNED,
    Field,
    LineSyntaxError,
    parse_line,
    parse_series,
    unescape,
    unescape_string,
    value_kind,
)

FieldValue = float | int | str | bool

_LINE_TIMESTAMP = re.compile(rb" (-?\d++)$", re.MULTILINE)
_MEASUREMENT_SPECIAL = re.compile(rb"[\\, ]")
_NAME_SPECIAL = re.compile(rb"[\\,= ]")
_MEASUREMENT_ESCAPE = re.compile(rb"[, ]")
_NAME_ESCAPE = re.compile(rb"[,= ]")


class UInt(int):
    """An unsigned (`u`) field value; compares equal to the int of the same value."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"UInt({int(self)})"


@dataclass(frozen=True, slots=True)
class Point:
    """One parsed line, after InfluxDB 3's field rules (duplicates resolved, `time` dropped)."""

    measurement: str
    tags: tuple[tuple[str, str], ...]
    fields: tuple[tuple[str, FieldValue], ...]
    timestamp: int | None


@dataclass(frozen=True, slots=True)
class LineSummary:
    """What stats and export need from an accepted line."""

    measurement: bytes
    series_key: bytes
    timestamp: int


def parse_points(body: bytes) -> list[Point]:
    """Every point of a body; ValueError (naming the 1-based line) on the first bad line."""
    body.decode("utf-8")  # UnicodeDecodeError is a ValueError
    points: list[Point] = []
    line_no = 1
    previous = 0
    for start, end in logical_lines(body):
        line_no += body.count(b"\n", previous, start)
        previous = start
        raw = body[start:end]
        offset, skipped = trim_leading(raw)
        content = raw[offset:].rstrip(b" \t\r")
        if not content:
            continue
        try:
            points.append(_point(content))
        except LineSyntaxError as error:
            raise ValueError(
                f"error parsing line {line_no + skipped} (1-based): {error.reason}"
            ) from None
    return points


def _point(content: bytes) -> Point:
    parsed = parse_line(content)
    fields = resolve_fields(parsed)
    return Point(
        measurement=unescape(parsed.measurement, MEASUREMENT_ESCAPES).decode(),
        tags=tuple(
            (unescape(key, NAME_ESCAPES).decode(), unescape(value, NAME_ESCAPES).decode())
            for key, value in parsed.tags
        ),
        fields=tuple((key.decode(), field_value(field)) for key, field in fields),
        timestamp=parsed.timestamp,
    )


def field_value(field: Field) -> FieldValue:
    """The Python value of a parsed field (`UInt` for unsigned)."""
    token = field[1]
    kind = value_kind(token)
    if kind == FLOAT:
        return float(token)
    if kind == INTEGER:
        return int64_token(token[:-1]) or 0
    if kind == UNSIGNED:
        return UInt(uint64_token(token[:-1]) or 0)
    if kind == STRING:
        return unescape_string(token).decode()
    return token[:1] in (b"t", b"T")


def iter_lines(body: bytes) -> Iterator[bytes]:
    """The logical lines of a normalized body, without newline (a string field may hold one)."""
    for start, end in logical_lines(body):
        if end > start:
            yield body[start:end]


def summarize(line: bytes) -> LineSummary:
    """Measurement, canonical series key and timestamp of one normalized accepted line."""
    measurement, tags, _ = parse_series(line)
    name = unescape(measurement, MEASUREMENT_ESCAPES)
    key = [_canonical(name, measurement, _MEASUREMENT_SPECIAL, _MEASUREMENT_ESCAPE)]
    pairs = sorted(
        (unescape(tag_key, NAME_ESCAPES), tag_key, tag_value) for tag_key, tag_value in tags
    )
    for plain_key, tag_key, tag_value in pairs:
        key.append(b",")
        key.append(_canonical(plain_key, tag_key, _NAME_SPECIAL, _NAME_ESCAPE))
        key.append(b"=")
        plain_value = unescape(tag_value, NAME_ESCAPES)
        key.append(_canonical(plain_value, tag_value, _NAME_SPECIAL, _NAME_ESCAPE))
    return LineSummary(
        measurement=name,
        series_key=b"".join(key),
        timestamp=int(line[line.rindex(b" ") + 1 :]),
    )


def _canonical(
    plain: bytes, raw: bytes, special: re.Pattern[bytes], escape: re.Pattern[bytes]
) -> bytes:
    """A name with exactly its delimiters escaped (backslashes kept as they are)."""
    if special.search(raw) is None:
        return raw
    return escape.sub(rb"\\\g<0>", plain)


def rescale(body: bytes, src: Precision, dst: Precision) -> bytes:
    """Convert the timestamps of a normalized body from src to dst (coarser: floor division)."""
    if src == dst:
        return body
    src_unit, dst_unit = NS_PER_UNIT[src], NS_PER_UNIT[dst]
    if src_unit >= dst_unit:
        factor = src_unit // dst_unit

        def convert(value: int) -> int:
            return value * factor

    else:
        divisor = dst_unit // src_unit

        def convert(value: int) -> int:
            return value // divisor

    if body.find(b'"') < 0 and body.find(b"\\") < 0:
        return _LINE_TIMESTAMP.sub(lambda found: b" %d" % convert(int(found.group(1))), body)
    out: list[bytes] = []
    for line in iter_lines(body):
        head, _, timestamp = line.rpartition(b" ")
        out.append(b"%s %d\n" % (head, convert(int(timestamp))))
    return b"".join(out)
