"""`validate`: a request body in, the accepted lines (normalized) and the line errors out.

Owns the walk over the body: runs of blank/comment lines are skipped in bulk, runs of plain lines
go through the bulk checks of `fastpath.py` -- or, when the C accelerator is active
(`implementation.py`), through `_speedups.scan_plain`, which accepts the plain lines it can
decide and stops at the first one Python must look at -- and every other logical line (found
with IOx's splitter, `split.py`) goes through the exact parser (`syntax.py`) and write rules
(`rules.py`). Timestamps are checked, stamped and converted by `precision.TimestampPolicy`.

The output is normalized so that what is forwarded is clean and self-delimiting: each accepted
line has no leading blanks/comments, no trailing blanks or CR, exactly one space before a
timestamp it always has (in the output precision), and ends in a newline. Two more rewrites keep
InfluxDB's line splitter from joining an accepted line with the next one: the single-field
trailing comma IOx tolerates is dropped, and a raw comma in a field key is escaped (`a,b=1`
becomes `a\\,b=1`, the same key; a raw comma makes IOx's splitter miscount and treat a later
quote as opening a string). When nothing needed a change the input object itself is returned.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gateway.errors import LineProtocolBodyError
from gateway.lineprotocol import fastpath
from gateway.lineprotocol.implementation import Implementation, ScanPlain, plain_scanner
from gateway.lineprotocol.precision import (
    INT64_MAX,
    INT64_MIN,
    Precision,
    ScanPolicy,
    TimeRules,
    TimestampPolicy,
    output_precision,
)
from gateway.lineprotocol.rules import check_rules
from gateway.lineprotocol.split import line_end, trim_leading
from gateway.lineprotocol.syntax import (
    NAME_LIMIT,
    LineSyntaxError,
    ParsedLine,
    parse_line,
    show,
)

_KEY_COMMA = re.compile(rb"\\[\s\S]|,")
_DEFAULT_RULES = TimeRules()
_LEADING = frozenset(b" \t\n#")  # what IOx's trim_leading skips
_TRAILING = frozenset(b" \t\r")  # what the gateway's leniency removes


@dataclass(frozen=True, slots=True)
class LineError:
    """One rejected line: its 1-based physical line number and why."""

    line: int
    reason: str

    def __str__(self) -> str:
        return f"error parsing line {self.line} (1-based): {self.reason}"


@dataclass(frozen=True, slots=True)
class ValidationResult:
    """The accepted lines (normalized, newline-terminated, all timestamped) and the line errors."""

    body: bytes
    precision: Precision
    accepted: int
    rejected: int
    errors: tuple[LineError, ...]
    min_time_ns: int | None
    max_time_ns: int | None
    implausible: int = 0  # of the rejected lines, those refused by the timestamp guard


def validate(
    body: bytes,
    precision: Precision,
    *,
    now_ns: int,
    rules: TimeRules = _DEFAULT_RULES,
    max_line_bytes: int = 1_048_576,
    max_errors: int = 100,
    implementation: Implementation | None = None,
) -> ValidationResult:
    """Validate a body of line protocol as InfluxDB 3 would, plus the gateway's time rules.

    `implementation` ("c" or "python") only chooses how plain runs are scanned; the result is
    the same either way. None means the active one (`implementation.ACTIVE`).
    """
    _check_utf8(body)
    policy = TimestampPolicy(precision, now_ns, rules)
    run = _Run(policy, max_line_bytes, max_errors)
    scan = plain_scanner(implementation)
    arguments = None
    if scan is not None and isinstance(body, bytes):
        arguments = policy.scan_arguments(min(max_line_bytes, NAME_LIMIT))
    if scan is None or arguments is None:
        _walk(body, run)
    else:
        _walk_compiled(body, run, scan, arguments)
    return run.result(body, output_precision(precision))


def _walk(body: bytes, run: _Run) -> None:
    """The pure-Python walk: runs of plain lines through fastpath's bulk checks."""
    size = len(body)
    pos = 0
    line_no = 1
    plain_lines = fastpath.PLAIN_LINES.match
    while pos < size:
        found = plain_lines(body, pos)
        if found is not None:
            end = found.end()
            run.plain(body if end - pos == size else body[pos:end], line_no)
            line_no += body.count(b"\n", pos, end)
            pos = end
            continue
        pos, line_no = _step(body, pos, line_no, run)


def _walk_compiled(body: bytes, run: _Run, scan: ScanPlain, policy: ScanPolicy) -> None:
    """The walk with the C accelerator: it takes the plain lines, Python whatever stops it."""
    size = len(body)
    pos = 0
    line_no = 1
    while pos < size:
        end, newlines, accepted, lowest, highest, out, refused = scan(body, pos, policy)
        if accepted:
            if out is not None:
                run.changed = True
            else:
                out = body if end - pos == size else body[pos:end]  # unchanged: no copy when whole
            run.accept_run(out, accepted, lowest, highest)
            line_no += newlines
            pos = end
        if refused is not None:
            # A plain line refused for its timestamp alone: Python's plain-line code words why.
            line = body[pos:refused]
            if line.endswith(b"\r") or refused >= size:
                line = line.removesuffix(b"\r")
                run.changed = True
            run.plain_line(line, line_no)
            pos = refused + 1
            line_no += 1
        elif pos < size:
            pos, line_no = _step(body, pos, line_no, run)


def _step(body: bytes, pos: int, line_no: int, run: _Run) -> tuple[int, int]:
    """Past a run of blank/comment lines, or one logical line through the exact parser."""
    found = fastpath.BLANK_LINES.match(body, pos)
    if found is not None:
        end = found.end()
        run.changed = True
        return end, line_no + body.count(b"\n", pos, end)
    stop = line_end(body, pos)
    if stop >= len(body):
        run.changed = True  # the last line gets its newline
    run.line(body[pos:stop], line_no)
    return stop + 1, line_no + body.count(b"\n", pos, stop) + 1


def _check_utf8(body: bytes) -> None:
    if body.isascii():
        return
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as error:
        offset = error.start
        line = body.count(b"\n", 0, offset) + 1
        raise LineProtocolBodyError(
            f"invalid UTF-8 in line {line} (byte offset {offset} of the body)"
        ) from None


class _Run:
    """The accumulating state of one validation."""

    __slots__ = (
        "accepted",
        "changed",
        "errors",
        "highest",
        "implausible",
        "lowest",
        "max_errors",
        "max_line_bytes",
        "parts",
        "policy",
        "rejected",
    )

    def __init__(self, policy: TimestampPolicy, max_line_bytes: int, max_errors: int) -> None:
        self.policy = policy
        self.max_line_bytes = max_line_bytes
        self.max_errors = max_errors
        self.parts: list[bytes] = []
        self.errors: list[LineError] = []
        self.accepted = 0
        self.rejected = 0
        self.implausible = 0
        self.changed = False
        self.lowest: int | None = None
        self.highest: int | None = None

    def result(self, body: bytes, precision: Precision) -> ValidationResult:
        out = body if not self.changed else b"".join(self.parts)
        return ValidationResult(
            body=out,
            precision=precision,
            accepted=self.accepted,
            rejected=self.rejected,
            implausible=self.implausible,
            errors=tuple(self.errors),
            min_time_ns=self.lowest,
            max_time_ns=self.highest,
        )

    def reject(self, line_no: int, reason: str, *, implausible: bool = False) -> None:
        self.rejected += 1
        self.implausible += implausible
        self.changed = True
        if len(self.errors) < self.max_errors:
            self.errors.append(LineError(line_no, reason))

    def _span(self, lowest: int, highest: int) -> None:
        if self.lowest is None or lowest < self.lowest:
            self.lowest = lowest
        if self.highest is None or highest > self.highest:
            self.highest = highest

    def accept_run(self, chunk: bytes, count: int, lowest: int, highest: int) -> None:
        """Lines the C scan accepted, `chunk` their normalized output, timestamps in ns."""
        self.parts.append(chunk)
        self.accepted += count
        self._span(lowest, highest)

    def plain(self, chunk: bytes, line_no: int) -> None:
        """A run of plain lines: accept it whole when the bulk checks pass, else line by line."""
        policy = self.policy
        if b"\r" in chunk:  # only ever just before a newline or at the very end
            chunk = chunk.replace(b"\r\n", b"\n").removesuffix(b"\r")
            self.changed = True
        if not chunk.endswith(b"\n"):
            self.changed = True  # the last line gets its newline
        flagged = fastpath.flagged_lines(chunk, self.max_line_bytes)
        if not flagged and not policy.rewrites:
            tokens = fastpath.timestamps(chunk)
            count = fastpath.line_count(chunk)
            if len(tokens) == count:
                values = list(map(int, tokens))
                lowest, highest = min(values), max(values)
                if policy.bounds_ok(lowest, highest):
                    self.parts.append(chunk)
                    if not chunk.endswith(b"\n"):
                        self.parts.append(b"\n")
                    self.accepted += count
                    self._span(lowest * policy.unit, highest * policy.unit)
                    return
        for index, line in enumerate(fastpath.split_chunk(chunk)):
            if index in flagged:
                self.line(line, line_no + index)
            else:
                self.plain_line(line, line_no + index)

    def plain_line(self, line: bytes, line_no: int) -> None:
        """One plain line (no CR, no newline) that passes the bulk checks: only its timestamp."""
        policy = self.policy
        space, token = fastpath.timestamp_of(line)
        ns = self._timestamp(token, line_no)
        if ns is None:
            return
        if token is None:
            self.parts.append(line + b" " + policy.stamp_token + b"\n")
            self.changed = True
        elif policy.rewrites and policy.token(ns) != token:
            self.parts.append(line[: space + 1] + policy.token(ns) + b"\n")
            self.changed = True
        else:
            self.parts.append(line + b"\n")
        self.accepted += 1
        self._span(ns, ns)

    def _timestamp(self, token: bytes | None, line_no: int) -> int | None:
        """The final ns of a line's timestamp (or of the stamp), None when the line is rejected."""
        policy = self.policy
        if token is None:
            return policy.stamp_ns
        value = int(token)
        if value < INT64_MIN or value > INT64_MAX:
            self.reject(line_no, f"timestamp out of range {show(token)}")
            return None
        ns, reason = policy.check(value)
        if reason is not None:
            self.reject(line_no, reason, implausible=True)
            return None
        return ns

    def line(self, raw: bytes, line_no: int) -> None:
        """One logical line through the exact parser and write rules."""
        content = raw
        if not raw or raw[0] in _LEADING:
            start, skipped = trim_leading(raw)
            content = raw[start:]
            line_no += skipped
        if content and content[-1] in _TRAILING:
            content = content.rstrip(b" \t\r")
        if not content:
            self.changed = True
            return
        size = len(raw) - raw.endswith(b"\r")  # the size without its terminator (\n or \r\n)
        if size > self.max_line_bytes:
            self.reject(line_no, f"line too long: {size} bytes, limit is {self.max_line_bytes}")
            return
        try:
            parsed = parse_line(content)
            check_rules(parsed)
        except LineSyntaxError as error:
            self.reject(line_no, error.reason)
            return
        policy = self.policy
        if parsed.timestamp is None:
            ns = policy.stamp_ns
            token = policy.stamp_token
        else:
            ns, reason = policy.check(parsed.timestamp)
            if reason is not None:
                self.reject(line_no, reason, implausible=True)
                return
            token = policy.token(ns) if policy.rewrites else parsed.timestamp_token or b""
        out = _series_and_fields(content, parsed) + b" " + token
        if out != raw:
            self.changed = True
        self.parts.append(out + b"\n")
        self.accepted += 1
        self._span(ns, ns)


def _series_and_fields(content: bytes, parsed: ParsedLine) -> bytes:
    """The line up to its last field value, with raw commas in field keys escaped."""
    fields = parsed.fields
    commas = content.count(b",", parsed.fields_start, parsed.fields_end)
    if commas == len(fields) - 1 or not any(b"," in key for key, _ in fields):
        return content[: parsed.fields_end]
    rebuilt = b",".join(_KEY_COMMA.sub(_escape_comma, key) + b"=" + value for key, value in fields)
    return content[: parsed.fields_start] + rebuilt


def _escape_comma(found: re.Match[bytes]) -> bytes:
    text = found.group()
    return b"\\," if text == b"," else text
