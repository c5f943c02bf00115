"""The grammar of one line, exactly as InfluxDB 3's parser (IOx `influxdb_line_protocol`) has it.

`parse_line` takes one logical line (leading blanks/comments already skipped, trailing blanks
removed) and returns its raw tokens, or raises `LineSyntaxError` with a short reason. This is the
reference grammar: the bulk fast path in `fastpath.py` only ever accepts a subset of it.

Rules verified against the Rust source (nom combinators), several of them surprising:

- measurement: one or more of anything but space, tab, newline, NUL, `,` and `\\`; tag keys and
  field keys: anything but space, tab, newline, `=` and `\\` -- so a raw `,` *is* allowed in tag
  and field keys (`m,a,b=1 f=1` has tag key `a,b`) and NUL is allowed outside the measurement;
  tag values: anything but space, tab, newline, `,` and `\\` (a raw `=` is allowed). Other
  control characters (CR included) are ordinary characters everywhere.
- A backslash escapes *any* next character (even a newline or NUL): `\\,` `\\ ` `\\\\` (and `\\=`
  outside the measurement) stand for the character, any other pair stands for itself, both
  characters kept. A name whose unescaped text ends in a backslash is an error, as is one longer
  than 65536 bytes (unescaped). Empty names and empty tag values are errors.
- One or more *spaces* (never tabs) separate measurement/tags, fields and timestamp.
- Field values, tried in this order, first prefix match wins: integer `-?D+i` (int64, else an
  error for the whole line; any number of leading zeros), unsigned `D+u` (uint64), float
  `-?D+(.D+)?([eE][+-]?D+)?` (no `+`, no `.5`, no `1.`, no NaN/inf; overflowing exponents become
  infinity and are accepted), string `"..."` (only `\\"` and `\\\\` are escapes, a lone backslash
  is kept, newlines are fine, at most 65536 bytes unescaped), boolean `t T true True TRUE f F
  false False FALSE`. The value must then be followed by `,`, a space or the end.
- A trailing comma after the fields is accepted when there is exactly one field (`m f=1,` and
  `m f=1, 123`) but not after two or more -- a quirk of IOx's separated-list combinator.
- The timestamp is `-?D+` in int64; trailing spaces after it are accepted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gateway.lineprotocol import diagnose
from gateway.lineprotocol.diagnose import LineSyntaxError, show
from gateway.lineprotocol.precision import int64_token, uint64_token

NAME_LIMIT = 65_536
MEASUREMENT_ESCAPES = b", "
NAME_ESCAPES = b",= "

INTEGER, UNSIGNED, FLOAT, STRING, BOOLEAN = range(5)
TYPE_NAMES = ("integer", "unsigned", "float", "string", "boolean")

Field = tuple[bytes, bytes]  # (raw key, raw value token as written)

_MEASUREMENT_TEXT = rb"(?:[^ \t\n\x00,\\]++|\\[\s\S]|\\\Z)++"
_KEY_TEXT = rb"(?:[^ \t\n=\\]++|\\[\s\S]|\\\Z)++"
_TAG_VALUE_TEXT = rb"(?:[^ \t\n,\\]++|\\[\s\S]|\\\Z)++"
_VALUE_TEXT = (  # IOx's order of alternatives; the first that matches a prefix wins
    rb"(?>-?\d++i|\d++u|-?\d++(?:\.\d++)?+(?:[eE][-+]?\d++)?+"
    rb'|"(?:[^"\\]++|\\[\s\S])*+"'
    rb"|true|True|TRUE|t|T|false|False|FALSE|f|F)"
)
_FIELD_TEXT = _KEY_TEXT + b"=" + _VALUE_TEXT
_TAG_SET_TEXT = rb"(?:," + _KEY_TEXT + b"=" + _TAG_VALUE_TEXT + rb")*+"

_MEASUREMENT = re.compile(_MEASUREMENT_TEXT)
_KEY = re.compile(_KEY_TEXT)
_TAG_VALUE = re.compile(_TAG_VALUE_TEXT)
_VALUE = re.compile(_VALUE_TEXT)
_SPACES = re.compile(rb" ++")
_TIMESTAMP = re.compile(rb" ++(-?\d++)")
_SERIES = re.compile(b"(" + _MEASUREMENT_TEXT + b")(" + _TAG_SET_TEXT + b")")
# A whole line at once: measurement, tag set, fields, the single-field trailing comma, timestamp.
# Possessive repeats and the atomic value never revisit a token, as nom never does.
_LINE = re.compile(
    b"(" + _MEASUREMENT_TEXT + b")(" + _TAG_SET_TEXT + b")"
    rb" ++(" + _FIELD_TEXT + rb"(?:," + _FIELD_TEXT + rb")*+)(,?)"
    rb"(?: ++(-?\d++) *+)?+\Z"
)
_TAG = re.compile(b",(" + _KEY_TEXT + b")=(" + _TAG_VALUE_TEXT + b")")
_FIRST_FIELD = re.compile(b"(" + _KEY_TEXT + b")=(" + _VALUE_TEXT + b")")
_NEXT_FIELD = re.compile(b",(" + _KEY_TEXT + b")=(" + _VALUE_TEXT + b")")
_LONG_NUMBER = re.compile(rb"\d{19}")
_ESCAPE_PAIR = re.compile(rb"\\[\s\S]")
# Escapes that stand for one character. A scan for these stays aligned on backslash pairs: a
# backslash it skips is followed by a character that is not a backslash.
_MEASUREMENT_KNOWN = re.compile(rb"\\([, \\])")
_NAME_KNOWN = re.compile(rb"\\([,= \\])")
_STRING_KNOWN = re.compile(rb'\\(["\\])')
_MEASUREMENT_PAIRS = re.compile(rb"\\([, \\])|\\[\s\S]")
_NAME_PAIRS = re.compile(rb"\\([,= \\])|\\[\s\S]")
_BOOLEAN_FIRST = frozenset(b"tTfF")


@dataclass(slots=True)
class ParsedLine:
    """The raw tokens of one valid line; names are still escaped."""

    measurement: bytes
    tags: list[tuple[bytes, bytes]]
    fields: list[Field]
    fields_start: int  # offset of the first field key
    fields_end: int  # offset just after the last field value (before any trailing comma)
    timestamp: int | None
    timestamp_token: bytes | None  # as written


def value_kind(token: bytes) -> int:
    """The type of a value token (its shape tells: only integers end in `i`, etc.)."""
    last = token[-1]
    if last == 0x69:  # i
        return INTEGER
    if last == 0x75:  # u
        return UNSIGNED
    first = token[0]
    if first == 0x22:  # "
        return STRING
    return BOOLEAN if first in _BOOLEAN_FIRST else FLOAT


def parse_line(line: bytes) -> ParsedLine:
    """Parse one logical line exactly as IOx does, or raise LineSyntaxError."""
    found = _LINE.match(line)
    if found is not None:
        measurement = found.group(1)
        _check_measurement(measurement)
        tags = _tags(line, *found.span(2))
        start, end = found.span(3)
        first = _FIRST_FIELD.match(line, start)
        if first is not None:  # always: group 3 starts with exactly this field
            fields: list[Field] = [(first.group(1), first.group(2))]
            if first.end() < end:
                fields += _NEXT_FIELD.findall(line, first.end(), end)
            if not found.group(4) or len(fields) == 1:
                _check_fields(line, start, end, fields)
                stamp = found.group(5)
                return ParsedLine(measurement, tags, fields, start, end, _timestamp(stamp), stamp)
    return _parse_step_by_step(line)


def parse_series(line: bytes) -> tuple[bytes, list[tuple[bytes, bytes]], int]:
    """(raw measurement, raw tag pairs, offset after them) of a line, or raise LineSyntaxError."""
    found = _SERIES.match(line)
    if found is None or line.startswith(b",", found.end()):
        return _series_step_by_step(line)
    measurement = found.group(1)
    _check_measurement(measurement)
    return measurement, _tags(line, *found.span(2)), found.end()


def _tags(line: bytes, start: int, end: int) -> list[tuple[bytes, bytes]]:
    """The tag pairs of a matched tag set, checked for what nom fails hard on."""
    if end == start:
        return []
    tags: list[tuple[bytes, bytes]] = _TAG.findall(line, start, end)
    if line.find(b"\\", start, end) >= 0 or (
        end - start > NAME_LIMIT and max(len(key) + len(value) for key, value in tags) > NAME_LIMIT
    ):
        for key, value in tags:
            _check_name(key, "tag key", NAME_ESCAPES)
            _check_name(value, "tag value", NAME_ESCAPES)
    return tags


def _check_measurement(token: bytes) -> None:
    if token.endswith(b"\\") or len(token) > NAME_LIMIT:
        _check_name(token, "measurement", MEASUREMENT_ESCAPES)


def _check_fields(line: bytes, start: int, end: int, fields: list[Field]) -> None:
    """The checks nom fails a whole line on, each run only when a cheap scan says it could fire."""
    long_line = end - start > NAME_LIMIT
    # A key ending in a backslash shows as `\=`; a too long key needs a long line.
    if line.find(b"\\=", start, end) >= 0 or (
        long_line and max(len(key) for key, _ in fields) > NAME_LIMIT
    ):
        for key, _ in fields:
            _check_name(key, "field key", NAME_ESCAPES)
    if _LONG_NUMBER.search(line, start, end) is not None:
        for _, token in fields:
            _check_number(token)
    if long_line:
        for key, token in fields:
            _check_string(key, token)


def _check_name(token: bytes, what: str, escapes: bytes) -> None:
    if token.endswith(b"\\"):
        raise LineSyntaxError(f"{what} may not end with a backslash: {show(token)}")
    if len(token) > NAME_LIMIT and _unescaped_size(token, escapes) > NAME_LIMIT:
        raise LineSyntaxError(f"{what} is longer than 65536 bytes")


def _unescaped_size(token: bytes, escapes: bytes) -> int:
    pattern = _MEASUREMENT_PAIRS if escapes == MEASUREMENT_ESCAPES else _NAME_PAIRS
    known = pattern.findall(token)  # b"" for pairs that stand for themselves
    return len(token) - (len(known) - known.count(b""))


def _check_number(token: bytes) -> None:
    if token.endswith(b"i"):
        if len(token) > 19 and int64_token(token[:-1]) is None:
            raise LineSyntaxError(f"integer value out of range {show(token)}")
    elif token.endswith(b"u") and len(token) > 20 and uint64_token(token[:-1]) is None:
        raise LineSyntaxError(f"unsigned integer value out of range {show(token)}")


def _check_string(key: bytes, token: bytes) -> None:
    if token.startswith(b'"') and len(token) > NAME_LIMIT + 2 and string_size(token) > NAME_LIMIT:
        raise LineSyntaxError(f"string value of field {show(key)} is longer than 65536 bytes")


def _timestamp(token: bytes | None) -> int | None:
    if token is None:
        return None
    value = int64_token(token)
    if value is None:
        raise LineSyntaxError(f"timestamp out of range {show(token)}")
    return value


def _series_step_by_step(line: bytes) -> tuple[bytes, list[tuple[bytes, bytes]], int]:
    found = _MEASUREMENT.match(line)
    if found is None:
        raise LineSyntaxError(diagnose.no_measurement(line))
    measurement = found.group()
    _check_measurement(measurement)
    pos = found.end()
    tags: list[tuple[bytes, bytes]] = []
    while line.startswith(b",", pos):  # IOx cuts here: every failure fails the line
        key = _KEY.match(line, pos + 1)
        if key is None:
            raise LineSyntaxError(f"expected a tag key after `,`, got {show(line[pos + 1 :])}")
        _check_name(key.group(), "tag key", NAME_ESCAPES)
        if not line.startswith(b"=", key.end()):
            raise LineSyntaxError(f"missing `=` after tag key {show(key.group())}")
        value = _TAG_VALUE.match(line, key.end() + 1)
        if value is None:
            raise LineSyntaxError(f"missing value for tag {show(key.group())}")
        _check_name(value.group(), "tag value", NAME_ESCAPES)
        tags.append((key.group(), value.group()))
        pos = value.end()
    return measurement, tags, pos


def _field_at(line: bytes, pos: int) -> tuple[Field, int] | None:
    """One `key=value` at pos and its end; None where nom errs softly, raise where it fails."""
    key = _KEY.match(line, pos)
    if key is None:
        return None
    _check_name(key.group(), "field key", NAME_ESCAPES)
    if not line.startswith(b"=", key.end()):
        return None
    value = _VALUE.match(line, key.end() + 1)
    if value is None:
        return None
    field = (key.group(), value.group())
    _check_number(field[1])
    _check_string(*field)
    return field, value.end()


def _parse_step_by_step(line: bytes) -> ParsedLine:
    """The reference walk, token by token; it names what is wrong when _LINE did not match."""
    measurement, tags, pos = _series_step_by_step(line)
    spaces = _SPACES.match(line, pos)
    if spaces is None:
        raise LineSyntaxError(diagnose.no_space(line, pos, bool(tags)))
    start = spaces.end()
    found = _field_at(line, start)
    if found is None:
        raise LineSyntaxError(diagnose.bad_field(line, start, first=True))
    fields = [found[0]]
    pos = found[1]
    while line.startswith(b",", pos):
        found = _field_at(line, pos + 1)
        if found is None:
            break
        fields.append(found[0])
        pos = found[1]
    end = pos
    if len(fields) == 1 and line.startswith(b",", pos):
        pos += 1  # IOx swallows one trailing comma after a single field
    timestamp = token = None
    stamp = _TIMESTAMP.match(line, pos)
    if stamp is not None:
        token = stamp.group(1)
        timestamp = _timestamp(token)
        pos = stamp.end()
        trailing = _SPACES.match(line, pos)
        if trailing is not None:
            pos = trailing.end()
    if pos != len(line):
        last_value = end - len(fields[-1][1])
        raise LineSyntaxError(
            diagnose.leftover(line, pos, end, last_value, fields[-1][0], timestamp is not None)
        )
    return ParsedLine(measurement, tags, fields, start, end, timestamp, token)


def string_size(token: bytes) -> int:
    """Unescaped byte length of a quoted string value token (quotes included in `token`)."""
    content = token[1:-1]
    if b"\\" not in content:
        return len(content)
    return len(content) - len(_STRING_KNOWN.findall(content))


def unescape(token: bytes, escapes: bytes) -> bytes:
    """A name without its escapes (`escapes` is MEASUREMENT_ESCAPES or NAME_ESCAPES)."""
    if b"\\" not in token:
        return token
    pattern = _MEASUREMENT_KNOWN if escapes == MEASUREMENT_ESCAPES else _NAME_KNOWN
    return pattern.sub(rb"\1", token)


def unescape_string(token: bytes) -> bytes:
    """The content of a quoted string value token: `\\"` and `\\\\` unescaped, others kept."""
    content = token[1:-1]
    if b"\\" not in content:
        return content
    return _STRING_KNOWN.sub(rb"\1", content)


__all__ = [
    "BOOLEAN",
    "FLOAT",
    "INTEGER",
    "MEASUREMENT_ESCAPES",
    "NAME_ESCAPES",
    "STRING",
    "TYPE_NAMES",
    "UNSIGNED",
    "Field",
    "LineSyntaxError",
    "ParsedLine",
    "parse_line",
    "parse_series",
    "show",
    "string_size",
    "unescape",
    "unescape_string",
    "value_kind",
]
