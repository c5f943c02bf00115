"""Why a line is not line protocol: the wording of syntax errors, computed only on failure.

The parser (`syntax.py`) decides *whether* a line is valid; this module only words the reason
for the spot where it stopped. Reasons are short and lower-case, and quote the offending token in
backticks, truncated, with control characters made visible (`show`).
"""

from __future__ import annotations

import re

_VALUE = re.compile(
    rb"-?\d++i|\d++u|-?\d++(?:\.\d++)?+(?:[eE][-+]?\d++)?+"
    rb'|"(?:[^"\\]++|\\[\s\S])*+"'
    rb"|true|True|TRUE|t|T|false|False|FALSE|f|F"
)
_KEY = re.compile(rb"(?:[^ \t\n=\\]++|\\[\s\S]|\\\Z)++")
_FLOAT_WORDS = frozenset({b"nan", b"inf", b"infinity"})
_VISIBLE = {0: "\\0", 9: "\\t", 10: "\\n", 13: "\\r"}


class LineSyntaxError(ValueError):
    """One line is not valid line protocol; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def show(token: bytes, limit: int = 40) -> str:
    """A token for an error message: backticked, control characters visible, truncated."""
    text = token.decode("utf-8", "replace")
    if len(text) > limit:
        text = text[:limit] + "..."
    return "`" + text.translate(_VISIBLE) + "`"


def no_measurement(line: bytes) -> str:
    """The line starts with something that cannot start a measurement."""
    if line.startswith(b"\x00"):
        return "NUL character in measurement"
    return "missing measurement"


def no_space(line: bytes, pos: int, has_tags: bool) -> str:
    """The measurement/tag set is not followed by a space."""
    if pos >= len(line):
        return "no fields"
    if line[pos] == 0:
        return "NUL character in measurement"
    where = "tag set" if has_tags else "measurement"
    return f"expected a space after the {where}, got {show(line[pos:])}"


def bad_field(line: bytes, pos: int, *, first: bool) -> str:
    """No `key=value` could be read at pos."""
    found = _KEY.match(line, pos)
    if found is None:
        if pos >= len(line):
            return "no fields" if first else "trailing comma after the last field"
        return f"expected a field key, got {show(line[pos:])}"
    key = found.group()
    if not line.startswith(b"=", found.end()):
        if first and b"=" not in line[pos:]:
            return "no fields"
        return f"missing `=` after field key {show(key)}"
    return bad_value(line, found.end() + 1, key)


def bad_value(line: bytes, pos: int, key: bytes) -> str:
    """The value starting at pos is not a value, or is followed by junk."""
    if line.startswith(b'"', pos):
        found = _VALUE.match(line, pos)
        if found is None:
            return f"unterminated string value for field {show(key)}"
        junk = show(line[found.end() :])
        return f"unexpected {junk} after the string value of field {show(key)}"
    stop = len(line)
    for separator in (b",", b" "):
        at = line.find(separator, pos, stop)
        if at >= 0:
            stop = at
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


def leftover(
    line: bytes,
    pos: int,
    fields_end: int,
    last_value: int,
    last_key: bytes,
    has_timestamp: bool,
) -> str:
    """The line did not end at pos."""
    if has_timestamp:
        return f"unexpected {show(line[pos:])} after the timestamp"
    if line.startswith(b" ", pos):
        return f"invalid timestamp {show(line[pos:].lstrip(b' ').split(b' ', 1)[0])}"
    if pos != fields_end:  # after the single-field trailing comma
        return bad_field(line, pos, first=False)
    if line.startswith(b",", pos):
        return bad_field(line, pos + 1, first=False)
    return bad_value(line, last_value, last_key)
