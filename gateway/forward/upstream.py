"""The HTTP client of one upstream: how a batch is written to it, and how /query is proxied.

Thin I/O over an injected `aiohttp.ClientSession`. It owns the request shape of each api
(SPEC 5.6, 8):

    v2  POST {url}/api/v2/write?bucket=DB&precision=P[&org=ORG]   Authorization: Token T
    v1  POST {url}/write?db=DB[&rp=RP]&precision=P                 Basic(username, T) or Token T
    v3  POST {url}/api/v3/write_lp?db=DB&precision=P               Authorization: Bearer T

and the translation of every foreign failure (aiohttp errors, OSError, timeouts) into a value:
`write()` never raises for I/O, it returns `UpstreamResponse(status=None, error=...)`;
`query()` raises our own `UpstreamUnavailable`. A token never appears in a message: error
strings and the (at most 64 KiB of) response body have it redacted.

Precision spellings: v1 gets ns/u/ms/s -- the intersection InfluxDB 1.x ("", n, ns, u, ms, s, m,
h) and VictoriaMetrics (ns, u, us, ms, s, m, h; no "n") both accept; v3's write_lp takes the
serde names of influxdb3's `Precision` enum: nanosecond/microsecond/millisecond/second (or auto).
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

import aiohttp
import aiohttp.payload
from aiohttp.abc import AbstractStreamWriter

from gateway import __version__
from gateway.compression import CODEC, GZIP_LEVEL
from gateway.config import UpstreamConfig
from gateway.errors import ConfigError, GatewayError
from gateway.forward.decide import UpstreamResponse

MAX_ERROR_BODY: Final = 64 * 1024
MAX_QUERY_BODY: Final = 64 * 1024 * 1024  # a query answer is held in memory: keep RSS bounded
GZIP_IN_THREAD_BYTES: Final = 256 * 1024
USER_AGENT: Final = f"influx-gateway/{__version__}"
CONTENT_TYPE: Final = "text/plain; charset=utf-8"
REDACTED: Final = "<redacted>"

WRITE_PATHS: Final = {"v1": "/write", "v2": "/api/v2/write", "v3": "/api/v3/write_lp"}
PRECISIONS: Final = {
    "v1": {"ns": "ns", "us": "u", "ms": "ms", "s": "s"},
    "v2": {"ns": "ns", "us": "us", "ms": "ms", "s": "s"},
    "v3": {"ns": "nanosecond", "us": "microsecond", "ms": "millisecond", "s": "second"},
}
# Which apis serve the v1 InfluxQL /query endpoint: InfluxDB 1.x (v1), InfluxDB 2.x and Cloud
# Dedicated/Clustered (v2, via DBRP mappings), and InfluxDB 3 Core/Enterprise (v3: GET|POST
# /query, one statement per request, parameters read from the URL query string).
QUERY_APIS: Final = frozenset({"v1", "v2", "v3"})
# Client parameters passed on to /query; not u/p: the gateway authenticated the client itself
# and uses its own upstream credentials.
QUERY_PARAMS: Final = (
    "q",
    "db",
    "rp",
    "epoch",
    "precision",
    "chunked",
    "chunk_size",
    "pretty",
    "params",
)
QUERY_RESPONSE_HEADERS: Final = ("Content-Type", "X-Influxdb-Error", "Retry-After")


class UpstreamUnavailable(GatewayError):
    """The upstream could not be reached (connection error or timeout) or answered unusably."""


def load_token(config: UpstreamConfig) -> str | None:
    """The upstream's token: `token` (already ${ENV}-expanded) or the content of `token_file`."""
    if config.token:
        return config.token
    if not config.token_file:
        return None
    key = f"upstreams.{config.name}.token_file"
    try:
        token = Path(config.token_file).read_text(encoding="utf-8").strip()
    except OSError as e:
        raise ConfigError(f"cannot read token file: {e.strerror or e}", key=key) from None
    except UnicodeDecodeError:
        raise ConfigError("token file is not UTF-8 text", key=key) from None
    if not token:
        raise ConfigError("token file is empty", key=key)
    return token


def ssl_context(config: UpstreamConfig) -> ssl.SSLContext | bool:
    """TLS for the upstream: False without verification, a context for `ca_file`, else True."""
    if not config.tls_verify:
        return False
    if config.ca_file:
        try:
            return ssl.create_default_context(cafile=config.ca_file)
        except OSError as e:  # ssl.SSLError is an OSError too
            raise ConfigError(
                f"cannot load CA file: {e.strerror or e}", key=f"upstreams.{config.name}.ca_file"
            ) from None
    return True


def authorization(config: UpstreamConfig, token: str | None) -> str | None:
    """The Authorization header value for this upstream's api, or None without credentials."""
    if config.api == "v1" and config.username:
        pair = f"{config.username}:{token or ''}".encode()
        return "Basic " + base64.b64encode(pair).decode("ascii")
    if not token:
        return None
    return f"Bearer {token}" if config.api == "v3" else f"Token {token}"


def write_params(config: UpstreamConfig, database: str, precision: str) -> dict[str, str]:
    """The query string of a write: database and precision named as this upstream's api wants."""
    try:
        spelled = PRECISIONS[config.api][precision]
    except KeyError:
        raise ValueError(
            f"cannot forward precision {precision!r}: expected ns, us, ms or s"
        ) from None
    if config.api == "v2":
        params = {"bucket": database, "precision": spelled}
        if config.org:
            params["org"] = config.org
        return params
    if config.api == "v1" and database.count("/") == 1:
        db, rp = database.split("/")
        return {"db": db, "rp": rp, "precision": spelled}
    return {"db": database, "precision": spelled}


Body = bytes | Sequence[bytes]  # a request body, or the parts it is made of (never joined)


def body_size(body: Body) -> int:
    """Bytes in a body."""
    return len(body) if isinstance(body, bytes) else sum(map(len, body))


async def compress(body: Body) -> bytes:
    """Gzip a body; large ones in a thread so the event loop keeps serving."""
    if body_size(body) > GZIP_IN_THREAD_BYTES:
        return await asyncio.to_thread(CODEC.compress, body, GZIP_LEVEL)
    return CODEC.compress(body, GZIP_LEVEL)


class PartsPayload(aiohttp.payload.Payload):
    """A request body made of several bytes objects, written one after the other: a batch of
    megabyte records goes out without being copied into one buffer on the event loop."""

    _value: Sequence[bytes]
    _autoclose = True  # in memory: nothing to close, and it can be sent again

    def __init__(self, parts: Sequence[bytes]) -> None:
        super().__init__(parts, content_type=CONTENT_TYPE)
        self._size = body_size(parts)

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return b"".join(self._value).decode(encoding, errors)

    async def write(self, writer: AbstractStreamWriter) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(
        self, writer: AbstractStreamWriter, content_length: int | None
    ) -> None:
        remaining = body_size(self._value) if content_length is None else content_length
        for part in self._value:
            if remaining <= 0:
                return
            if len(part) > remaining:
                part = part[:remaining]
            remaining -= len(part)
            await writer.write(part)


class UpstreamClient:
    """Writes batches to one upstream and proxies /query to it."""

    def __init__(
        self, config: UpstreamConfig, session: aiohttp.ClientSession, *, token: str | None
    ) -> None:
        self._config = config
        self._session = session
        self._token = token
        self._ssl = ssl_context(config)
        self._timeout = aiohttp.ClientTimeout(total=config.timeout)
        self._base = config.url.rstrip("/")
        self._auth = authorization(config, token)

    @property
    def name(self) -> str:
        """The upstream's name from the config."""
        return self._config.name

    def _headers(self, content_type: str | None) -> dict[str, str]:
        headers = {"User-Agent": USER_AGENT}
        if content_type:
            headers["Content-Type"] = content_type
        if self._auth:
            headers["Authorization"] = self._auth
        return headers

    async def prepare(self, body: Body) -> bytes | None:
        """The body as it goes on the wire, when that takes work (gzip); None when it does not.

        Lets a caller compress batches ahead, while others are in flight (pass it to `write`).
        """
        return await compress(body) if self._config.gzip else None

    async def write(
        self, database: str, precision: str, body: Body, *, prepared: bytes | None = None
    ) -> UpstreamResponse:
        """Send one batch; every failure comes back as a value, never as an exception.

        `prepared` is the body as a gzip upstream is sent it, when the caller has it: what
        `prepare(body)` returned, or a stream the client sent that inflates to `body` (one
        gzip member). Ignored by an upstream without gzip.

        `precision` is ns, us, ms or s (m and h were converted at acceptance); anything else is a
        caller bug and raises ValueError before any I/O.
        """
        params = write_params(self._config, database, precision)
        headers = self._headers(CONTENT_TYPE)
        data: bytes | PartsPayload
        if self._config.gzip:
            data = prepared if prepared is not None else await compress(body)
            headers["Content-Encoding"] = "gzip"
        elif isinstance(body, bytes):
            data = body
        else:
            data = body[0] if len(body) == 1 else PartsPayload(body)
        url = self._base + WRITE_PATHS[self._config.api]
        try:
            async with self._session.post(
                url, params=params, data=data, headers=headers, timeout=self._timeout, ssl=self._ssl
            ) as response:
                raw = await _read_at_most(response.content, MAX_ERROR_BODY)
                return UpstreamResponse(
                    status=response.status,
                    body=self._redact_bytes(raw),
                    retry_after=response.headers.get("Retry-After"),
                )
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as e:
            return UpstreamResponse(status=None, error=self._redact(self._describe(e)))

    async def query(
        self,
        method: str,
        params: Mapping[str, str],
        body: bytes | None,
        content_type: str | None,
    ) -> tuple[int, dict[str, str], bytes]:
        """Proxy a v1 /query: (status, selected headers incl. Content-Type, body).

        Forwarded parameters go on the URL (InfluxDB 3 reads them only there); a POST body is
        passed through unchanged with its Content-Type. Raises UpstreamUnavailable when the
        upstream cannot be reached, times out, or answers with more than 64 MiB.
        """
        if method not in ("GET", "POST"):
            raise ValueError(f"/query is GET or POST, not {method}")
        forwarded = {k: params[k] for k in QUERY_PARAMS if k in params}
        headers = self._headers(content_type if body is not None else None)
        try:
            async with self._session.request(
                method,
                self._base + "/query",
                params=forwarded,
                data=body,
                headers=headers,
                timeout=self._timeout,
                ssl=self._ssl,
            ) as response:
                data = await _read_at_most(response.content, MAX_QUERY_BODY + 1)
                if len(data) > MAX_QUERY_BODY:
                    raise UpstreamUnavailable(
                        f"upstream {self.name}: query answer larger than "
                        f"{MAX_QUERY_BODY // 2**20} MiB; narrow the query or add LIMIT"
                    )
                selected = {
                    h: response.headers[h] for h in QUERY_RESPONSE_HEADERS if h in response.headers
                }
                return response.status, selected, self._redact_bytes(data)
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as e:
            message = self._redact(self._describe(e))
            raise UpstreamUnavailable(f"upstream {self.name}: {message}") from None

    def _describe(self, error: BaseException) -> str:
        """A short, stable description: decide() keys "timeout" vs "connection" on its start."""
        detail = str(error) or type(error).__name__
        match error:
            case TimeoutError():  # includes aiohttp.ServerTimeoutError
                return f"timeout after {self._config.timeout:g}s"
            case aiohttp.ClientConnectorCertificateError() | aiohttp.ClientSSLError():
                return f"tls error: {detail}"
            case aiohttp.ClientConnectorError() if isinstance(
                error.os_error, ConnectionRefusedError
            ):
                return f"connection refused: {detail}"
            case aiohttp.ClientConnectorError():
                return f"connection failed: {detail}"
            case aiohttp.ServerDisconnectedError():
                return "connection reset: the upstream closed the connection without answering"
            case aiohttp.ClientPayloadError():
                return f"connection reset: incomplete response: {detail}"
            case ConnectionResetError() | aiohttp.ClientOSError():
                return f"connection reset: {detail}"
            case ValueError():
                return f"invalid request (check upstreams.{self.name}.url): {detail}"
            case _:
                return f"connection error: {detail}"

    def _redact(self, text: str) -> str:
        return text.replace(self._token, REDACTED) if self._token else text

    def _redact_bytes(self, data: bytes) -> bytes:
        if not self._token:
            return data
        return data.replace(self._token.encode(), REDACTED.encode())


async def _read_at_most(content: aiohttp.StreamReader, limit: int) -> bytes:
    """Up to `limit` bytes of a response body; the rest is left unread (the connection closes)."""
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = await content.read(limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)
