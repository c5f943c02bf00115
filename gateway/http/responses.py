"""JSON bodies for every non-2xx answer: the v2 shape {"code","message"} and the v1 {"error"}."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

JSON_CONTENT_TYPE = "application/json; charset=utf-8"

# The v2 API's `code` for each status (InfluxDB's own vocabulary).
V2_CODES = {
    400: "invalid",
    401: "unauthorized",
    403: "forbidden",
    404: "not found",
    405: "method not allowed",
    408: "request timeout",
    413: "request too large",
    429: "too many requests",
    431: "request header fields too large",
    500: "internal error",
    501: "not implemented",
    503: "unavailable",
}


def json_response(status: int, data: Any, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON response with the charset the API documents."""
    response = web.Response(status=status, body=orjson.dumps(data), headers=headers)
    response.headers["Content-Type"] = JSON_CONTENT_TYPE
    return response


def v2_error(
    status: int, message: str, *, headers: dict[str, str] | None = None, **extra: Any
) -> web.Response:
    """A v2 error: {"code": ..., [extra...], "message": ...}."""
    body: dict[str, Any] = {"code": V2_CODES.get(status, "invalid")}
    body.update(extra)
    body["message"] = message
    return json_response(status, body, headers)


def v1_error(status: int, message: str, *, headers: dict[str, str] | None = None) -> web.Response:
    """A v1 error: {"error": ...} plus X-Influxdb-Error with the message's first line."""
    response = json_response(status, {"error": message}, headers)
    first_line = message.split("\n", 1)[0]
    response.headers["X-Influxdb-Error"] = first_line.encode("ascii", "replace").decode()
    return response
