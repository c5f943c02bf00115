"""A scriptable fake upstream InfluxDB for failure-mode tests.

An aiohttp server on 127.0.0.1 (a free port) that records every request -- method, path, query,
headers, raw and decompressed body, receive time -- and answers from a script: a FIFO of `Step`s
(status, body, headers, a delay before answering, or a reset that drops the connection without
answering), falling back to `default` when the script is empty.

    async with FakeUpstream() as fake:
        fake.script(Step(503, headers={"Retry-After": "1"}), Step(204))
        ...  # point an UpstreamClient at fake.url
        await fake.wait_for_lines(10, timeout=5)
        assert [b"cpu v=1 1", ...] == fake.lines()
"""

from __future__ import annotations

import asyncio
import gzip
import time
import zlib
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy, MultiDict, MultiDictProxy


@dataclass(frozen=True)
class Step:
    """One scripted answer."""

    status: int = 204
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to wait before answering (or resetting)
    reset: bool = False  # drop the connection without answering


@dataclass(frozen=True)
class Received:
    """One request as the fake upstream saw it."""

    method: str
    path: str
    query: MultiDictProxy[str]
    headers: CIMultiDictProxy[str]
    raw_body: bytes  # as sent (gzip-compressed when Content-Encoding: gzip)
    body: bytes  # decompressed
    received_at: float  # the fake's clock when the request had arrived in full

    def lines(self) -> list[bytes]:
        """The non-blank lines of the (decompressed) body."""
        return [line for line in self.body.split(b"\n") if line.strip()]


class FakeUpstream:
    """The server; use as `async with FakeUpstream() as fake:`."""

    def __init__(
        self, *, default: Step | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.default = default or Step()
        self.requests: list[Received] = []
        self._script: deque[Step] = deque()
        self._clock = clock
        self._arrived = asyncio.Event()
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.url = ""

    def script(self, *steps: Step) -> None:
        """Queue answers, used one per request in order, before falling back to `default`."""
        self._script.extend(steps)

    def lines(self) -> list[bytes]:
        """Every line-protocol line received so far, in order."""
        return [line for request in self.requests for line in request.lines()]

    async def wait_for_lines(self, n: int, timeout: float) -> list[bytes]:
        """Wait until at least `n` lines have arrived; TimeoutError saying how many did."""
        try:
            async with asyncio.timeout(timeout):
                while len(self.lines()) < n:
                    self._arrived.clear()
                    await self._arrived.wait()
        except TimeoutError:
            raise TimeoutError(
                f"{len(self.lines())} of {n} lines arrived within {timeout}s"
            ) from None
        return self.lines()

    async def __aenter__(self) -> FakeUpstream:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # auto_decompress off: record the body exactly as the client sent it, then decompress.
        self._runner = web.AppRunner(app, auto_decompress=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closing.set()  # wake handlers still "being slow"
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        body = raw
        corrupt = False
        if request.headers.get("Content-Encoding", "").lower() == "gzip":
            try:
                body = gzip.decompress(raw)
            except (OSError, EOFError, zlib.error):  # as InfluxDB: 400, the body is not gzip
                body, corrupt = b"", True
        self.requests.append(
            Received(
                method=request.method,
                path=request.path,
                query=MultiDictProxy(MultiDict(request.query)),
                headers=CIMultiDictProxy(CIMultiDict(request.headers)),
                raw_body=raw,
                body=body,
                received_at=self._clock(),
            )
        )
        self._arrived.set()
        if corrupt:
            return web.json_response(
                {"code": "invalid", "message": "gzip: invalid body"}, status=400
            )
        step = self._script.popleft() if self._script else self.default
        if step.delay > 0:
            try:
                async with asyncio.timeout(step.delay):
                    await self._closing.wait()
            except TimeoutError:
                pass
        if step.reset:
            assert request.transport is not None
            request.transport.abort()
            # Nothing can be sent any more; aiohttp drops the response of a closed transport.
            return web.Response(status=499)
        return web.Response(status=step.status, body=step.body, headers=dict(step.headers))
