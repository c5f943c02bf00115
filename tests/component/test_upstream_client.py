"""UpstreamClient against the scriptable fake upstream: request shape per api, failures as values."""

from __future__ import annotations

import base64
import gzip
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import certifi
import pytest

from gateway import __version__
from gateway.config import Duration, UpstreamConfig
from gateway.errors import ConfigError
from gateway.forward.upstream import (
    MAX_ERROR_BODY,
    UpstreamClient,
    UpstreamUnavailable,
    load_token,
    ssl_context,
)
from tests.fakeupstream import FakeUpstream, Step

TOKEN = "igw_upstream-secret-token"
BODY = b"cpu,host=a v=1 1700000000\ncpu,host=b v=2 1700000000\n"

MakeClient = Callable[..., UpstreamClient]


@pytest.fixture(name="fake")
async def fixture_fake() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream() as fake:
        yield fake


@pytest.fixture(name="session")
async def fixture_session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture(name="make_client")
def fixture_make_client(fake: FakeUpstream, session: aiohttp.ClientSession) -> MakeClient:
    """A client for the fake upstream; keyword arguments are UpstreamConfig fields."""

    def make(*, token: str | None = TOKEN, **fields: Any) -> UpstreamClient:
        fields.setdefault("url", fake.url)
        return UpstreamClient(UpstreamConfig(name="up", **fields), session, token=token)

    return make


# -- request shape per api -----------------------------------------------------------------------


async def test_v2_write_path_and_params(fake: FakeUpstream, make_client: MakeClient) -> None:
    """v2: POST /api/v2/write with bucket = the database and the precision."""
    await make_client(api="v2").write("telegraf/weekly", "ms", BODY)
    request = fake.requests[0]
    assert ("POST", "/api/v2/write") == (request.method, request.path)
    assert {"bucket": "telegraf/weekly", "precision": "ms"} == dict(request.query)


async def test_v2_write_adds_org_when_configured(
    fake: FakeUpstream, make_client: MakeClient
) -> None:
    """v2 with org set sends it as the org parameter."""
    await make_client(api="v2", org="acme").write("db", "ns", BODY)
    assert "acme" == fake.requests[0].query["org"]


async def test_v2_write_authorization_is_token(fake: FakeUpstream, make_client: MakeClient) -> None:
    """v2 authenticates with `Authorization: Token T`."""
    await make_client(api="v2").write("db", "ns", BODY)
    assert f"Token {TOKEN}" == fake.requests[0].headers["Authorization"]


async def test_v1_write_splits_db_and_rp(fake: FakeUpstream, make_client: MakeClient) -> None:
    """v1: a database "db/rp" becomes db=db&rp=rp on POST /write."""
    await make_client(api="v1").write("telegraf/weekly", "s", BODY)
    request = fake.requests[0]
    assert "/write" == request.path
    assert {"db": "telegraf", "rp": "weekly", "precision": "s"} == dict(request.query)


async def test_v1_write_without_rp(fake: FakeUpstream, make_client: MakeClient) -> None:
    """v1: a database without '/' is sent as db only."""
    await make_client(api="v1").write("telegraf", "s", BODY)
    assert {"db": "telegraf", "precision": "s"} == dict(fake.requests[0].query)


async def test_v1_write_with_two_slashes_keeps_the_name(
    fake: FakeUpstream, make_client: MakeClient
) -> None:
    """v1: a name with more than one '/' is not split."""
    await make_client(api="v1").write("a/b/c", "s", BODY)
    assert {"db": "a/b/c", "precision": "s"} == dict(fake.requests[0].query)


@pytest.mark.parametrize(
    ("precision", "spelled"), [("ns", "ns"), ("us", "u"), ("ms", "ms"), ("s", "s")]
)
async def test_v1_precision_spelling(
    fake: FakeUpstream, make_client: MakeClient, precision: str, spelled: str
) -> None:
    """v1 precision is spelled as both InfluxDB 1.x and VictoriaMetrics accept it."""
    await make_client(api="v1").write("db", precision, BODY)
    assert spelled == fake.requests[0].query["precision"]


async def test_v1_write_with_username_uses_basic_auth(
    fake: FakeUpstream, make_client: MakeClient
) -> None:
    """v1 with a username authenticates with Basic(username, token)."""
    await make_client(api="v1", username="gw").write("db", "ns", BODY)
    expected = "Basic " + base64.b64encode(f"gw:{TOKEN}".encode()).decode()
    assert expected == fake.requests[0].headers["Authorization"]


async def test_v1_write_without_username_uses_token(
    fake: FakeUpstream, make_client: MakeClient
) -> None:
    """v1 with only a token authenticates with `Authorization: Token T`."""
    await make_client(api="v1").write("db", "ns", BODY)
    assert f"Token {TOKEN}" == fake.requests[0].headers["Authorization"]


async def test_v3_write_path_and_params(fake: FakeUpstream, make_client: MakeClient) -> None:
    """v3: POST /api/v3/write_lp with db = the database."""
    await make_client(api="v3").write("telegraf/weekly", "ns", BODY)
    request = fake.requests[0]
    assert "/api/v3/write_lp" == request.path
    assert {"db": "telegraf/weekly", "precision": "nanosecond"} == dict(request.query)


@pytest.mark.parametrize(
    ("precision", "spelled"),
    [("ns", "nanosecond"), ("us", "microsecond"), ("ms", "millisecond"), ("s", "second")],
)
async def test_v3_precision_names(
    fake: FakeUpstream, make_client: MakeClient, precision: str, spelled: str
) -> None:
    """v3 precision uses influxdb3's long names."""
    await make_client(api="v3").write("db", precision, BODY)
    assert spelled == fake.requests[0].query["precision"]


async def test_v3_write_authorization_is_bearer(
    fake: FakeUpstream, make_client: MakeClient
) -> None:
    """v3 authenticates with `Authorization: Bearer T`."""
    await make_client(api="v3").write("db", "ns", BODY)
    assert f"Bearer {TOKEN}" == fake.requests[0].headers["Authorization"]


async def test_write_without_token_sends_no_authorization(
    fake: FakeUpstream, make_client: MakeClient
) -> None:
    """No token configured: no Authorization header at all."""
    await make_client(token=None).write("db", "ns", BODY)
    assert "Authorization" not in fake.requests[0].headers


async def test_write_content_type_and_user_agent(
    fake: FakeUpstream, make_client: MakeClient
) -> None:
    """Writes are text/plain UTF-8 and identify the gateway."""
    await make_client().write("db", "ns", BODY)
    headers = fake.requests[0].headers
    assert "text/plain; charset=utf-8" == headers["Content-Type"]
    assert f"influx-gateway/{__version__}" == headers["User-Agent"]


async def test_url_path_prefix_is_kept(fake: FakeUpstream, make_client: MakeClient) -> None:
    """An upstream behind a path prefix (with trailing slash) gets the prefix on every request."""
    await make_client(url=fake.url + "/influx/").write("db", "ns", BODY)
    assert "/influx/api/v2/write" == fake.requests[0].path


async def test_invalid_precision_is_a_caller_error(make_client: MakeClient) -> None:
    """m/h must have been converted before forwarding: anything but ns/us/ms/s is a ValueError."""
    with pytest.raises(ValueError, match="precision"):
        await make_client().write("db", "h", BODY)


# -- gzip ----------------------------------------------------------------------------------------


async def test_gzip_body_round_trips(fake: FakeUpstream, make_client: MakeClient) -> None:
    """gzip = true: the body is sent gzip-compressed and decompresses to the batch."""
    await make_client(gzip=True).write("db", "ns", BODY)
    request = fake.requests[0]
    assert "gzip" == request.headers["Content-Encoding"]
    assert BODY == gzip.decompress(request.raw_body)


async def test_large_gzip_body_round_trips(fake: FakeUpstream, make_client: MakeClient) -> None:
    """A body past the in-thread threshold is compressed (in a thread) just the same."""
    body = b"".join(b"cpu,host=h%d v=%di 1700000000\n" % (i, i) for i in range(20_000))
    await make_client(gzip=True).write("db", "ns", body)
    assert body == gzip.decompress(fake.requests[0].raw_body)


async def test_gzip_off_sends_plain_body(fake: FakeUpstream, make_client: MakeClient) -> None:
    """gzip = false: the body goes as is, without Content-Encoding."""
    await make_client(gzip=False).write("db", "ns", BODY)
    request = fake.requests[0]
    assert (BODY, None) == (request.raw_body, request.headers.get("Content-Encoding"))


@pytest.mark.parametrize("gzip_on", [False, True], ids=["plain", "gzip"])
async def test_a_body_in_parts_goes_out_as_their_concatenation(
    fake: FakeUpstream, make_client: MakeClient, gzip_on: bool
) -> None:
    """A batch handed over as its records' payloads (never joined): the upstream gets exactly
    their concatenation, with a Content-Length; a retry sends the same bytes again."""
    parts = [
        b"".join(b"cpu,host=h%d v=%di 1700000000\n" % (i, j * 1000 + i) for i in range(n))
        for j, n in enumerate([1, 9000, 30, 7000])
    ]
    fake.script(Step(503), Step(204))
    client = make_client(gzip=gzip_on)
    assert 503 == (await client.write("db", "ns", parts)).status
    assert 204 == (await client.write("db", "ns", parts)).status
    for request in fake.requests:
        assert b"".join(parts) == request.body
        assert str(len(request.raw_body)) == request.headers["Content-Length"]
        assert ("gzip" if gzip_on else None) == request.headers.get("Content-Encoding")
        assert "text/plain; charset=utf-8" == request.headers["Content-Type"]


async def test_fake_collects_lines(fake: FakeUpstream, make_client: MakeClient) -> None:
    """The fake's line list is every received line, in order, across requests."""
    client = make_client()
    await client.write("db", "ns", b"a v=1 1\n")
    await client.write("db", "ns", b"b v=2 2\nc v=3 3\n")
    assert [b"a v=1 1", b"b v=2 2", b"c v=3 3"] == await fake.wait_for_lines(3, timeout=1)


# -- answers -------------------------------------------------------------------------------------


async def test_write_returns_status_body_and_retry_after(
    fake: FakeUpstream, make_client: MakeClient
) -> None:
    """The upstream's status, body and Retry-After come back as they were."""
    fake.script(Step(503, b'{"error":"busy"}', headers={"Retry-After": "7"}))
    response = await make_client().write("db", "ns", BODY)
    assert (503, b'{"error":"busy"}', "7") == (response.status, response.body, response.retry_after)


async def test_script_then_default(fake: FakeUpstream, make_client: MakeClient) -> None:
    """Scripted steps are used in order, then the default answers."""
    fake.script(Step(500), Step(429))
    fake.default = Step(204)
    client = make_client()
    statuses = [(await client.write("db", "ns", BODY)).status for _ in range(3)]
    assert [500, 429, 204] == statuses


async def test_error_body_is_capped_at_64_kib(fake: FakeUpstream, make_client: MakeClient) -> None:
    """Only the first 64 KiB of an error body are read."""
    fake.script(Step(400, b"x" * 200_000))
    response = await make_client().write("db", "ns", BODY)
    assert (400, MAX_ERROR_BODY) == (response.status, len(response.body))


async def test_token_echoed_in_body_is_redacted(
    fake: FakeUpstream, make_client: MakeClient
) -> None:
    """An upstream that echoes the token does not get it into our messages."""
    fake.script(Step(401, f"bad token {TOKEN}".encode()))
    response = await make_client().write("db", "ns", BODY)
    assert b"bad token <redacted>" == response.body


# -- failures as values --------------------------------------------------------------------------


async def test_timeout_is_status_none(fake: FakeUpstream, make_client: MakeClient) -> None:
    """An upstream slower than the timeout gives status None, error "timeout ..."."""
    fake.script(Step(204, delay=5.0))
    response = await make_client(timeout=Duration(0.2)).write("db", "ns", BODY)
    assert (None, "timeout after 0.2s") == (response.status, response.error)


async def test_reset_is_status_none(fake: FakeUpstream, make_client: MakeClient) -> None:
    """A connection dropped without an answer gives status None, a connection error."""
    fake.script(Step(reset=True))
    response = await make_client().write("db", "ns", BODY)
    assert response.status is None and (response.error or "").startswith("connection reset")


async def test_connection_refused_is_status_none(session: aiohttp.ClientSession) -> None:
    """A closed port gives status None, "connection refused"."""
    async with FakeUpstream() as gone:
        url = gone.url
    client = UpstreamClient(UpstreamConfig(name="up", url=url), session, token=TOKEN)
    response = await client.write("db", "ns", BODY)
    assert response.status is None and (response.error or "").startswith("connection refused")


async def test_failure_message_never_holds_the_token(
    fake: FakeUpstream, make_client: MakeClient
) -> None:
    """A token that would appear in an error string is redacted (here: in the URL's host)."""
    client = make_client(url=f"http://{TOKEN}.invalid", timeout=Duration(2))
    response = await client.write("db", "ns", BODY)
    assert response.status is None and TOKEN not in (response.error or "")


# -- query proxying ------------------------------------------------------------------------------


async def test_query_get_forwards_params_and_answer(
    fake: FakeUpstream, make_client: MakeClient
) -> None:
    """GET /query goes to the upstream's /query with the query params; the answer comes back."""
    fake.script(Step(200, b'{"results":[]}', headers={"Content-Type": "application/json"}))
    params = {"q": "SELECT * FROM cpu", "db": "telegraf", "epoch": "s", "chunked": "true"}
    status, headers, body = await make_client(api="v1").query("GET", params, None, None)
    assert (200, b'{"results":[]}', "application/json") == (status, body, headers["Content-Type"])
    request = fake.requests[0]
    assert ("GET", "/query", params) == (request.method, request.path, dict(request.query))


async def test_query_drops_client_credentials(fake: FakeUpstream, make_client: MakeClient) -> None:
    """u and p are not forwarded: the upstream gets the gateway's own credentials."""
    params = {"q": "SHOW DATABASES", "u": "client", "p": "client-token"}
    await make_client(api="v2").query("GET", params, None, None)
    request = fake.requests[0]
    assert {"q": "SHOW DATABASES"} == dict(request.query)
    assert f"Token {TOKEN}" == request.headers["Authorization"]


async def test_query_post_forwards_body_and_content_type(
    fake: FakeUpstream, make_client: MakeClient
) -> None:
    """A POST /query body is passed through with its Content-Type."""
    form = b"q=SELECT+1&db=telegraf"
    await make_client().query("POST", {}, form, "application/x-www-form-urlencoded")
    request = fake.requests[0]
    assert ("POST", form) == (request.method, request.body)
    assert "application/x-www-form-urlencoded" == request.headers["Content-Type"]


async def test_query_error_status_and_headers_pass_through(
    fake: FakeUpstream, make_client: MakeClient
) -> None:
    """An upstream query error keeps its status, body and X-Influxdb-Error."""
    fake.script(Step(400, b'{"error":"bad"}', headers={"X-Influxdb-Error": "bad"}))
    status, headers, body = await make_client().query("GET", {"q": "x"}, None, None)
    assert (400, "bad", b'{"error":"bad"}') == (status, headers["X-Influxdb-Error"], body)


async def test_query_timeout_raises_unavailable(
    fake: FakeUpstream, make_client: MakeClient
) -> None:
    """A query timeout raises UpstreamUnavailable naming the upstream."""
    fake.script(Step(200, delay=5.0))
    with pytest.raises(UpstreamUnavailable, match="upstream up: timeout"):
        await make_client(timeout=Duration(0.2)).query("GET", {"q": "x"}, None, None)


async def test_query_connection_refused_raises_unavailable(session: aiohttp.ClientSession) -> None:
    """A query to a closed port raises UpstreamUnavailable."""
    async with FakeUpstream() as gone:
        url = gone.url
    client = UpstreamClient(UpstreamConfig(name="up", url=url), session, token=TOKEN)
    with pytest.raises(UpstreamUnavailable, match="connection refused"):
        await client.query("GET", {"q": "x"}, None, None)


# -- credentials and TLS from the config ---------------------------------------------------------


def test_load_token_prefers_the_token() -> None:
    """An inline token is used as is."""
    assert "t1" == load_token(UpstreamConfig(name="up", token="t1", token_file="/nonexistent"))


def test_load_token_reads_and_strips_the_token_file(tmp_path: Path) -> None:
    """token_file's content, without surrounding whitespace, is the token."""
    path = tmp_path / "token"
    path.write_text("  file-token\n")
    assert "file-token" == load_token(UpstreamConfig(name="up", token_file=str(path)))


def test_load_token_missing_file_names_the_key(tmp_path: Path) -> None:
    """An unreadable token_file is a ConfigError naming upstreams.NAME.token_file."""
    config = UpstreamConfig(name="edge", token_file=str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match=r"upstreams\.edge\.token_file"):
        load_token(config)


def test_load_token_empty_file_is_an_error(tmp_path: Path) -> None:
    """An empty token_file is refused rather than sent as no credentials."""
    path = tmp_path / "token"
    path.write_text("\n")
    with pytest.raises(ConfigError, match="empty"):
        load_token(UpstreamConfig(name="up", token_file=str(path)))


def test_load_token_none_without_token_or_file() -> None:
    """No token and no token_file: no credentials."""
    assert None is load_token(UpstreamConfig(name="up"))


def test_ssl_context_without_verification_is_false() -> None:
    """tls_verify = false turns certificate checks off."""
    assert False is ssl_context(UpstreamConfig(name="up", tls_verify=False))


def test_ssl_context_default_is_true() -> None:
    """By default the system trust store verifies the upstream."""
    assert True is ssl_context(UpstreamConfig(name="up"))


def test_ssl_context_loads_the_ca_file() -> None:
    """ca_file gives a verifying context built from that bundle."""
    context = ssl_context(UpstreamConfig(name="up", ca_file=certifi.where()))
    assert isinstance(context, ssl.SSLContext) and ssl.CERT_REQUIRED == context.verify_mode


def test_ssl_context_bad_ca_file_names_the_key(tmp_path: Path) -> None:
    """An unreadable ca_file is a ConfigError naming upstreams.NAME.ca_file."""
    config = UpstreamConfig(name="edge", ca_file=str(tmp_path / "missing.pem"))
    with pytest.raises(ConfigError, match=r"upstreams\.edge\.ca_file"):
        ssl_context(config)
