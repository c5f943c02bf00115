"""A reference peer: the gateway's own framework (aiohttp on uvloop) as a bare pass-through.

Every POST body goes to the upstream as it came (same path and query, same Content-Encoding),
and the upstream's status is the answer: what nginx does in the `nginx` case, but in Python,
with nothing else (no validation, no buffer, no fsync). It tells how much of the distance
between the gateway and nginx is the framework itself. Run it as a peer:

    python bench/run.py \\
      --peer 'aiohttp-proxy=.venv/bin/python bench/aiohttp_proxy.py {port} {sink_url}'
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator

import aiohttp
import uvloop
from aiohttp import web

PASSED_HEADERS = ("Content-Encoding", "Content-Type", "Authorization")


async def forward(request: web.Request) -> web.Response:
    """The body to the upstream, the upstream's status back."""
    session: aiohttp.ClientSession = request.app["session"]
    body = await request.read()
    headers = {name: request.headers[name] for name in PASSED_HEADERS if name in request.headers}
    async with session.post(
        request.app["upstream"] + request.path, params=request.query, data=body, headers=headers
    ) as response:
        answer = await response.read()
        return web.Response(status=response.status, body=answer or None)


async def ping(_: web.Request) -> web.Response:
    """Health: 204."""
    return web.Response(status=204)


async def session_context(app: web.Application) -> AsyncIterator[None]:
    """One keep-alive client session, no connection limit (as nginx's upstream keepalive)."""
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        app["session"] = session
        yield


def main() -> None:
    port, upstream = int(sys.argv[1]), sys.argv[2].rstrip("/")
    app = web.Application(
        client_max_size=64 * 1024 * 1024,
        handler_args={"auto_decompress": False},  # gzip bodies pass through as they came
    )
    app["upstream"] = upstream
    app.cleanup_ctx.append(session_context)
    app.router.add_post("/{tail:.*}", forward)
    app.router.add_route("*", "/ping", ping)
    web.run_app(
        app,
        host="127.0.0.1",
        port=port,
        print=None,
        access_log=None,
        loop=uvloop.new_event_loop(),
    )


if __name__ == "__main__":
    main()
