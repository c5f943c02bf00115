"""The grammar of one line, exactly as InfluxDB 3's parser (IOx `influxdb_line_protocol`) has it.

`parse_line` takes one logical line (leading blanks/comments already skipped, trailing blanks
removed) and returns the raw tokens, or raises `LineSyntaxError` with a short reason. It is the
reference implementation: the bulk fast path in `fastpath.py` only ever accepts a subset of it.

Rules verified against the Rust source (nom combinators), some of them surprising:

- measurement: one or more of anything but space, tab, newline, NUL, `,` and `\\`; tag keys and
  field keys: anything but space, tab, newline, `=` and `\\` -- so a raw `,` *is* allowed in tag
  and field keys (`m,a,b=1 f=1` has tag key `a,b`) and NUL is allowed outside the measurement;
  tag values: anything but space, tab, newline, `,` and `\\` (a raw `=` is allowed). Other
  control characters (including CR) are ordinary characters everywhere.
- A backslash escapes *any* next character (even a newline or NUL): `\\,` `\\ ` `\\\\` (and `\\=`
  outside the measurement) stand for the character, any other pair stands for itself, both
  characters kept. A name whose unescaped text ends in a backslash is an error, as is one longer
  than 65536 bytes (unescaped). Empty names and empty tag values are errors.
- One or more *spaces* (never tabs) separate measurement/tags, fields and timestamp.
- Field values, tried in this order, first prefix match wins: integer `-?D+i` (int64, else an
  error for the whole line), unsigned `D+u` (uint64), float `-?D+(.D+)?([eE][+-]?D+)?` (no `+`,
  no `.5`, no `1.`, no NaN/inf; overflowing exponents become infinity and are accepted), string
  `"..."` (only `\\"` and `\\\\` are escapes, a lone backslash is kept, newlines are fine, at most
  65536 bytes unescaped), boolean `t T true True TRUE f F false False FALSE`.
- A trailing comma after the fields is accepted when there is exactly one field (`m f=1,` and
  `m f=1, 123`) but not after two or more -- a quirk of IOx's separated-list combinator.
- The timestamp is `-?D+` in int64; trailing spaces after it are accepted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gateway.lineprotocol.precision import int64_token, uint64_token

NAME_LIMIT = 65_536

# Value types, numbered as the groups of _VALUE (IOx's order of alternatives).
INTEGER, UNSIGNED, FLOAT, STRING, BOOLEAN = range(5)
TYPE_NAMES = ("integer", "unsigned", "float", "string", "boolean")
MEASUREMENT_ESCAPES = b", "
NAME_ESCAPES = b",= "

_KEY_TEXT = rb"(?:[^ \t\n=\\]++|\\[\s\S]|\\\Z)++"
_TAG_VALUE_TEXT = rb"(?:[^ \t\n,\\]++|\\[\s\S]|\\\Z)++"
_VALUE_TEXT = (
    rb"(-?\d++)i|(\d++)u|(-?\d++(?:\.\d++)?+(?:[eE][-+]?\d++)?+)"
    rb'|"((?:[^"\\]++|\\[\s\S])*+)"'
    rb"|(true|True|TRUE|t|T|false|False|FALSE|f|F)"
)
_MEASUREMENT = re.compile(rb"(?:[^ \t\n\x00,\\]++|\\[\s\S]|\\\Z)++")
_KEY = re.compile(_KEY_TEXT)
_TAG_VALUE = re.compile(_TAG_VALUE_TEXT)
_SPACES = re.compile(rb" ++")
_VALUE = re.compile(_VALUE_TEXT)
# Whole tag sets and field lists in one call each, then their items by finditer. The items are
# the same tokens as above; possessive repeats never revisit an item, as nom never does.
_TAG = re.compile(rb",(" + _KEY_TEXT + rb")=(" + _TAG_VALUE_TEXT + rb")")
_TAG_SET = re.compile(rb"(?:," + _KEY_TEXT + b"=" + _TAG_VALUE_TEXT + rb")++")
_PLAIN_VALUE_TEXT = (
    rb"-?\d++i|\d++u|-?\d++(?:\.\d++)?+(?:[eE][-+]?\d++)?+"
    rb'|"(?:[^"\\]++|\\[\s\S])*+"'
    rb"|true|True|TRUE|t|T|false|False|FALSE|f|F"
)
_FIELD_TEXT = _KEY_TEXT + rb"=(?>" + _PLAIN_VALUE_TEXT + rb")"
_FIELD_LIST = re.compile(_FIELD_TEXT + rb"(?:," + _FIELD_TEXT + rb")*+")
# One whole line: measurement, tag set, fields, the single-field trailing comma, timestamp.
_LINE = re.compile(
    rb"((?:[^ \t\n\x00,\\]++|\\[\s\S]|\\\Z)++)"
    rb"((?:," + _KEY_TEXT + b"=" + _TAG_VALUE_TEXT + rb")*+)"
    rb" ++(" + _FIELD_TEXT + rb"(?:," + _FIELD_TEXT + rb")*+)(,?)"
    rb"(?: ++(-?\d++) *+)?+\Z"
)
_FIRST_FIELD = re.compile(rb"(" + _KEY_TEXT + rb")=(?>" + _VALUE_TEXT + rb")")
_NEXT_FIELD = re.compile(rb",(" + _KEY_TEXT + rb")=(?>" + _VALUE_TEXT + rb")")
_TIMESTAMP = re.compile(rb" ++(-?\d++)")
_ESCAPE_PAIR = re.compile(rb"\\[\s\S]")
_FLOAT_WORDS = frozenset({b"nan", b"inf", b"infinity", b"+nan", b"-nan"})


class LineSyntaxError(ValueError):
    """One line is not valid line protocol; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(slots=True)
class Field:
    """One field as written: raw (escaped) key, value type, raw value token, key offsets."""

    key: bytes
    kind: int
    value: bytes
    key_start: int
    key_end: int


@dataclass(slots=True)
class ParsedLine:
    """The raw tokens of one valid line; names are still escaped."""

    measurement: bytes
    tags: list[tuple[bytes, bytes]]
    fields: list[Field]
    fields_end: int  # offset just after the last field value (before any trailing comma)
    timestamp: int | None


def parse_series(line: bytes) -> tuple[bytes, list[tuple[bytes, bytes]], int]:
    """(raw measurement, raw tag pairs, offset after them) of a line, or raise LineSyntaxError."""
    found = _MEASUREMENT.match(line)
    if found is None:
        if line.startswith(b"\x00"):
            raise LineSyntaxError("NUL character in measurement")
        raise LineSyntaxError("missing measurement")
    measurement = found.group()
    _check_name(measurement, "measurement", MEASUREMENT_ESCAPES)
    pos = found.end()
    tags: list[tuple[bytes, bytes]] = []
    if line.startswith(b",", pos):
        found = _TAG_SET.match(line, pos)
        if found is None or line.startswith(b",", found.end()):
            _parse_tags(line, pos + 1, tags)  # raises, naming the bad tag
            raise LineSyntaxError("invalid tag set")
        end = found.end()
        tags = _TAG.findall(line, pos, end)
        for key, value in tags:
            if key.endswith(b"\\") or value.endswith(b"\\") or end - pos > NAME_LIMIT:
                _check_name(key, "tag key", NAME_ESCAPES)
                _check_name(value, "tag value", NAME_ESCAPES)
        pos = end
    return measurement, tags, pos


def parse_line(line: bytes) -> ParsedLine:
    """Parse one logical line exactly as IOx does, or raise LineSyntaxError."""
    found = _LINE.match(line)
    if found is not None:
        parsed = _from_match(line, found)
        if parsed is not None:
            return parsed
    return _parse_step_by_step(line)


def _from_match(line: bytes, found: re.Match[bytes]) -> ParsedLine | None:
    """The tokens of a whole-line match, with the checks nom fails hard on; None to re-parse."""
    measurement = found.group(1)
    if measurement.endswith(b"\\") or len(measurement) > NAME_LIMIT:
        _check_name(measurement, "measurement", MEASUREMENT_ESCAPES)
    tag_start, tag_end = found.span(2)
    tags: list[tuple[bytes, bytes]] = []
    if tag_end > tag_start:
        tags = _TAG.findall(line, tag_start, tag_end)
        for key, value in tags:
            if key.endswith(b"\\") or value.endswith(b"\\") or tag_end - tag_start > NAME_LIMIT:
                _check_name(key, "tag key", NAME_ESCAPES)
                _check_name(value, "tag value", NAME_ESCAPES)
    start, end = found.span(3)
    first = _FIRST_FIELD.match(line, start)
    if first is None:
        return None
    fields = [_field(first)]
    if first.end() < end:
        fields.extend(map(_field, _NEXT_FIELD.finditer(line, first.end(), end)))
    if found.group(4) and len(fields) > 1:
        return None  # a trailing comma after two or more fields: let the step parser say so
    stamp = found.group(5)
    timestamp = None
    if stamp is not None:
        timestamp = int64_token(stamp)
        if timestamp is None:
            raise LineSyntaxError(f"timestamp out of range {show(stamp)}")
    return ParsedLine(measurement, tags, fields, end, timestamp)


def _parse_step_by_step(line: bytes) -> ParsedLine:
    """The reference walk, token by token; it names what is wrong when _LINE does not match."""
    size = len(line)
    measurement, tags, pos = parse_series(line)
    found = _SPACES.match(line, pos)
    if found is None:
        if pos >= size:
            raise LineSyntaxError("no fields")
        if line[pos] == 0:
            raise LineSyntaxError("NUL character in measurement")
        where = "tag set" if tags else "measurement"
        raise LineSyntaxError(f"expected a space after the {where}, got {show(line[pos:])}")
    fields, pos = _parse_fields(line, found.end())
    field_end = pos
    if len(fields) == 1 and line.startswith(b",", pos):
        pos += 1  # IOx swallows one trailing comma after a single field
    timestamp: int | None = None
    found = _TIMESTAMP.match(line, pos)
    if found is not None:
        timestamp = int64_token(found.group(1))
        if timestamp is None:
            raise LineSyntaxError(f"timestamp out of range {show(found.group(1))}")
        pos = found.end()
        spaces = _SPACES.match(line, pos)
        if spaces is not None:
            pos = spaces.end()
    if pos != size:
        raise LineSyntaxError(_leftover(line, pos, field_end, fields, timestamp is not None))
    return ParsedLine(measurement, tags, fields, field_end, timestamp)


def _parse_fields(line: bytes, pos: int) -> tuple[list[Field], int]:
    """The field list at pos (at least one field) and the offset after its last value."""
    found = _FIELD_LIST.match(line, pos)
    if found is None:
        _parse_field(line, pos)  # raises if nom fails hard on this field
        raise LineSyntaxError(_field_failure(line, pos, first=True))
    end = found.end()
    first = _FIRST_FIELD.match(line, pos)
    assert first is not None  # _FIELD_LIST matched the same tokens
    fields = [_field(first)]
    if first.end() < end:
        fields.extend(map(_field, _NEXT_FIELD.finditer(line, first.end(), end)))
    if line.startswith(b",", end):  # the next field failed: did nom fail hard on it?
        _parse_field(line, end + 1)
    return fields, end


def _field(found: re.Match[bytes]) -> Field:
    """A Field from a _FIRST_FIELD/_NEXT_FIELD match, with the checks nom fails hard on."""
    key = found.group(1)
    kind = (found.lastindex or 2) - 2
    token = found.string[found.end(1) + 1 : found.end()]
    if key.endswith(b"\\") or len(key) > NAME_LIMIT:
        _check_name(key, "field key", NAME_ESCAPES)
    if kind == INTEGER:
        if len(token) > 19 and int64_token(token[:-1]) is None:
            raise LineSyntaxError(f"integer value out of range {show(token)}")
    elif kind == UNSIGNED:
        if len(token) > 20 and uint64_token(token[:-1]) is None:
            raise LineSyntaxError(f"unsigned integer value out of range {show(token)}")
    elif kind == STRING and len(token) > NAME_LIMIT + 2 and string_size(token) > NAME_LIMIT:
        raise LineSyntaxError(f"string value of field {show(key)} is longer than 65536 bytes")
    return Field(key, kind, token, found.start(1), found.end(1))


def _parse_tags(line: bytes, pos: int, tags: list[tuple[bytes, bytes]]) -> int:
    """Parse `k=v(,k=v)*` after the measurement's comma; every failure fails the line."""
    while True:
        found = _KEY.match(line, pos)
        if found is None:
            raise LineSyntaxError(f"expected a tag key after `,`, got {show(line[pos:])}")
        key = found.group()
        _check_name(key, "tag key", NAME_ESCAPES)
        pos = found.end()
        if not line.startswith(b"=", pos):
            raise LineSyntaxError(f"missing `=` after tag key {show(key)}")
        found = _TAG_VALUE.match(line, pos + 1)
        if found is None:
            raise LineSyntaxError(f"missing value for tag {show(key)}")
        value = found.group()
        _check_name(value, "tag value", NAME_ESCAPES)
        tags.append((key, value))
        pos = found.end()
        if not line.startswith(b",", pos):
            return pos
        pos += 1


def _parse_field(line: bytes, pos: int) -> Field | None:
    """One `key=value` at pos; None where nom reports a recoverable error, raise on a failure."""
    found = _KEY.match(line, pos)
    if found is None:
        return None
    key = found.group()
    _check_name(key, "field key", NAME_ESCAPES)
    at = found.end()
    if not line.startswith(b"=", at):
        return None
    value = _VALUE.match(line, at + 1)
    if value is None:
        return None
    kind = (value.lastindex or 1) - 1
    token = value.group()
    if kind == INTEGER:
        if len(token) > 19 and int64_token(token[:-1]) is None:
            raise LineSyntaxError(f"integer value out of range {show(token)}")
    elif kind == UNSIGNED:
        if len(token) > 20 and uint64_token(token[:-1]) is None:
            raise LineSyntaxError(f"unsigned integer value out of range {show(token)}")
    elif kind == STRING and len(token) > NAME_LIMIT + 2 and string_size(token) > NAME_LIMIT:
        raise LineSyntaxError(f"string value of field {show(key)} is longer than 65536 bytes")
    return Field(key, kind, token, found.start(), found.end())


def _check_name(token: bytes, what: str, escapes: bytes) -> None:
    if token.endswith(b"\\"):
        raise LineSyntaxError(f"{what} may not end with a backslash: {show(token)}")
    if len(token) > NAME_LIMIT and len(unescape(token, escapes)) > NAME_LIMIT:
        raise LineSyntaxError(f"{what} is longer than 65536 bytes")


def _field_failure(line: bytes, pos: int, *, first: bool) -> str:
    """Why no field could be parsed at pos (only called on the failure path)."""
    found = _KEY.match(line, pos)
    if found is None:
        if first and pos >= len(line):
            return "no fields"
        if pos >= len(line):
            return "trailing comma after the last field"
        return f"expected a field key, got {show(line[pos:])}"
    key = found.group()
    at = found.end()
    if not line.startswith(b"=", at):
        if first and b"=" not in line[pos:]:
            return "no fields"
        return f"missing `=` after field key {show(key)}"
    return _value_failure(line, at + 1, key)


def _value_failure(line: bytes, pos: int, key: bytes) -> str:
    """Name the bad value that starts at pos (the line failed at or just after it)."""
    if line.startswith(b'"', pos):
        found = _VALUE.match(line, pos)
        if found is None:
            return f"unterminated string value for field {show(key)}"
        return f"unexpected {show(line[found.end() :])} after the string value of field {show(key)}"
    stop = len(line)
    for separator in (b",", b" "):
        found_at = line.find(separator, pos, stop)
        if found_at >= 0:
            stop = found_at
    token = line[pos:stop]
    if not token:
        return f"missing value for field {show(key)}"
    if token[0] in b"-+.0123456789":
        if token.endswith(b"i"):
            return f"invalid integer value {show(token)}"
        if token.endswith(b"u"):
            return f"invalid unsigned integer value {show(token)}"
        return f"invalid float value {show(token)}"
    if token.lower() in _FLOAT_WORDS:
        return f"invalid float value {show(token)}"
    if token[0] in b"tTfF":
        return f"invalid boolean value {show(token)}"
    return f"invalid value {show(token)} for field {show(key)}"


def _leftover(
    line: bytes, pos: int, field_end: int, fields: list[Field], has_timestamp: bool
) -> str:
    """Why the line did not end at pos."""
    if has_timestamp:
        return f"unexpected {show(line[pos:])} after the timestamp"
    if line.startswith(b" ", pos):
        token = line[pos:].lstrip(b" ").split(b" ", 1)[0]
        return f"invalid timestamp {show(token)}"
    if pos != field_end:  # after the single-field trailing comma
        return _field_failure(line, pos, first=False)
    if line.startswith(b",", pos):
        return _field_failure(line, pos + 1, first=False)
    last = fields[-1]
    return _value_failure(line, last.key_end + 1, last.key)


def string_size(token: bytes) -> int:
    """Unescaped byte length of a quoted string value token (quotes included in `token`)."""
    content = token[1:-1]
    if b"\\" not in content:
        return len(content)
    pairs = _ESCAPE_PAIR.findall(content)
    return len(content) - sum(1 for pair in pairs if pair[1] in b'"\\')


def unescape(token: bytes, known: bytes) -> bytes:
    """A name without its escapes: `\\X` becomes X when X is in `known` or a backslash."""
    if b"\\" not in token:
        return token

    def one(pair: re.Match[bytes]) -> bytes:
        text = pair.group()
        return text[1:] if text[1:] in known or text[1:] == b"\\" else text

    return _ESCAPE_PAIR.sub(one, token)


def unescape_string(token: bytes) -> bytes:
    """The content of a quoted string value token: `\\"` and `\\\\` unescaped, others kept."""
    content = token[1:-1]
    if b"\\" not in content:
        return content

    def one(pair: re.Match[bytes]) -> bytes:
        text = pair.group()
        return text[1:] if text[1:] in (b'"', b"\\") else text

    return _ESCAPE_PAIR.sub(one, content)


def show(token: bytes, limit: int = 40) -> str:
    """A token for an error message: backticked, control characters visible, truncated."""
    text = token.decode("utf-8", "replace")
    if len(text) > limit:
        text = text[:limit] + "..."
    return "`" + text.translate(_VISIBLE) + "`"


_VISIBLE = {0: "\\0", 9: "\\t", 10: "\\n", 13: "\\r"}

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
]
