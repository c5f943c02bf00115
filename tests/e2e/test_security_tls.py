"""TLS: the listener with `server.tls_cert`/`tls_key` (a self-signed certificate made here with
the openssl command) and upstream verification options (`tls_verify`, `ca_file`) against an
HTTPS upstream."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from gateway.config import UpstreamConfig
from gateway.forward.upstream import UpstreamClient
from tests.e2e.conftest import RunningGateway, cli, free_port, running, start_gateway

pytestmark = pytest.mark.slow

T = time.time_ns() // 10**9 * 10**9
LINE = f"tls,host=a v=1 {T}\n".encode()


@dataclass(frozen=True)
class Certificate:
    """A self-signed certificate for 127.0.0.1 and localhost, and its key."""

    cert: Path
    key: Path

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts only this certificate."""
        return ssl.create_default_context(cafile=str(self.cert))

    def server_context(self) -> ssl.SSLContext:
        """A server context presenting this certificate."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        return context


@pytest.fixture(name="certificate")
def fixture_certificate(tmp_path: Path) -> Certificate:
    """Generate a P-256 self-signed certificate with the openssl command-line tool."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail(
            "the openssl command is needed to make a test certificate (apt-get install openssl)"
        )
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1",
            "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )  # fmt: skip
    return Certificate(cert, key)


def config_file(tmp_path: Path, text: str) -> str:
    """Write a gateway config; its path."""
    path = tmp_path / "gw.toml"
    path.write_text(text)
    return str(path)


@pytest.fixture(name="tls_gateway")
def fixture_tls_gateway(tmp_path: Path, certificate: Certificate) -> Iterator[RunningGateway]:
    """A gateway serving HTTPS with the test certificate."""
    text = f'[server]\ntls_cert = "{certificate.cert}"\ntls_key = "{certificate.key}"\n'
    with running(
        tmp_path, "-c", config_file(tmp_path, text), tls=certificate.client_context()
    ) as gateway:
        yield gateway


async def post(
    url: str, token: str, body: bytes, context: ssl.SSLContext | bool
) -> tuple[int, bytes]:
    """POST a v2 write; (status, body)."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{url}/api/v2/write?bucket=mydb",
            data=body,
            headers={"Authorization": f"Token {token}"},
            ssl=context,
        ) as response,
    ):
        return response.status, await response.read()


async def test_write_over_https(tls_gateway: RunningGateway, certificate: Certificate) -> None:
    """With tls_cert/tls_key the listener speaks HTTPS: a write verified against the cert is
    stored."""
    status, _ = await post(tls_gateway.url, tls_gateway.token, LINE, certificate.client_context())
    exported = cli(
        "store", "export", "--database", "mydb", "--data-dir", str(tls_gateway.data_dir)
    ).stdout
    assert (204, LINE) == (status, exported)


async def test_plain_http_to_the_tls_port_is_refused(
    tls_gateway: RunningGateway, certificate: Certificate
) -> None:
    """A plain-HTTP client on the TLS port gets no answer, and HTTPS still works afterwards."""
    plain = tls_gateway.url.replace("https://", "http://")
    with pytest.raises(aiohttp.ClientError):
        await post(plain, tls_gateway.token, LINE, False)
    status, _ = await post(tls_gateway.url, tls_gateway.token, LINE, certificate.client_context())
    assert 204 == status


async def test_untrusted_client_cannot_complete_the_handshake(tls_gateway: RunningGateway) -> None:
    """A client that verifies against the system CAs refuses the self-signed listener."""
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        await post(tls_gateway.url, tls_gateway.token, LINE, True)


# -- upstream verification ------------------------------------------------------------------------


class HttpsSink:
    """An HTTPS upstream that accepts every write and keeps the bodies."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.bodies: list[bytes] = []
        self.url = ""
        self._context = context
        self._runner: web.AppRunner | None = None

    async def _write(self, request: web.Request) -> web.Response:
        self.bodies.append(await request.read())
        return web.Response(status=204)

    async def __aenter__(self) -> HttpsSink:
        app = web.Application()
        app.router.add_post("/api/v2/write", self._write)
        self._runner = web.AppRunner(app, auto_decompress=True)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port, ssl_context=self._context).start()
        self.url = f"https://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


@pytest.fixture(name="sink")
async def fixture_sink(certificate: Certificate) -> AsyncIterator[HttpsSink]:
    """The HTTPS upstream, presenting the self-signed certificate."""
    async with HttpsSink(certificate.server_context()) as sink:
        yield sink


async def upstream_write(sink: HttpsSink, **options: object) -> int | None:
    """One write through UpstreamClient with the given TLS options; the upstream's status."""
    config = UpstreamConfig(name="up", url=sink.url, api="v2", gzip=False, **options)  # type: ignore[arg-type]
    async with aiohttp.ClientSession() as session:
        answer = await UpstreamClient(config, session, token="t").write("mydb", "ns", LINE)
    return answer.status


async def test_upstream_certificate_is_verified_by_default(sink: HttpsSink) -> None:
    """By default a self-signed upstream is refused (a tls error, nothing delivered)."""
    assert (None, []) == (await upstream_write(sink), sink.bodies)


async def test_upstream_ca_file_trusts_its_certificate(
    sink: HttpsSink, certificate: Certificate
) -> None:
    """ca_file pointing at the upstream's certificate: delivered."""
    assert (204, [LINE]) == (await upstream_write(sink, ca_file=str(certificate.cert)), sink.bodies)


async def test_upstream_tls_verify_false_skips_the_check(sink: HttpsSink) -> None:
    """tls_verify = false: delivered to a self-signed upstream."""
    assert (204, [LINE]) == (await upstream_write(sink, tls_verify=False), sink.bodies)


async def test_gateway_forwards_over_https_with_ca_file(
    tmp_path: Path, sink: HttpsSink, certificate: Certificate
) -> None:
    """The real process forwards an accepted write to the HTTPS upstream trusted via ca_file."""
    text = (
        f'[[upstreams]]\nname = "up"\nurl = "{sink.url}"\napi = "v2"\n'
        f'ca_file = "{certificate.cert}"\nflush_interval = "100ms"\n'
    )
    gateway = await asyncio.to_thread(start_gateway, tmp_path, "-c", config_file(tmp_path, text))
    try:
        status, _ = await post(gateway.url, gateway.token, LINE, False)
        async with asyncio.timeout(10):
            while not sink.bodies:
                await asyncio.sleep(0.05)
    finally:
        gateway.process.kill()
        await asyncio.to_thread(gateway.process.wait, 10)
    assert (204, [LINE]) == (status, sink.bodies)
