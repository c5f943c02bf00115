"""The upstream status table (SPEC 6): what one upstream answer means for the batch that got it.

Pure: a response (status, body, Retry-After, or a connection error) goes in, an
`UpstreamDecision` comes out -- done, partial, dead-letter, split or retry after a delay -- with
the metric reason, the upstream's health and a one-line message. No I/O, no clock, no global
randomness: `now` and `rng` are passed in. The HTTP side lives in `upstream.py`.

  upstream says                        outcome                           health  reason
  2xx                                  done                              pass    ok
  400 / 422 with a partial-write body  partial (rejected lines)          pass    partial_write
  other 400, 406, 422                  deadletter                        pass    rejected
  401, 403                             retry, backoff                    fail    auth
  404 "database/bucket not found"      on_missing_database: retry / dl   warn    database_not_found
  other 404 (wrong URL)                retry, backoff                    fail    not_found
  413                                  split; a single line: deadletter  pass    too_large
  429                                  retry, max(Retry-After, backoff)  warn    rate_limited
  502, 503, 504                        retry, max(Retry-After, backoff)  warn    unavailable
  other 5xx                            retry, backoff                    warn    server_error
  no answer: timeout                   retry, backoff                    warn    timeout
  no answer: refused, reset, TLS       retry, backoff                    warn    connection
  anything else (1xx, 3xx, 405, 409)   retry, backoff                    fail    unexpected_status

Backoff is exponential with *full jitter* (AWS architecture blog, "Exponential Backoff And
Jitter"): uniform in [0, min(cap, base * 2**(attempt - 1))]. Full jitter spreads the retries of
many forwarders best; its occasional short wait is harmless because a failing upstream answers
again with the same row, whose ceiling keeps growing.
"""

from __future__ import annotations

import email.utils
import random
import re
from dataclasses import dataclass
from datetime import UTC
from typing import Literal

import orjson

Outcome = Literal["done", "partial", "deadletter", "retry", "split"]
Health = Literal["pass", "warn", "fail"]
MissingDatabase = Literal["retry", "deadletter"]

MAX_RETRY_AFTER = 600.0  # SPEC 6: Retry-After is honoured up to 10 minutes
MESSAGE_CHARS = 500
# Cloud Dedicated / Clustered (and this gateway) list only the first 100 line errors; a list that
# long may be cut, so the rejected lines are then "unknown" and the whole batch is kept.
LISTED_ERRORS_LIMIT = 100

REASONS = frozenset(
    {
        "ok",
        "partial_write",
        "rejected",
        "auth",
        "database_not_found",
        "not_found",
        "too_large",
        "rate_limited",
        "unavailable",
        "server_error",
        "timeout",
        "connection",
        "unexpected_status",
    }
)


@dataclass(frozen=True, slots=True)
class UpstreamResponse:
    """What one write request got back: a status and (the start of) its body, or no answer."""

    status: int | None  # None: connection error / timeout / reset
    body: bytes = b""
    retry_after: str | None = None  # the raw Retry-After header
    error: str | None = None  # for status None: "timeout after 30s", "connection refused: ..."


@dataclass(frozen=True, slots=True)
class UpstreamDecision:
    """What to do with the batch, and what the upstream's health check says now."""

    outcome: Outcome
    reason: str  # one of REASONS: metric label and dead-letter reason
    delay: float  # seconds to wait before the next attempt (0 unless retry)
    health: Health
    message: str  # one line: "HTTP 400: <first 500 chars of the body>" or the connection error
    # For "partial": 1-based line numbers within the batch that the upstream rejected. Empty when
    # the upstream did not say which (InfluxDB 1.x/2.x): dead-letter the whole batch then --
    # replaying it resends accepted lines too, which InfluxDB overwrites harmlessly.
    rejected_lines: tuple[int, ...] = ()


def decide(
    response: UpstreamResponse,
    *,
    attempt: int,
    batch_lines: int,
    on_missing_database: MissingDatabase,
    retry_max_delay: float,
    now: float,
    rng: random.Random,
) -> UpstreamDecision:
    """The status table: `attempt` counts the sends of this batch so far (1 after the first)."""

    def retry(reason: str, health: Health, message: str, *, floor: float = 0.0) -> UpstreamDecision:
        delay = max(floor, backoff(attempt, cap=retry_max_delay, rng=rng))
        return UpstreamDecision("retry", reason, delay, health, message)

    status = response.status
    if status is None:
        error = response.error or "no response"
        reason = "timeout" if error.startswith("timeout") else "connection"
        return retry(reason, "warn", error)

    message = describe(status, response.body)
    match status:
        case _ if 200 <= status < 300:
            return UpstreamDecision("done", "ok", 0.0, "pass", message)
        case 400 | 422 if (lines := parse_partial_write(status, response.body)) is not None:
            return UpstreamDecision("partial", "partial_write", 0.0, "pass", message, lines)
        case 400 | 406 | 422:
            return UpstreamDecision("deadletter", "rejected", 0.0, "pass", message)
        case 401 | 403:
            return retry("auth", "fail", message)
        case 404 if is_missing_database(response.body):
            if on_missing_database == "deadletter":
                return UpstreamDecision("deadletter", "database_not_found", 0.0, "warn", message)
            return retry("database_not_found", "warn", message)
        case 404:
            return retry("not_found", "fail", f"{message} (is the upstream url or api wrong?)")
        case 413 if batch_lines > 1:
            return UpstreamDecision("split", "too_large", 0.0, "pass", message)
        case 413:
            return UpstreamDecision("deadletter", "too_large", 0.0, "pass", message)
        case 429 | 502 | 503 | 504:
            reason = "rate_limited" if status == 429 else "unavailable"
            wait = parse_retry_after(response.retry_after, now) or 0.0
            return retry(reason, "warn", message, floor=wait)
        case _ if 500 <= status < 600:
            return retry("server_error", "warn", message)
        case _:
            return retry(
                "unexpected_status",
                "fail",
                f"unexpected {message}; keeping the data and retrying (check the upstream url/api)",
            )


def backoff(attempt: int, *, base: float = 0.5, cap: float, rng: random.Random) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(cap, base * 2**(attempt-1))]."""
    if cap <= 0 or base <= 0:
        return 0.0
    exponent = min(max(attempt, 1) - 1, 64)  # 2**64 * base is past any cap; avoids overflow
    return rng.uniform(0.0, min(cap, base * 2.0**exponent))


_DELTA_SECONDS = re.compile(r"\d+(?:\.\d+)?")


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date, `now` in epoch
    seconds), capped at 600 s and never negative; None when absent or unreadable."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if _DELTA_SECONDS.fullmatch(text):
        seconds = float(text)
    else:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:  # "-0000" or a zone-less date: HTTP dates are always GMT
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - now
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


_PARTIAL = "partial write"
# Cloud Dedicated / Clustered and this gateway: "error parsing line 2 (1-based): ..."
_LINE_ERROR = re.compile(r"error parsing line (\d+) \(1-based\)")


def parse_partial_write(status: int, body: bytes) -> tuple[int, ...] | None:
    """The rejected 1-based line numbers of a partial-write body (empty: the upstream did not
    say which lines); None when the body is not a partial write.

    Recognised (every server accepted the other lines of the batch):
    - InfluxDB 3 Core/Enterprise (all write endpoints), 400 (422 when a schema limit was hit):
      {"error":"partial write of line protocol occurred","data":[{"original_line":"...",
      "line_number":2,"error_message":"..."}]}
    - Cloud Dedicated / Clustered v2 API, 400: {"code":"invalid","line":2,"message":"partial write
      of line protocol occurred:\\n  errors encountered on line(s):\\n  error parsing line 2
      (1-based): ..."}
    - InfluxDB 1.x, 400: {"error":"partial write: field type conflict: ... dropped=1"}
    - InfluxDB 2.x, 422: {"code":"unprocessable entity","message":"failure writing points to
      database: partial write: ... dropped=1"}
    A body cut short (bodies are read up to 64 KiB) that says "partial write" gives ().
    """
    if status not in (400, 422):
        return None
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        text = body.decode("utf-8", "replace")
        return () if _PARTIAL in text.lower() else None
    if not isinstance(document, dict):
        return None
    texts = [t for t in (document.get("error"), document.get("message")) if isinstance(t, str)]
    if not any(_PARTIAL in t.lower() for t in texts):
        return None
    data = document.get("data")
    if isinstance(data, list):  # InfluxDB 3
        numbers: list[int] = []
        for item in data:
            number = item.get("line_number") if isinstance(item, dict) else None
            if type(number) is not int or number < 1:  # bool is not a line number either
                return ()
            numbers.append(number)
        return _unique(numbers)
    found = [int(n) for t in texts for n in _LINE_ERROR.findall(t)]
    if not found or len(found) >= LISTED_ERRORS_LIMIT:
        return ()
    return _unique(found)


def _unique(numbers: list[int]) -> tuple[int, ...]:
    return tuple(sorted(set(numbers)))


# InfluxDB 1.x {"error":"database not found: \"x\""}; 2.x {"code":"not found","message":"bucket
# \"x\" not found"}; 3.x "database not found x"; IOx-based clusters name it a namespace.
_MISSING_DATABASE = re.compile(
    r"\b(?:database|bucket|namespace)\b[^\n]{0,300}?\bnot found\b", re.IGNORECASE
)


def is_missing_database(body: bytes) -> bool:
    """Whether a 404 body says the database (bucket) does not exist, as opposed to a wrong URL."""
    return _MISSING_DATABASE.search(body[:65536].decode("utf-8", "replace")) is not None


def describe(status: int, body: bytes) -> str:
    """One log line for an answer: "HTTP 400: <the first 500 characters of the body>"."""
    text = body[: MESSAGE_CHARS * 4].decode("utf-8", "replace")[:MESSAGE_CHARS]
    text = " ".join(text.split())
    return f"HTTP {status}: {text}" if text else f"HTTP {status}"
