"""Timestamp precision: units, scaling to nanoseconds, the plausibility guard and its messages.

Owns the `Precision` literal and its unit table, `TimeRules` (guard bounds and `round_to`), and
`TimestampPolicy`, the per-request object the validator asks "is this timestamp acceptable, and
what do I write instead of it?". Everything here is integer arithmetic: a timestamp is never a
float, so `m`/`h` conversions and truncations are exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

Precision = Literal["ns", "us", "ms", "s", "m", "h"]
PRECISIONS: tuple[Precision, ...] = ("ns", "us", "ms", "s", "m", "h")
NS_PER_UNIT: dict[Precision, int] = {
    "ns": 1,
    "us": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}

# (unit, out_unit, lo, hi, round_to, rewrites, stamp_ns, stamp_token, line_limit): the argument
# of the C scan (`_speedups.scan_plain`), all in ns where a time.
ScanPolicy = tuple[int, int, int, int, int, int, int, bytes, int]

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
UINT64_MAX = 2**64 - 1

# The precisions a "did you mean" hint may suggest: the ones every upstream understands.
_HINT_PRECISIONS: tuple[Precision, ...] = ("ns", "us", "ms", "s")
_EPOCH = datetime(1970, 1, 1)
_DURATION_UNITS = (
    (86_400 * 10**9, "d"),
    (3_600 * 10**9, "h"),
    (60 * 10**9, "m"),
    (10**9, "s"),
    (10**6, "ms"),
    (10**3, "us"),
)


@dataclass(frozen=True, slots=True)
class TimeRules:
    """The timestamp rules of one database: plausibility guard bounds and optional truncation."""

    guard: bool = True
    max_future_ns: int = 3_600 * 10**9
    min_time_ns: int = 31_536_000 * 10**9
    round_to_ns: int = 0


def output_precision(precision: Precision) -> Precision:
    """The precision timestamps are forwarded in: `m` and `h` become `s`, the others stay."""
    return "s" if precision in ("m", "h") else precision


def format_rfc3339(ns: int) -> str:
    """RFC3339 UTC with `Z`; fractional seconds without trailing zeros, none when whole."""
    seconds, fraction = divmod(ns, 10**9)
    try:
        moment = _EPOCH + timedelta(seconds=seconds)
    except OverflowError:
        return f"{ns}ns since the epoch"
    text = (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}"
        f"T{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}"
    )
    if fraction:
        text += "." + f"{fraction:09d}".rstrip("0")
    return text + "Z"


def format_duration(ns: int) -> str:
    """A duration in its largest whole unit: `1h`, `90m`, `1500ms`, `7ns`."""
    for unit_ns, suffix in _DURATION_UNITS:
        if ns % unit_ns == 0:
            return f"{ns // unit_ns}{suffix}"
    return f"{ns}ns"


def int64_token(token: bytes) -> int | None:
    """The value of `-?digits` (any number of leading zeros, as Rust's parse), None if not int64."""
    negative = token.startswith(b"-")
    digits = (token[1:] if negative else token).lstrip(b"0")
    if len(digits) > 19:  # also keeps int() away from huge digit strings
        return None
    value = -int(digits or b"0") if negative else int(digits or b"0")
    return value if INT64_MIN <= value <= INT64_MAX else None


def uint64_token(token: bytes) -> int | None:
    """The value of `digits` (leading zeros allowed), or None when it does not fit in uint64."""
    digits = token.lstrip(b"0")
    if len(digits) > 20:
        return None
    value = int(digits or b"0")
    return value if value <= UINT64_MAX else None


class TimestampPolicy:
    """The timestamp decisions of one request: check, scale, round, stamp."""

    __slots__ = (
        "_hi",
        "_lo",
        "_round_to",
        "guard",
        "max_future_ns",
        "min_time_ns",
        "now_ns",
        "out_unit",
        "precision",
        "rewrites",
        "stamp_ns",
        "stamp_token",
        "unit",
    )

    def __init__(self, precision: Precision, now_ns: int, rules: TimeRules) -> None:
        self.precision = precision
        self.unit = NS_PER_UNIT[precision]
        self.out_unit = NS_PER_UNIT[output_precision(precision)]
        self.now_ns = now_ns
        self.guard = rules.guard
        self.max_future_ns = rules.max_future_ns
        self.min_time_ns = rules.min_time_ns
        # Truncating to a multiple of round_to is a no-op when every output value already is one.
        rounding = rules.round_to_ns > 0 and self.out_unit % rules.round_to_ns != 0
        self._round_to = rules.round_to_ns if rounding else 0
        self.rewrites = rounding or self.unit != self.out_unit
        self._lo = rules.min_time_ns if rules.guard else INT64_MIN
        self._hi = now_ns + rules.max_future_ns if rules.guard else INT64_MAX
        self._lo = max(self._lo, INT64_MIN)
        self._hi = min(self._hi, INT64_MAX)
        stamp = now_ns // self.unit * self.unit
        if self._round_to:
            stamp -= stamp % self._round_to
        self.stamp_ns = stamp
        self.stamp_token = str(stamp // self.out_unit).encode()

    def scan_arguments(self, line_limit: int) -> ScanPolicy | None:
        """The policy as the C scan takes it; None when a value does not fit its int64s."""
        lo, hi = (self._lo, self._hi) if self._lo <= self._hi else (1, 0)  # (1, 0): none passes
        arguments = (
            self.unit,
            self.out_unit,
            lo,
            hi,
            self._round_to,
            int(self.rewrites),
            self.stamp_ns,
            self.stamp_token,
            max(min(line_limit, INT64_MAX), INT64_MIN),
        )
        if all(INT64_MIN <= value <= INT64_MAX for value in arguments if isinstance(value, int)):
            return arguments
        return None

    def bounds_ok(self, lowest: int, highest: int) -> bool:
        """True when every timestamp in [lowest, highest] (request units) passes unchanged."""
        if lowest < INT64_MIN or highest > INT64_MAX:
            return False
        return self._lo <= lowest * self.unit and highest * self.unit <= self._hi

    def check(self, value: int) -> tuple[int, str | None]:
        """(final ns, None) for an acceptable timestamp, else (0, reason)."""
        ns = value * self.unit
        if ns < INT64_MIN or ns > INT64_MAX:
            return 0, self._overflow_reason(value)
        if ns < self._lo or ns > self._hi:
            return 0, self._guard_reason(value, ns)
        if self._round_to:
            ns -= ns % self._round_to
            if ns < INT64_MIN:
                return 0, self._overflow_reason(value)
        return ns, None

    def token(self, ns: int) -> bytes:
        """The output token of a checked timestamp (its final ns) in the output precision."""
        return str(ns // self.out_unit).encode()

    def _overflow_reason(self, value: int) -> str:
        reason = (
            f"timestamp {value} with precision={self.precision} is out of range "
            "(it does not fit in int64 nanoseconds)"
        )
        hint = self._hint(value)
        return f"{reason}; did you mean precision={hint}?" if hint else reason

    def _guard_reason(self, value: int, ns: int) -> str:
        head = f"timestamp {value} with precision={self.precision} is {format_rfc3339(ns)}"
        hint = self._hint(value)
        if hint:
            return f"{head}; did you mean precision={hint}?"
        if ns > self._hi:
            return f"{head}; more than {format_duration(self.max_future_ns)} in the future"
        return f"{head}; before the minimum time {format_rfc3339(self.min_time_ns)}"

    def _hint(self, value: int) -> str | None:
        """Another precision that makes `value` plausible (the one closest to now), if any."""
        lo = max(self.min_time_ns, INT64_MIN)
        hi = min(self.now_ns + self.max_future_ns, INT64_MAX)
        best: tuple[int, str] | None = None
        for candidate in _HINT_PRECISIONS:
            if candidate == self.precision:
                continue
            ns = value * NS_PER_UNIT[candidate]
            if lo <= ns <= hi:
                distance = abs(ns - self.now_ns)
                if best is None or distance < best[0]:
                    best = (distance, candidate)
        return None if best is None else best[1]
