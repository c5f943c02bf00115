"""Token values never leak: a full scenario against the real process, then every byte the
gateway emitted -- stdout, stderr, every file under the data dir but policy.toml, /metrics,
`config check`, `token list`, all HTTP answers -- is searched for every token value used."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from gateway.auth.policyfile import generate_token, hash_token
from tests.e2e.conftest import free_port

pytestmark = pytest.mark.slow

T = time.time_ns() // 10**9 * 10**9
LINE = f"leak,host=a v=1 {T}\n".encode()


class EchoingUpstream:
    """A hostile upstream: answers writes with 400 / 401 bodies that echo the Authorization."""

    def __init__(self) -> None:
        self.url = ""
        self.seen_authorization: list[str] = []
        self._runner: web.AppRunner | None = None

    async def _write(self, request: web.Request) -> web.Response:
        authorization = request.headers.get("Authorization", "")
        self.seen_authorization.append(authorization)
        await request.read()
        status = 401 if request.query.get("bucket") == "other" else 400
        return web.json_response(
            {"code": "invalid", "message": f"you sent {authorization}"}, status=status
        )

    async def __aenter__(self) -> EchoingUpstream:
        app = web.Application()
        app.router.add_post("/api/v2/write", self._write)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    """`influx-gateway ARGS`, output captured."""
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], capture_output=True, env=env, timeout=60
    )


async def exchange(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    answers: list[bytes],
    **kwargs: object,
) -> int:
    """One request; its status line, headers and body are added to `answers`."""
    async with session.request(method, url, **kwargs) as response:  # type: ignore[arg-type]
        body = await response.read()
    answers.append(str(response.status).encode() + repr(dict(response.headers)).encode() + body)
    return response.status


async def raw(port: int, data: bytes, answers: list[bytes]) -> None:
    """Send raw bytes, keep whatever comes back until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    try:
        await writer.drain()
        answers.append(await asyncio.wait_for(reader.read(), 5))
    except ConnectionError:
        pass
    writer.close()


async def test_no_token_value_appears_in_anything_the_gateway_emits(tmp_path: Path) -> None:
    """Good, bad, expired, revoked and pasted tokens, Basic and u/p auth, a token in a query
    string, upstream tokens from ${ENV} and token_file, errors on purpose: no value leaks."""
    data_dir = tmp_path / "data"
    policy = data_dir / "policy.toml"
    upstream_secret = "igw_" + "UPSTREAMENV" + generate_token()[4:]
    file_secret = "igw_" + "UPSTREAMFILE" + generate_token()[4:]
    (tmp_path / "upstream-token").write_text(file_secret + "\n")
    env = {**os.environ, "LEAK_UPSTREAM_TOKEN": upstream_secret, "PYTHONUNBUFFERED": "1"}
    env.pop("INFLUX_GATEWAY_CONFIG", None)
    dd = ["--data-dir", str(data_dir)]

    async with EchoingUpstream() as upstream:
        config = tmp_path / "gw.toml"
        config.write_text(
            '[server]\nread_timeout = "1s"\nshutdown_timeout = "1s"\n'
            "[store]\nenabled = true\n"
            f'[[upstreams]]\nname = "up"\nurl = "{upstream.url}"\ntoken = "${{LEAK_UPSTREAM_TOKEN}}"\n'
            'databases = ["mydb"]\nflush_interval = "100ms"\n'
            f'[[upstreams]]\nname = "up2"\nurl = "{upstream.url}"\n'
            f'token_file = "{tmp_path / "upstream-token"}"\ndatabases = ["other"]\n'
            'flush_interval = "100ms"\nretry_max_delay = "200ms"\n'
        )
        cfg = ["-c", str(config), *dd]
        created = {}
        for name, scope in [
            ("writer", ["--write", "mydb", "--write", "other", "--read", "mydb"]),
            ("reader", ["--read", "mydb"]),
            ("old", ["--write", "mydb"]),
        ]:
            result = await asyncio.to_thread(
                run_cli, "token", "create", name, *scope, *cfg, env=env
            )
            assert 0 == result.returncode, result.stderr
            created[name] = result.stdout.decode().strip()
        await asyncio.to_thread(run_cli, "token", "revoke", "old", *cfg, env=env)
        expired = generate_token()
        with policy.open("a") as file:
            file.write(
                f'\n[[tokens]]\nname = "expired"\nhash = "{hash_token(expired)}"\n'
                'write = ["*"]\nexpires = 2020-01-01T00:00:00Z\n'
            )
        writer, reader, revoked = created["writer"], created["reader"], created["old"]
        unknown = generate_token()
        pasted = generate_token()
        tokens = {
            "writer": writer,
            "reader": reader,
            "revoked": revoked,
            "expired": expired,
            "unknown": unknown,
            "pasted": pasted,
            "upstream env": upstream_secret,
            "upstream file": file_secret,
            "writer basic": base64.b64encode(f"me:{writer}".encode()).decode(),
        }

        port = free_port()
        stdout_path, stderr_path = tmp_path / "gateway.stdout", tmp_path / "gateway.stderr"
        with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
            process = subprocess.Popen(
                [sys.executable, "-m", "gateway", "run", *cfg, "--listen", f"127.0.0.1:{port}"],
                stdout=out,
                stderr=err,
                env=env,
            )
        url = f"http://127.0.0.1:{port}"
        answers: list[bytes] = []
        try:
            async with aiohttp.ClientSession() as session:
                async with asyncio.timeout(30):
                    while True:
                        try:
                            async with session.get(f"{url}/ready") as response:
                                if response.status == 200:
                                    break
                        except aiohttp.ClientError:
                            await asyncio.sleep(0.05)

                async def post(path: str, expected: int, **kwargs: object) -> None:
                    status = await exchange(
                        session, "POST", url + path, answers, data=LINE, **kwargs
                    )
                    assert expected == status, path

                v2 = "/api/v2/write?bucket=mydb"
                await post(v2, 204, headers={"Authorization": f"Token {writer}"})
                await post(v2, 204, headers={"Authorization": f"Bearer {writer}"})
                await post(v2, 204, headers={"Authorization": f"Basic {tokens['writer basic']}"})
                await post(f"/write?db=mydb&u=me&p={writer}", 204)
                await post(f"/write?db=mydb&u={writer}", 204)
                await post(
                    "/api/v2/write?bucket=other", 204, headers={"Authorization": f"Token {writer}"}
                )
                await post(f"/api/v2/write?bucket=mydb&token={writer}", 401)
                await post(v2, 401, headers={"Authorization": f"Token {unknown}"})
                await post(v2, 401, headers={"Authorization": f"Token {expired}"})
                await post(v2, 401, headers={"Authorization": f"Token {revoked}"})
                await post(f"/write?db=mydb&p={unknown}", 401)
                await post(v2, 403, headers={"Authorization": f"Token {reader}"})
                await post(v2, 401, headers={"Authorization": f"Token {writer} trailing"})
                await post(v2, 401, headers={"Authorization": f"Basic {writer}"})
                await post(v2, 401, headers={"Authorization": f"Digest {writer}"})
                await post(
                    v2,
                    400,
                    headers={"Authorization": f"Token {writer}", "Content-Encoding": "gzip"},
                )
                await exchange(
                    session, "GET", f"{url}/query?db=mydb&q=SELECT+1&p={reader}", answers
                )
                await exchange(
                    session, "GET", f"{url}/query?db=nope&q=SELECT+1&p={reader}", answers
                )
                await raw(
                    port,
                    f"POST {v2} HTTP/1.1\r\nAuthorization: Token {writer}{'x' * 70_000}\r\n\r\n".encode(),
                    answers,
                )
                await raw(
                    port, f"GET /write?p={writer} HTTP/1.1 {writer}\r\n\r\n".encode(), answers
                )
                await raw(
                    port,
                    f"POST {v2} HTTP/1.1\r\nAuthorization: Token {writer}\r\nContent-Length: 50\r\n\r\nx".encode(),
                    answers,
                )  # 408
                # A pasted token in the policy file (a deliberate mistake): refused, not echoed.
                text = policy.read_text()
                policy.write_text(text + f'\n[[tokens]]\nname = "pasted"\nhash = "{pasted}"\n')
                process.send_signal(signal.SIGHUP)
                await asyncio.sleep(1.5)  # upstream retries and dead letters happen meanwhile
                await exchange(session, "GET", f"{url}/metrics", answers)
        finally:
            process.send_signal(signal.SIGTERM)
            await asyncio.to_thread(process.wait, 30)
        assert upstream.seen_authorization  # the upstreams were really sent their tokens

    check = await asyncio.to_thread(run_cli, "config", "check", *cfg, env=env)
    listing = await asyncio.to_thread(run_cli, "token", "list", "--json", *cfg, env=env)
    emitted = {
        "stdout": stdout_path.read_bytes(),
        "stderr": stderr_path.read_bytes(),
        "config check": check.stdout + check.stderr,
        "token list": listing.stdout + listing.stderr,
        "http answers": b"\n".join(answers),
    }
    for path in sorted(data_dir.rglob("*")):
        if path.is_file() and path != policy:
            emitted[str(path.relative_to(tmp_path))] = path.read_bytes()
    assert "policy reload refused" in emitted["stderr"].decode()
    assert any("deadletter" in where for where in emitted)  # the 400 path really ran
    leaks = [
        f"{what} token in {where}"
        for what, value in tokens.items()
        for where, data in emitted.items()
        if value.encode() in data
    ]
    assert [] == leaks
