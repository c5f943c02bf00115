"""The small endpoints: /ping, /health, /ready, /metrics, /query (v1) and /api/v2/query."""

from __future__ import annotations

import re

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.auth.credentials import extract_token
from gateway.forward.upstream import QUERY_APIS, UpstreamClient, UpstreamUnavailable
from gateway.http.responses import json_response, v1_error, v2_error
from gateway.http.state import LOG, STATE, GatewayState
from gateway.metricsmerge import merge_expositions
from gateway.workers import sibling_metrics

_CREATE_DATABASE = re.compile(
    r'^\s*CREATE\s+DATABASE\s+(?:"((?:[^"\\]|\\.)*)"|([A-Za-z0-9_\-/]+))\s*'
    r"(?:WITH\b.*)?;?\s*$",
    re.IGNORECASE | re.DOTALL,
)


async def ping(request: web.Request) -> web.Response:
    """GET|HEAD /ping: 204; ?verbose=true: 200 with the version."""
    state = request.app[STATE]
    if request.query.get("verbose", "").lower() == "true":
        return json_response(200, {"version": state.version})
    return web.Response(status=204)


async def health(request: web.Request) -> web.Response:
    """GET /health: overall status plus one check per destination."""
    state = request.app[STATE]
    checks = state.destinations.checks()
    refusing = state.shutting_down or not state.ready or state.destinations.full
    if state.shutting_down:
        message = "shutting down: not accepting writes"
    elif not state.ready:
        message = "starting: not ready for writes yet"
    elif state.destinations.full:
        message = "buffer full: refusing writes until upstreams catch up"
    else:
        message = "ready for writes"
    body = {
        "name": "influx-gateway",
        "message": message,
        "status": "fail" if refusing else "pass",
        "version": state.version,
        "checks": checks,
    }
    return json_response(503 if refusing else 200, body)


async def ready(request: web.Request) -> web.Response:
    """GET /ready: 200 once storage is recovered and the policy loaded."""
    state = request.app[STATE]
    if state.ready and not state.shutting_down:
        return json_response(200, {"status": "ready", "version": state.version})
    return json_response(503, {"status": "not ready", "version": state.version})


async def metrics(request: web.Request) -> web.Response:
    """GET /metrics: Prometheus text exposition."""
    state = request.app[STATE]
    body = generate_latest(state.metrics.registry)
    if state.workers is not None and state.workers.count > 1:  # the whole gateway's numbers
        others = await sibling_metrics(state.workers, state.config.worker)
        body = merge_expositions([body.decode(), *others])
    response = web.Response(body=body)
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


def _query_upstream(state: GatewayState, database: str) -> UpstreamClient | None:
    """The first upstream in config order that serves `database` and answers /query."""
    by_name = {up.name: up for up in state.config.upstreams}
    for name in state.router.targets(database).upstreams:
        client = state.destinations.clients.get(name)
        if client is not None and by_name[name].api in QUERY_APIS:
            return client
    return None


async def v2_query(request: web.Request) -> web.Response:
    """/api/v2/query: not supported, as on InfluxDB Cloud Dedicated."""
    return v2_error(
        501,
        "/api/v2/query is not supported; query with SQL or InfluxQL (Flight, or /query)",
    )


async def query(request: web.Request) -> web.Response:
    """GET|POST /query: CREATE DATABASE answered locally; other InfluxQL needs an upstream."""
    state = request.app[STATE]
    params = dict(request.query)
    if request.method == "POST" and request.content_type == "application/x-www-form-urlencoded":
        form = await request.post()
        for key, value in form.items():
            if isinstance(value, str):
                params.setdefault(key, value)
    log = request[LOG]
    token = extract_token(request.headers.get("Authorization"), params)
    identity = state.policy.authenticate(token, state.wall_clock())
    if isinstance(identity, str):
        state.metrics.auth_failures.labels(identity).inc()
        return v1_error(401, "unauthorized access")
    log.token = identity.name
    statement = params.get("q", "")
    if not statement.strip():
        return v1_error(400, 'missing required parameter "q"')

    created = _CREATE_DATABASE.match(statement)
    if created:
        name = created.group(1) if created.group(1) is not None else created.group(2)
        name = re.sub(r"\\(.)", r"\1", name)
        log.database = name
        if not identity.may_write(name):
            state.metrics.auth_failures.labels("forbidden").inc()
            return v1_error(403, f'token "{identity.name}" may not write to database "{name}"')
        return json_response(200, {"results": [{"statement_id": 0}]})

    database = params.get("db", "")
    log.database = database or None
    if database and not identity.may_read(database):
        state.metrics.auth_failures.labels("forbidden").inc()
        return v1_error(403, f'token "{identity.name}" may not read database "{database}"')
    if not database:
        return v1_error(400, 'missing required parameter "db"')
    client = _query_upstream(state, database)
    if client is not None:
        try:
            status, headers, body = await client.query(request.method, params, None, None)
        except UpstreamUnavailable as e:
            return v1_error(502, str(e))
        response = web.Response(status=status, body=body)
        response.headers.update(headers)
        return response
    target = f'database "{database}"'
    return v1_error(
        501,
        f"no upstream serves {target}: /query is proxied to an upstream InfluxDB with api "
        '"v1", "v2" or "v3"; with the local store, read data with `influx-gateway store export '
        "--database DB`",
    )
