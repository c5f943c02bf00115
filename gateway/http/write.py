"""The write endpoints, POST /api/v2/write and POST /write (v1): the gateway's core job.

Order of checks (SPEC 2.1): authenticate (401) -> parameters (400) -> authorize the database
(403) -> route (404) -> body size/encoding (413/400) -> line protocol (400) -> rate limit (429)
-> durable append (503) -> 204. Both APIs share one pipeline; they differ in parameter names and
error shape.

The per-token rate limit counts lines, which are known only once the body is validated, so the
token's bucket is charged there with the lines that would be stored (rejected lines cost
nothing), just before the durable append; a write that then fails to append is refunded. A token
whose bucket has no room for even one line is refused before its body is read, so a throttled
client cannot make the gateway decompress and parse bodies it will refuse anyway.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Literal

from aiohttp import web

from gateway.auth.credentials import extract_token
from gateway.auth.policy import TokenEntry
from gateway.auth.ratelimit import RateDecision, RateLimiter
from gateway.buffer.record import Record, framed
from gateway.buffer.segmentlog import Position
from gateway.compression import CODEC, GZIP_LEVEL
from gateway.errors import LineProtocolBodyError, StorageError, StorageFullError
from gateway.forward.forwarder import AS_SENT_MIN_BYTES
from gateway.http.body import BadBody, BodyTooLarge, check_encoding, gunzip_member
from gateway.http.connection import read_body
from gateway.http.responses import v1_error, v2_error
from gateway.http.state import LOG, STATE, GatewayState
from gateway.lineprotocol import PRECISIONS, Precision, ValidationResult, validate
from gateway.routing import InvalidDatabase, source_name_v1, source_name_v2

Api = Literal["v2", "v1"]

# Bodies above this are decoded and validated in a worker thread, keeping the loop responsive.
OFFLOAD_BYTES = 256 * 1024
MAX_LISTED_ERRORS = 100
RETRY_AFTER_FULL = "5"

# The buckets of rate-limited tokens, one per app (create_app puts it there).
RATE_LIMITER = web.AppKey("gateway_rate_limiter", RateLimiter)

_V1_PRECISIONS: dict[str, Precision] = {
    "n": "ns", "ns": "ns", "u": "us", "us": "us", "µ": "us",
    "ms": "ms", "s": "s", "m": "m", "h": "h",
}  # fmt: skip


@dataclass
class WriteRejected(Exception):
    """A write answered with an error status; `reason` labels the rejection metric."""

    status: int
    message: str
    reason: str
    line: int | None = None
    headers: dict[str, str] = field(default_factory=dict)


def _precision_v2(value: str | None) -> Precision:
    if value is None or value == "":
        return "ns"
    if value in PRECISIONS:
        return value
    raise WriteRejected(
        400,
        "failed to deserialize org/bucket/precision in request: unknown variant "
        f"`{value}`, expected one of `ns`, `us`, `ms`, `s`, `m`, `h`",
        "params",
    )


def _precision_v1(value: str | None) -> Precision:
    if value is None or value == "":
        return "ns"
    precision = _V1_PRECISIONS.get(value)
    if precision is None:
        raise WriteRejected(
            400,
            f'invalid precision "{value}": expected one of n, ns, u, us, ms, s, m, h',
            "params",
        )
    return precision


def _rate_limited(identity: TokenEntry, decision: RateDecision, lines: int | None) -> WriteRejected:
    """429 naming the token's limit, with Retry-After in whole seconds (at least 1)."""
    limit = identity.rate_limit
    what = "has used up its burst" if lines is None else f"cannot take {lines} more lines now"
    return WriteRejected(
        429,
        f'rate limit exceeded: token "{identity.name}" may write {limit} lines per second '
        f"(bursts of up to {limit} lines) and {what}; retry after {decision.retry_after_s} s",
        "rate_limit",
        headers={"Retry-After": str(decision.retry_after_s)},
    )


def line_errors_message(result: ValidationResult, *, stored: bool) -> str:
    """The InfluxDB 3 style message listing the first 100 line errors."""
    prefix = (
        "partial write of line protocol occurred:" if stored else "failed to parse line protocol:"
    )
    listed = "".join(f"\n  {error}" for error in result.errors[:MAX_LISTED_ERRORS])
    return f"{prefix}\n  errors encountered on line(s):{listed}"


def _decode_and_validate(
    raw: bytes,
    encoding: str,
    precision: Precision,
    state: GatewayState,
    database: str,
    token: str,
    now: int,
    compress: bool = False,
    submit: Callable[[Record], bool] | None = None,
) -> tuple[bytes, ValidationResult, Record | None, bool]:
    """Decode and validate a body; also the record its accepted lines make, already framed
    for the log (its checksum computed here, off the event loop and off the log's writer), and
    whether it was handed to `submit`.

    `compress`: a gzip upstream will be sent these lines. Large accepted lines not already
    held as the client's gzip stream are then compressed here, once, in the worker thread,
    for the log (3x fewer bytes to write) and for every gzip upstream (sent as they are)."""
    server = state.config.server
    one_member = False
    if encoding == "gzip":
        body, one_member = gunzip_member(raw, server.max_body_bytes)
    else:
        body = raw
    result = validate(
        body,
        precision,
        now_ns=now,
        rules=state.time_policy.rules_for(database),
        max_line_bytes=server.max_line_bytes,
        max_errors=MAX_LISTED_ERRORS,
    )
    if not result.accepted:
        return body, result, None, False
    # Every line accepted as it came (nothing dropped or rewritten) from one gzip member: the log
    # stores the client's stream itself, 3-4x smaller than the line protocol it inflates to, and
    # gzip upstreams are sent it as it is (see record.Record.stored_gzip).
    unchanged = result.body is body and not result.rejected
    stored = raw if one_member and unchanged else None
    if stored is None and compress and len(result.body) >= AS_SENT_MIN_BYTES:
        stored = CODEC.compress(result.body, GZIP_LEVEL)
    record = Record(
        database=database,
        precision=result.precision,
        received_ns=now,
        token=token,
        lines=result.accepted,
        min_time_ns=result.min_time_ns or 0,
        max_time_ns=result.max_time_ns or 0,
        payload=result.body,
        stored_gzip=stored,
    )
    record = framed(record)
    # Every line accepted, within the limit: the record is stored whatever the event loop does
    # next, so its durable append can start here instead of after a round trip through the
    # loop (`submit` may still decline: then the loop appends it).
    whole = not result.rejected and result.accepted <= server.max_lines
    return body, result, record, submit is not None and whole and submit(record)


async def _process(request: web.Request, api: Api) -> web.Response:
    state = request.app[STATE]
    log = request[LOG]
    received_ns = state.clock()
    query = request.query

    # 1. authenticate
    token_value = extract_token(request.headers.get("Authorization"), query)
    identity = state.policy.authenticate(token_value, state.wall_clock())
    if isinstance(identity, str):
        state.metrics.auth_failures.labels(identity).inc()
        raise WriteRejected(401, "unauthorized access", "auth")
    log.token = identity.name

    # 2. parameters
    if api == "v2":
        bucket = query.get("bucket", "")
        if not bucket:
            raise WriteRejected(400, "missing bucket value", "params")
        if "org" in query and not query["org"]:
            raise WriteRejected(400, "invalid org value: must not be empty when present", "params")
        precision = _precision_v2(query.get("precision"))
        source = source_name_v2(bucket)
    else:
        db = query.get("db", "")
        if not db:
            raise WriteRejected(400, "database is required", "params")
        precision = _precision_v1(query.get("precision"))
        source = source_name_v1(db, query.get("rp"))
    try:
        database = state.router.database(source)
    except InvalidDatabase as e:
        raise WriteRejected(400, str(e), "params") from None
    log.database = database

    # 3. authorize, then route
    if not identity.may_write(database):
        state.metrics.auth_failures.labels("forbidden").inc()
        raise WriteRejected(
            403, f'token "{identity.name}" may not write to database "{database}"', "auth"
        )
    targets = state.router.targets(database)
    if targets.empty:
        raise WriteRejected(404, f'no route for database "{database}"', "route")

    # 4. body
    try:
        encoding = check_encoding(request.headers.get("Content-Encoding"))
    except BadBody as e:
        raise WriteRejected(400, str(e), "encoding") from None
    log.encoding = encoding
    server = state.config.server
    ack_upstream = server.ack == "upstream" and bool(targets.upstreams)  # it answers first
    if (request.content_length or 0) > server.max_body_bytes:
        raise _too_large(server.max_body_bytes)
    limiter = request.app[RATE_LIMITER]
    if identity.rate_limit is not None:
        empty = limiter.check(identity.name, identity.rate_limit, 1, received_ns)
        if not empty.admitted:
            raise _rate_limited(identity, empty, None)
    try:
        raw = await read_body(request, server.read_timeout, server.max_body_bytes)
    except web.HTTPRequestEntityTooLarge:
        raise _too_large(server.max_body_bytes) from None
    except TimeoutError:
        raise WriteRejected(408, "request body not received in time", "timeout") from None

    # 5. decode + validate (in a worker thread when large, which also starts the durable append
    #    of a body accepted whole when nothing after this step can refuse it: no rate limit to
    #    charge, no upstream to answer first)
    durable: asyncio.Future[Position] | None = None
    try:
        args = (raw, encoding, precision, state, database, identity.name, received_ns)
        if len(raw) > OFFLOAD_BYTES:
            compress = not state.config.gzip_upstreams.isdisjoint(targets.upstreams)
            loop = asyncio.get_running_loop()
            submit = None
            if identity.rate_limit is None and not ack_upstream:
                durable = loop.create_future()
                submit = partial(state.destinations.submit, future=durable, loop=loop)
            body, result, record, submitted = await loop.run_in_executor(
                state.validators, _decode_and_validate, *args, compress, submit
            )
            if not submitted:
                durable = None
        else:
            body, result, record, _ = _decode_and_validate(*args)
    except BodyTooLarge as e:
        raise WriteRejected(413, str(e), "size") from None
    except BadBody as e:
        raise WriteRejected(400, str(e), "encoding") from None
    except LineProtocolBodyError as e:
        raise WriteRejected(400, str(e), "parse") from None
    log.bytes = len(body)
    db_label = state.metrics.database_label(database)
    state.metrics.write_bytes.labels(db_label, identity.name).inc(len(body))
    log.lines_accepted = result.accepted
    log.lines_rejected = result.rejected
    if result.accepted + result.rejected > server.max_lines:
        raise WriteRejected(
            413,
            f"too many lines: {result.accepted + result.rejected}, "
            f"limit is {server.max_lines} per request",
            "size",
        )
    if result.accepted == 0 and result.rejected == 0:
        raise WriteRejected(400, "no data in request body", "parse")

    store_it = result.accepted > 0 and (result.rejected == 0 or server.partial_writes)
    if result.rejected:
        state.metrics.write_lines.labels(db_label, identity.name, "rejected").inc(result.rejected)
    if not store_it:
        log.lines_accepted = 0
        if result.accepted:
            state.metrics.write_lines.labels(db_label, identity.name, "rejected").inc(
                result.accepted
            )
        raise _line_errors(result, stored=False)

    # 6. rate limit: charge the lines about to be stored
    if identity.rate_limit is not None:
        decision = limiter.admit(identity.name, identity.rate_limit, result.accepted, received_ns)
        if not decision.admitted:
            log.lines_accepted = 0
            raise _rate_limited(identity, decision, result.accepted)

    # 7. durable append, then answer
    assert record is not None  # store_it: some lines were accepted
    if ack_upstream:
        upstream_answer = await _forward_now(state, record)
        if upstream_answer is not None:
            log.lines_accepted = 0
            return upstream_answer
        state.metrics.write_lines.labels(db_label, identity.name, "accepted").inc(result.accepted)
        if result.rejected:
            raise _line_errors(result, stored=True)
        return web.Response(status=204)
    try:
        if durable is not None:
            await state.destinations.submitted(durable)
        else:
            await state.destinations.append(record)
    except StorageError as e:
        log.lines_accepted = 0
        if identity.rate_limit is not None:
            limiter.refund(identity.name, result.accepted, received_ns)
        if isinstance(e, StorageFullError):
            raise WriteRejected(
                503, f"buffer full: {e}", "buffer_full", headers={"Retry-After": RETRY_AFTER_FULL}
            ) from None
        raise WriteRejected(
            503, f"cannot store the write: {e}", "storage", headers={"Retry-After": "1"}
        ) from None
    state.metrics.write_lines.labels(db_label, identity.name, "accepted").inc(result.accepted)
    if result.rejected:
        raise _line_errors(result, stored=True)
    return web.Response(status=204)


def _too_large(limit: int) -> WriteRejected:
    return WriteRejected(413, f"request body is larger than the limit of {limit} bytes", "size")


def _line_errors(result: ValidationResult, *, stored: bool) -> WriteRejected:
    first = result.errors[0].line if result.errors else None
    # "precision" when every bad line was a plausible-looking line with an implausible timestamp.
    reason = "precision" if result.implausible == result.rejected else "parse"
    return WriteRejected(400, line_errors_message(result, stored=stored), reason, line=first)


async def _forward_now(state: GatewayState, record: Record) -> web.Response | None:
    """ack = "upstream": send to every matching upstream now (and the store, when it matches);
    None when the first upstream in config order took it, else its answer for the client."""
    targets = state.router.targets(record.database)
    names = [n for n in targets.upstreams if n in state.destinations.clients]
    if not names:
        raise WriteRejected(
            503, "upstreams are not started yet", "storage", headers={"Retry-After": "1"}
        )
    responses = await asyncio.gather(
        *(
            state.destinations.clients[name].write(
                record.database, record.precision, record.payload, prepared=record.stored_gzip
            )
            for name in names
        )
    )
    for name, answer in zip(names, responses, strict=True):
        status = "error" if answer.status is None else str(answer.status)
        state.metrics.upstream_requests.labels(name, status).inc()
    if targets.store and state.destinations.store is not None:
        await state.destinations.store.append(record)
    first = responses[0]
    if first.status is None:
        raise WriteRejected(
            503,
            f"upstream {names[0]} unavailable: {first.error}",
            "upstream",
            headers={"Retry-After": "1"},
        )
    if 200 <= first.status < 300:
        for name in names:
            state.metrics.upstream_lines.labels(name, "sent").inc(record.lines)
        return None
    response = web.Response(status=first.status, body=first.body)
    response.headers["Content-Type"] = "application/json; charset=utf-8"
    if first.retry_after:
        response.headers["Retry-After"] = first.retry_after
    return response


async def v2_write(request: web.Request) -> web.Response:
    """POST /api/v2/write."""
    try:
        return await _process(request, "v2")
    except WriteRejected as e:
        request.app[STATE].metrics.write_rejections.labels(e.reason).inc()
        extra = {} if e.line is None else {"line": e.line}
        return v2_error(e.status, e.message, headers=e.headers, **extra)


async def v1_write(request: web.Request) -> web.Response:
    """POST /write (InfluxDB 1.x)."""
    try:
        return await _process(request, "v1")
    except WriteRejected as e:
        request.app[STATE].metrics.write_rejections.labels(e.reason).inc()
        return v1_error(e.status, e.message, headers=e.headers)
