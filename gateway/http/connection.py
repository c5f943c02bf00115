"""The connection layer under aiohttp: read deadlines and answers to unparseable requests.

Also the read deadline (SPEC 10, ``server.read_timeout``): aiohttp has no timeout for receiving
a request, so ``ReadDeadlines`` wraps each connection's protocol and cuts off a client that has
not sent its whole request within the timeout (slowloris). The clock of a request starts when
the connection opens, or at the first byte after the previous response. A request whose head has
not arrived by the deadline is closed; a body still arriving at the deadline is answered 408 by
the write handler (``read_body``) and the connection is closed ``BODY_GRACE_S`` later, instead of
aiohttp's lingering read of the rest (a handler that does not read its body within the deadline
is closed the same way). Idle keep-alive connections are aiohttp's ``keepalive_timeout``.

Requests aiohttp cannot parse (malformed HTTP, a header above the limit) never reach the
middleware; ``EdgeRequestHandler`` answers them as JSON that, unlike aiohttp's own answer, never
echoes the bytes the client sent (an oversized ``Authorization`` header would otherwise come back
in the body and go to aiohttp's error log with its token).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import structlog
from aiohttp import StreamReader, http_exceptions, web

from gateway.http.responses import v2_error

BODY_GRACE_S = 1.0  # the write handler answers 408 at the deadline; the guard closes after this
log = structlog.get_logger("gateway")


@dataclass(eq=False)
class _Connection:
    """One connection's request clock (loop time)."""

    transport: asyncio.Transport
    handler: web.RequestHandler
    started: float | None  # when the current request began to arrive; None while idle
    head_done: bool = False
    received: bool = False  # the whole current request has arrived
    next_started: float | None = None  # the next request's first byte, seen while handling
    graced: bool = False  # the head arrived and the deadline passed: the handler's turn first
    closing: bool = False  # answered 408: closed once the answer is out
    timer: asyncio.TimerHandle | None = None


class ReadDeadlines:
    """Per-connection deadlines for receiving a whole request (``server.read_timeout``)."""

    def __init__(self, timeout_s: float, *, grace_s: float = BODY_GRACE_S) -> None:
        self.timeout_s = timeout_s
        self._grace_s = grace_s
        self._connections: dict[web.RequestHandler, _Connection] = {}

    def protocol_factory(
        self, factory: Callable[[], web.RequestHandler]
    ) -> Callable[[], asyncio.Protocol]:
        """Wrap aiohttp's protocol factory (``runner.server``) so every connection is guarded."""

        def guarded() -> asyncio.Protocol:
            handler = factory()
            handler.__class__ = EdgeRequestHandler  # aiohttp offers no hook for the class
            return _GuardedProtocol(handler, self)

        return guarded

    def deadline(self, request: web.BaseRequest) -> float | None:
        """The loop time by which this request must have arrived in full; None when unknown."""
        conn = self._connections.get(request.protocol)
        if conn is None or conn.started is None:
            return None
        return conn.started + self.timeout_s

    def head(self, request: web.BaseRequest) -> None:
        """The request's head has arrived (the handler starts); its body may still be coming."""
        conn = self._connections.get(request.protocol)
        if conn is None:
            return
        if conn.started is None:  # its bytes came with the previous request's
            conn.started = asyncio.get_running_loop().time()
            self._arm(conn, conn.started + self.timeout_s)
        conn.head_done = True
        if request.content.is_eof():
            self.received(request)

    def received(self, request: web.BaseRequest) -> None:
        """The whole request has arrived: stop its clock."""
        conn = self._connections.get(request.protocol)
        if conn is not None:
            conn.received = True
            self._disarm(conn)

    def timed_out(self, request: web.BaseRequest) -> None:
        """The handler gave up waiting for the body (and answers 408): close after answering."""
        conn = self._connections.get(request.protocol)
        if conn is not None:
            conn.closing = True

    def finished(self, request: web.BaseRequest) -> None:
        """The handler has answered: the next request's clock starts at its first byte."""
        conn = self._connections.get(request.protocol)
        if conn is None:
            return
        if conn.closing:
            # Not aiohttp's lingering read of the rest of the body: the client had its time.
            self._arm(conn, asyncio.get_running_loop().time() + self._grace_s)
            return
        conn.started, conn.next_started = conn.next_started, None
        conn.head_done = conn.received = conn.graced = False
        self._disarm(conn)
        if conn.started is not None:
            self._arm(conn, conn.started + self.timeout_s)

    def _opened(self, handler: web.RequestHandler, transport: asyncio.Transport) -> None:
        now = asyncio.get_running_loop().time()
        conn = self._connections[handler] = _Connection(transport, handler, started=now)
        self._arm(conn, now + self.timeout_s)

    def _data(self, handler: web.RequestHandler) -> None:
        conn = self._connections.get(handler)
        if conn is None or conn.closing:
            return
        if conn.started is None:
            conn.started = asyncio.get_running_loop().time()
            self._arm(conn, conn.started + self.timeout_s)
        elif conn.received and conn.next_started is None:
            conn.next_started = asyncio.get_running_loop().time()

    def _closed(self, handler: web.RequestHandler) -> None:
        conn = self._connections.pop(handler, None)
        if conn is not None:
            self._disarm(conn)

    def _arm(self, conn: _Connection, when: float) -> None:
        self._disarm(conn)
        conn.timer = asyncio.get_running_loop().call_at(when, self._expired, conn)

    def _disarm(self, conn: _Connection) -> None:
        if conn.timer is not None:
            conn.timer.cancel()
            conn.timer = None

    def _expired(self, conn: _Connection) -> None:
        conn.timer = None
        if not conn.closing and (conn.received or conn.started is None):
            return
        if conn.head_done and not conn.graced and not conn.closing:
            # The handler is reading the body and answers 408 itself at the deadline.
            conn.graced = True
            self._arm(conn, asyncio.get_running_loop().time() + self._grace_s)
            return
        peer = conn.transport.get_extra_info("peername")
        log.info(
            "read timeout: closed a connection that did not send its request in time",
            remote=peer[0] if isinstance(peer, tuple) else None,
            phase="body" if conn.head_done else "head",
            read_timeout_s=self.timeout_s,
        )
        conn.handler.force_close()


# What to say about a request aiohttp could not parse; never any of the request's own bytes.
_MALFORMED: tuple[tuple[type[Exception], str], ...] = (
    (http_exceptions.LineTooLong, "the request line or a header field is too long"),
    (http_exceptions.BadHttpMethod, "malformed HTTP request: invalid method"),
    (http_exceptions.BadStatusLine, "malformed HTTP request line"),
    (http_exceptions.InvalidHeader, "malformed HTTP header"),
    (http_exceptions.InvalidURLError, "malformed request URL"),
    (http_exceptions.PayloadEncodingError, "malformed request body framing"),
)


class EdgeRequestHandler(web.RequestHandler):
    """aiohttp's connection handler, answering unparseable requests without echoing them."""

    __slots__ = ()  # the same layout as RequestHandler: an instance's class can be set to this

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """A JSON error naming what is wrong in general terms; logged without request bytes."""
        if request.writer.output_size > 0:
            raise ConnectionError("response already started; cannot send the error")
        if status >= 500:
            text = "internal error"
        else:
            text = next(
                (said for kind, said in _MALFORMED if isinstance(exc, kind)),
                "malformed HTTP request",
            )
            if isinstance(exc, http_exceptions.LineTooLong):
                text += f" (limit {self.max_field_size} bytes)"
        error = type(exc).__name__ if exc is not None else None
        if status >= 500:  # a bug outside the middleware: keep the traceback to fix it
            log.error("unhandled error outside the request handlers", error=error, exc_info=exc)
        else:
            log.info("malformed request refused", remote=request.remote, status=status, error=error)
        response = v2_error(status, text)
        response.force_close()
        return response


LINGER_S = 1.0  # how long a closed connection keeps draining what the client still sends


class _LingeringTransport:
    """The transport as aiohttp's handler sees it: `close()` is a lingering close.

    Closing a socket with unread input makes the kernel answer with a reset, which can destroy
    the response just sent (a 400 for a 1 MB header the client is still sending). Like nginx's
    lingering close, `close()` sends the response and a FIN, then keeps reading and discarding
    input for up to LINGER_S (or until the client's EOF) before really closing.
    """

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self.lingering = False

    def __getattr__(self, name: str) -> object:
        return getattr(self._transport, name)

    def is_closing(self) -> bool:
        """True once closed (or lingering)."""
        return self.lingering or self._transport.is_closing()

    def close(self) -> None:
        """Send what is buffered and a FIN; drain input for a moment; then close."""
        if self.lingering or self._transport.is_closing():
            return
        self.lingering = True
        try:
            if self._transport.can_write_eof():
                self._transport.write_eof()
            self._transport.resume_reading()
        except (OSError, RuntimeError, NotImplementedError):
            self._transport.close()
            return
        asyncio.get_running_loop().call_later(LINGER_S, self._transport.close)

    def finish(self) -> None:
        """Close now (the client sent its EOF while lingering)."""
        self._transport.close()


class _GuardedProtocol(asyncio.Protocol):
    """Forwards every protocol event to aiohttp's handler, telling ReadDeadlines about each."""

    def __init__(self, inner: web.RequestHandler, deadlines: ReadDeadlines) -> None:
        self._inner = inner
        self._deadlines = deadlines
        self._transport: _LingeringTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports quack like asyncio.Transport without subclassing it.
        real = cast(asyncio.Transport, transport)
        self._transport = _LingeringTransport(real)
        self._deadlines._opened(self._inner, real)
        self._inner.connection_made(cast(asyncio.Transport, self._transport))

    def data_received(self, data: bytes) -> None:
        if self._transport is not None and self._transport.lingering:
            return  # answered and closing: drain, do not parse
        self._deadlines._data(self._inner)
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        if self._transport is not None and self._transport.lingering:
            self._transport.finish()
            return None
        self._inner.eof_received()
        return None  # aiohttp's handler keeps no half-open connection: close on EOF

    def connection_lost(self, exc: Exception | None) -> None:
        self._deadlines._closed(self._inner)
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


READ_DEADLINES = web.AppKey("gateway_read_deadlines", ReadDeadlines)


async def read_body(request: web.Request, timeout_s: float, max_bytes: int) -> bytes:
    """The request body, read by the request's read deadline; TimeoutError when it is late,
    HTTPRequestEntityTooLarge when it is above `max_bytes`.

    Without a connection guard (the aiohttp test server) the deadline is ``timeout_s`` from now.
    """
    deadlines = request.app.get(READ_DEADLINES)
    deadline = None if deadlines is None else deadlines.deadline(request)
    if deadline is None:
        deadline = asyncio.get_running_loop().time() + timeout_s
    try:
        async with asyncio.timeout_at(deadline):
            body = await _read_whole(request.content, max_bytes)
    except TimeoutError:
        if deadlines is not None:
            deadlines.timed_out(request)
        raise
    if deadlines is not None:
        deadlines.received(request)
    return body


async def _read_whole(content: StreamReader, max_bytes: int) -> bytes:
    """The whole body as one bytes object, copied once: the chunks as the parser made them,
    joined at the end (``request.read()`` copies a megabyte body three times on the loop)."""
    content.set_read_chunk_size(max_bytes)  # no pause/resume of the socket below the limit
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk, end_of_http_chunk = await content.readchunk()
        if not chunk:
            if end_of_http_chunk:  # a chunked-encoding boundary, not the end
                continue
            break
        size += len(chunk)
        if size > max_bytes:
            raise web.HTTPRequestEntityTooLarge(max_size=max_bytes, actual_size=size)
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
