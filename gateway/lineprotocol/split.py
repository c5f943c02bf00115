"""Where one line of line protocol ends, and what InfluxDB 3 skips at its start.

A port of IOx's `split_lines` (itself a port of Go's `scanLine`) and `trim_leading`, over bytes.
Rules of `split_lines`, which decide the line boundaries (and so the acceptance set):

- a backslash escapes the next character, whatever it is, including a newline;
- before the first unescaped space (the "series" part) only escapes and newlines matter;
- after it, unquoted `=` and `,` are counted, and a `"` toggles "quoted" only when more `=`
  than `,` have been seen: so `m,t=a f="x\\ny"` is one line, while a quote in a tag value or
  after a comma-containing field key does not open a string;
- a newline that is neither escaped nor quoted ends the line.

`trim_leading` skips spaces, tabs and newlines, and a `#` comment up to the next newline *inside
the same logical line*, repeatedly. A comment line whose text contains `="` therefore opens a
"quoted" region and swallows the following lines until a closing quote -- IOx does the same.

All scanning uses compiled patterns that consume runs of ordinary bytes at C speed; the Python
loop advances once per run of quotes, so adversarial input stays linear.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

_SERIES_PART = re.compile(rb"(?:[^\\ \n]++|\\[\s\S])*+")
_UNQUOTED = re.compile(rb'(?:[^\\"\n]++|\\[\s\S])*+')
_QUOTED = re.compile(rb'(?:[^\\"]++|\\[\s\S])*+')
_QUOTE_RUN = re.compile(rb'"++')
_ESCAPE_PAIR = re.compile(rb"\\[\s\S]")
_LEADING_BLANKS = re.compile(rb"[ \t\n]*+")

_NEWLINE = 0x0A
_SPACE = 0x20
_BACKSLASH = 0x5C


def _skip(pattern: re.Pattern[bytes], data: bytes, pos: int) -> int:
    """End of the match of `pattern` (which can match empty, so always matches) at `pos`."""
    found = pattern.match(data, pos)
    return pos if found is None else found.end()


def line_end(body: bytes, pos: int) -> int:
    """Index of the newline ending the logical line that starts at `pos` (len(body) if none)."""
    newline = body.find(b"\n", pos)
    stop = len(body) if newline < 0 else newline
    if body.find(b'"', pos, stop) < 0:
        # Without quotes only escapes matter: the newline ends the line unless an odd run of
        # backslashes precedes it.
        run = stop
        while run > pos and body[run - 1] == _BACKSLASH:
            run -= 1
        if (stop - run) % 2 == 0:
            return stop
    return _scan(body, pos)


def _scan(body: bytes, pos: int) -> int:
    """The state machine of IOx's split_lines, advancing over runs instead of characters."""
    end = len(body)
    i = _skip(_SERIES_PART, body, pos)
    if i >= end or body[i] != _SPACE:
        # A newline, the end, or a lone backslash at the very end (which escapes nothing).
        return i if i < end and body[i] == _NEWLINE else end
    i += 1
    equals = commas = 0
    while True:
        j = _skip(_UNQUOTED, body, i)
        if body.find(b"\\", i, j) < 0:
            equals += body.count(b"=", i, j)
            commas += body.count(b",", i, j)
        else:
            plain = _ESCAPE_PAIR.sub(b"", body[i:j])
            equals += plain.count(b"=")
            commas += plain.count(b",")
        if j >= end:
            return end
        char = body[j]
        if char == _NEWLINE:
            return j
        if char == _BACKSLASH:
            return end
        run_end = _skip(_QUOTE_RUN, body, j)
        # Each quote toggles only while equals > commas; nothing is counted while quoted, so a
        # run of quotes toggles once per quote and only its parity matters.
        if equals <= commas or (run_end - j) % 2 == 0:
            i = run_end
            continue
        while True:  # quoted
            j = _skip(_QUOTED, body, run_end)
            if j >= end or body[j] == _BACKSLASH:
                return end
            after = _skip(_QUOTE_RUN, body, j)
            if (after - j) % 2 == 1:
                i = after
                break
            run_end = after


def trim_leading(line: bytes) -> tuple[int, int]:
    """(offset of the content, newlines skipped) after IOx's leading whitespace/comment skip."""
    i = 0
    skipped = 0
    while True:
        j = _skip(_LEADING_BLANKS, line, i)
        if j > i:
            skipped += line.count(b"\n", i, j)
        i = j
        if line.startswith(b"#", i):
            newline = line.find(b"\n", i)
            if newline < 0:
                return len(line), skipped
            i = newline
        else:
            return i, skipped


def logical_lines(body: bytes) -> Iterator[tuple[int, int]]:
    """(start, end) of every logical line of `body`, the end excluding its newline."""
    pos = 0
    size = len(body)
    if body.find(b'"') < 0 and body.find(b"\\") < 0:
        while pos < size:
            newline = body.find(b"\n", pos)
            stop = size if newline < 0 else newline
            yield pos, stop
            pos = stop + 1
        return
    while pos < size:
        stop = line_end(body, pos)
        yield pos, stop
        pos = stop + 1
