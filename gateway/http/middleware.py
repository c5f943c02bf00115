"""The edge middleware: request id, response headers, head size and concurrency limits, JSON
404/405/500, metrics and the one canonical log line per request.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from gateway.http.connection import READ_DEADLINES
from gateway.http.responses import v1_error, v2_error
from gateway.http.state import LOG, STATE, RequestLog

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_ENDPOINTS = {
    "/api/v2/write": "v2_write",
    "/write": "v1_write",
    "/query": "query",
    "/api/v2/query": "v2_query",
    "/ping": "ping",
    "/health": "health",
    "/ready": "ready",
    "/metrics": "metrics",
}
_V1_PATHS = frozenset({"/write", "/query"})
_WRITE_ENDPOINTS = frozenset({"v2_write", "v1_write"})
_HEAD_OVERHEAD = len(b" HTTP/1.1\r\n\r\n")
_HEADER_OVERHEAD = len(b": \r\n")

access_log = structlog.get_logger("gateway.access")
log = structlog.get_logger("gateway")


def head_bytes(request: web.BaseRequest) -> int:
    """The size of the request head as sent: request line and header lines."""
    size = len(request.method) + len(request.raw_path) + _HEAD_OVERHEAD
    return size + sum(len(k) + len(v) + _HEADER_OVERHEAD for k, v in request.raw_headers)


def _error(
    path: str, status: int, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    if path in _V1_PATHS:
        return v1_error(status, message, headers=headers)
    return v2_error(status, message, headers=headers)


@web.middleware
async def edge(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Wrap every request: ids and headers, limits, errors as JSON, metrics, access log."""
    state = request.app[STATE]
    started = time.perf_counter()
    path = request.path
    endpoint = _ENDPOINTS.get(path, "other")
    request_id = (
        request.headers.get("X-Request-Id") or request.headers.get("Request-Id") or uuid.uuid4().hex
    )
    log = RequestLog(
        request_id=request_id,
        trace_span=request.headers.get("Zap-Trace-Span"),
        endpoint=endpoint,
    )
    request[LOG] = log
    # Every line logged while handling this request (in this task) carries its ids.
    structlog.contextvars.bind_contextvars(request_id=request_id, trace_span=log.trace_span)
    deadlines = request.app.get(READ_DEADLINES)
    if deadlines is not None:
        deadlines.head(request)
    limits = state.config.server
    response: web.StreamResponse
    if head_bytes(request) > limits.max_header_bytes:
        # aiohttp bounds each line and the number of headers; this bounds the head as a whole.
        response = _error(
            path, 431, f"request head is larger than the limit of {limits.max_header_bytes} bytes"
        )
    elif endpoint in _WRITE_ENDPOINTS and state.shutting_down:
        response = _error(path, 503, "shutting down: not accepting writes", {"Retry-After": "5"})
    elif state.in_flight >= state.config.server.max_concurrent_requests:
        response = _error(
            path,
            503,
            f"too many concurrent requests (limit {state.config.server.max_concurrent_requests})",
            {"Retry-After": "1"},
        )
    else:
        state.in_flight += 1
        try:
            response = await handler(request)
        except web.HTTPNotFound:
            response = _error(path, 404, f"path {path} not found")
        except web.HTTPMethodNotAllowed as e:
            allowed = ", ".join(sorted(e.allowed_methods))
            response = _error(
                path,
                405,
                f"method {request.method} not allowed on {path} (allowed: {allowed})",
                {"Allow": allowed},
            )
        except web.HTTPException as e:
            response = _error(path, e.status, e.reason)
        except Exception:
            access_log.exception("unhandled error", request_id=request_id, path=path)
            response = _error(path, 500, "internal error")
        finally:
            state.in_flight -= 1
    if deadlines is not None:
        deadlines.finished(request)

    response.headers["X-Influxdb-Version"] = state.version
    response.headers["X-Influxdb-Build"] = "influx-gateway"
    response.headers["X-Request-Id"] = request_id
    duration = time.perf_counter() - started
    state.metrics.http_requests.labels(endpoint, str(response.status)).inc()
    state.metrics.http_duration.labels(endpoint).observe(duration)
    access_log.info(
        "request",
        request_id=request_id,
        trace_span=log.trace_span,
        method=request.method,
        path=path,
        status=response.status,
        duration_ms=round(duration * 1000, 3),
        token=log.token,
        database=log.database,
        lines_accepted=log.lines_accepted,
        lines_rejected=log.lines_rejected,
        bytes=log.bytes,
        encoding=log.encoding,
        user_agent=request.headers.get("User-Agent"),
        remote=request.remote,
    )
    return response
