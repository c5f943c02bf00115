"""Values written as text in the config file and on the command line: durations, sizes, times.

Pure functions: "30s" / "500ms" / "30d" to seconds and back, "10GiB" / "50MB" to bytes, RFC3339
to nanoseconds since the epoch and back, and the command line's times, which may also be
relative to now ("-1h"). Each raises ValueError with a message that says what was expected.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

_DURATION_RE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(ns|us|µs|ms|s|m|h|d|w)?\s*$")
_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 604800.0,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}


def parse_duration(value: object) -> float:
    """Seconds from "500ms" / "30s" / "1h" / "30d" or a number of seconds."""
    if isinstance(value, bool):
        raise ValueError(f'expected a duration like "30s", got {value!r}')
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        m = _DURATION_RE.match(value)
        if m and (m.group(2) or m.group(1) == "0"):
            return float(m.group(1)) * _DURATION_UNITS[m.group(2) or "s"]
    raise ValueError(f'expected a duration like "30s", "5m", "1h", "30d", got {value!r}')


def parse_size(value: object) -> int:
    """Bytes from "10GiB" / "50MB" / "64KiB" or a plain number."""
    if isinstance(value, bool):
        raise ValueError(f'expected a size like "64MiB", got {value!r}')
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"a size cannot be negative, got {value}")
        return value
    if isinstance(value, str):
        m = _SIZE_RE.match(value)
        if m:
            return int(float(m.group(1)) * _SIZE_UNITS[(m.group(2) or "b").lower()])
    raise ValueError(f'expected a size like "64MiB", "10GiB", "50MB" or bytes, got {value!r}')


# The seconds' fraction of an RFC3339 time: datetime keeps microseconds, timestamps are in ns.
_FRACTION_RE = re.compile(r"^(.*\d:\d\d)[.,](\d+)(.*)$")


def parse_time(value: object) -> int:
    """Nanoseconds since the epoch from an RFC3339 string (to the nanosecond; digits beyond the
    ninth are cut) or a TOML datetime (naive = UTC)."""
    nanos = 0
    if isinstance(value, str):
        text = value.strip()
        fraction = _FRACTION_RE.match(text)
        if fraction:
            text = fraction.group(1) + fraction.group(3)
            nanos = int(fraction.group(2)[:9].ljust(9, "0"))
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise ValueError(
                f"expected an RFC3339 time like 2024-01-01T00:00:00Z, got {value!r}"
            ) from None
        return _epoch_ns(moment) + nanos
    if isinstance(value, datetime):
        return _epoch_ns(value)
    raise ValueError(f"expected an RFC3339 time, got {value!r}")


def _epoch_ns(moment: datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86400 + delta.seconds) * 10**9 + delta.microseconds * 1000


def format_duration(seconds: float) -> str:
    """The shortest exact spelling of a duration: 2592000 -> "30d", 0.5 -> "500ms"."""
    for unit in ("w", "d", "h", "m", "s", "ms", "us", "ns"):
        count = seconds / _DURATION_UNITS[unit]
        if count >= 1 and abs(count - round(count)) < 1e-9:
            return f"{round(count)}{unit}"
    return f"{seconds:.9f}".rstrip("0").rstrip(".") + "s"


_RELATIVE_RE = re.compile(r"^[-+]?\d+(\.\d+)?(ns|us|ms|s|m|h|d|w)$")


def parse_when(value: str, now_ns: int) -> int:
    """Nanoseconds since the epoch from RFC3339 (naive = UTC) or a signed duration relative to
    `now_ns` ("-1h", "+30d"; a bare "2h" counts forward)."""
    text = value.strip()
    if _RELATIVE_RE.match(text):
        sign = -1 if text.startswith("-") else 1
        return now_ns + sign * int(parse_duration(text.lstrip("+-")) * 1e9)
    try:
        return parse_time(text)
    except ValueError:
        raise ValueError(
            f'invalid time "{value}": use RFC3339 (2024-01-01T00:00:00Z) or a duration like -1h'
        ) from None


def format_time(ns: int) -> str:
    """RFC3339 in UTC with a Z, to the nanosecond and without trailing zeros."""
    seconds, frac = divmod(ns, 10**9)
    text = datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{frac:09d}".rstrip("0").rstrip(".") + "Z"
