"""Bulk checks over runs of plain lines: the part of validation that runs at C speed.

`PLAIN_LINES` matches, in one regex call, a run of lines in a strict subset of the grammar in
`syntax.py`: names without escapes, quotes, `=`, `,`, CR or NUL; single spaces; simple string
values (no backslash, newline or CR); timestamps of at most 19 digits; optionally a CR before the
newline (removed in bulk: the CRLF leniency). In such a run every newline ends a line (there is
nothing for IOx's line splitter to escape or quote), so the run can be checked as a whole:

- the key skeleton of every line (`cpu,host usage_user,usage_idle`, values and timestamp cut
  away by one `re.sub`) is computed once per distinct skeleton, catching duplicate tags and
  fields, `time` keys and tag/field name clashes;
- every timestamp is collected with one `findall` and checked through its minimum and maximum;
- integers of 19+ digits and lines above the name or line size limits are flagged.

Lines that any check flags go through the exact parser one by one; a run with nothing flagged
is accepted by slicing. `BLANK_LINES` skips runs of blank, whitespace-only and simple comment
lines the same way.
"""

from __future__ import annotations

import re

_NAME = rb'[^ \t\n\r\x00,=\\"]'
_VALUE = (
    rb"(?>-?\d++i|\d++u|-?\d++(?:\.\d++)?+(?:[eE][-+]?\d++)?+"
    rb'|"[^"\\\n\r]*+"'
    rb"|t(?:rue)?+|T(?:rue|RUE)?+|f(?:alse)?+|F(?:alse|ALSE)?+)"
)
_LINE = (
    rb'[^ \t\n\r\x00,=\\"#]' + _NAME + rb"*+"
    rb"(?:," + _NAME + rb"++=" + _NAME + rb"++)*+"
    rb" " + _NAME + rb"++=" + _VALUE + rb"(?:," + _NAME + rb"++=" + _VALUE + rb")*+"
    rb"(?: -?\d{1,19}+)?+"
    rb"\r?+(?:\n|\Z)"
)
PLAIN_LINES = re.compile(rb"(?:" + _LINE + rb")++")
BLANK_LINES = re.compile(rb'(?:[ \t]*+(?:#[^\n"\\]*+|[ \t\r]*+)\n)++')

# A value, and the timestamp when it follows the last value: one match per value is cheapest.
_SKELETON = re.compile(rb'=(?:"[^"\n]*+"|[^ ,\n]*+)(?: -?\d++(?=\n|\Z))?+')
_TIMESTAMPS = re.compile(rb" (-?\d++)(?=\n|\Z)")
_BIG_INTEGER = re.compile(rb"=-?\d{19,}+i|=\d{20,}+u")
_TIME = b"time"
_NAME_LIMIT = 65_536


def _skeleton_ok(skeleton: bytes) -> bool:
    """True when a line with these keys passes every write rule without a closer look."""
    series, _, field_part = skeleton.partition(b" ")
    fields = field_part.split(b",")
    if len(fields) > 1:
        unique = set(fields)
        if len(unique) != len(fields) or _TIME in unique:
            return False
    elif fields[0] == _TIME:
        return False
    if b"," not in series:
        return True
    tags = series.split(b",")[1:]
    tag_set = set(tags)
    return len(tag_set) == len(tags) and _TIME not in tag_set and tag_set.isdisjoint(fields)


def flagged_lines(chunk: bytes, max_line_bytes: int) -> set[int]:
    """Indexes of the lines of a plain run that need the exact parser."""
    flagged: set[int] = set()
    skeletons = _SKELETON.sub(b"", chunk).split(b"\n")
    bad = {skeleton for skeleton in set(skeletons) if not _skeleton_ok(skeleton)}
    bad.discard(b"")
    if bad:
        flagged.update(i for i, skeleton in enumerate(skeletons) if skeleton in bad)
    limit = min(max_line_bytes, _NAME_LIMIT)
    if len(chunk) > limit:
        sizes = list(map(len, split_chunk(chunk)))
        if max(sizes) > limit:
            flagged.update(i for i, size in enumerate(sizes) if size > limit)
    if _BIG_INTEGER.search(chunk) is not None:
        lines = split_chunk(chunk)
        flagged.update(i for i, line in enumerate(lines) if _BIG_INTEGER.search(line))
    return flagged


def timestamps(chunk: bytes) -> list[bytes]:
    """The timestamp tokens of a plain run, in line order (lines without one are skipped)."""
    return _TIMESTAMPS.findall(chunk)


def split_chunk(chunk: bytes) -> list[bytes]:
    """The lines of a plain run, without newlines."""
    lines = chunk.split(b"\n")
    if chunk.endswith(b"\n"):
        lines.pop()
    return lines


def line_count(chunk: bytes) -> int:
    """Number of lines in a plain run."""
    return chunk.count(b"\n") + (0 if chunk.endswith(b"\n") else 1)


def timestamp_of(line: bytes) -> tuple[int, bytes | None]:
    """(offset of the space before the timestamp, its token or None) of a plain line."""
    space = line.rfind(b" ")
    tail = line[space + 1 :]
    if tail.isdigit() or (tail.startswith(b"-") and tail[1:].isdigit()):
        return space, tail
    return len(line), None
