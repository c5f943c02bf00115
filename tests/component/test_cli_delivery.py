"""The delivery CLI against real files and a fake upstream: deadletter list|replay|purge,
buffer status, and `replay` from the store and from files."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from gateway.forward import deadletter
from tests.fakeupstream import FakeUpstream, Step

T = 1_700_000_000


def write_config(tmp_path: Path, url: str, extra: str = "") -> Path:
    """A config with one upstream "up" at `url` and the store enabled."""
    path = tmp_path / "gw.toml"
    path.write_text(
        f'data_dir = "{tmp_path / "data"}"\n[store]\nenabled = true\n{extra}\n'
        f'[[upstreams]]\nname = "up"\nurl = "{url}"\ngzip = false\nretry_max_delay = "100ms"\n'
    )
    return path


async def cli(*args: str) -> tuple[int, str, str]:
    """Run the CLI in a subprocess without blocking the loop (the fake upstream runs on it)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def letter(data: str, upstream: str = "up") -> deadletter.DeadLetter:
    """A dead letter for the fake upstream."""
    return deadletter.DeadLetter(
        time="2026-01-01T00:00:00Z",
        upstream=upstream,
        database="mydb",
        precision="s",
        status=400,
        reason="rejected",
        message="HTTP 400: bad",
        lines=data.count("\n"),
        data=data,
    )


async def test_deadletter_list_purge(tmp_path: Path) -> None:
    """list shows entries (table and JSON); purge deletes them."""
    config = write_config(tmp_path, "http://127.0.0.1:9")
    directory = tmp_path / "data" / "deadletter"
    deadletter.append(directory, letter(f"cpu v=1 {T}\n"))
    code, out, _ = await cli("deadletter", "list", "-c", str(config))
    assert 0 == code
    assert "HTTP 400: bad" in out
    code, out, _ = await cli("deadletter", "list", "--json", "-c", str(config))
    assert f"cpu v=1 {T}\n" == json.loads(out)[0]["data"]
    code, _, err = await cli("deadletter", "purge", "--upstream", "up", "-c", str(config))
    assert (0, "purged 1 dead letter(s)") == (code, err.strip())
    assert [] == deadletter.list_letters(directory)


async def test_deadletter_unknown_upstream_is_a_usage_error(tmp_path: Path) -> None:
    """--upstream naming no configured upstream: exit 2 naming the known ones."""
    config = write_config(tmp_path, "http://127.0.0.1:9")
    code, _, err = await cli("deadletter", "list", "--upstream", "nope", "-c", str(config))
    assert 2 == code
    assert '"nope"' in err


async def test_deadletter_replay_is_delivered_by_the_gateway(tmp_path: Path) -> None:
    """replay queues the entries; the gateway sends them and empties the spool."""
    from aiohttp.test_utils import TestClient, TestServer
    from prometheus_client import CollectorRegistry

    from gateway.app import create_app
    from gateway.config import load_config
    from tests.http.conftest import make_policy

    async with FakeUpstream() as fake:
        config_path = write_config(tmp_path, fake.url)
        directory = tmp_path / "data" / "deadletter"
        deadletter.append(directory, letter(f"cpu v=1 {T}\ncpu v=2 {T}\n"))
        code, _, err = await cli("deadletter", "replay", "-c", str(config_path))
        assert (0, "queued 1 dead letter(s) for replay") == (code, err.strip())
        assert [] == deadletter.list_letters(directory, "up")
        app = create_app(
            load_config(config_path, env={}), registry=CollectorRegistry(), policy=make_policy()
        )
        async with TestClient(TestServer(app)):
            assert [f"cpu v=1 {T}".encode(), f"cpu v=2 {T}".encode()] == await fake.wait_for_lines(
                2, 5
            )
            assert "s" == fake.requests[0].query["precision"]
            async with asyncio.timeout(5):
                while deadletter.replay_path(directory, "up").exists():
                    await asyncio.sleep(0.05)


async def test_replay_from_files_with_rate(tmp_path: Path) -> None:
    """replay FILE --database --to sends every valid line, paced by --rate."""
    async with FakeUpstream() as fake:
        config = write_config(tmp_path, fake.url)
        source = tmp_path / "backfill.lp"
        source.write_text("".join(f"m,i={i} v={i}i {T + i}\n" for i in range(30)))
        code, _, err = await cli(
            "replay",
            str(source),
            "--database",
            "old",
            "--precision",
            "s",
            "--to",
            "up",
            "--rate",
            "30",
            "-c",
            str(config),
        )
        assert 0 == code, err
        assert 30 == len(fake.lines())
        assert {"old"} == {r.query["bucket"] for r in fake.requests}
        assert "replayed 30 line(s)" in err


async def test_replay_from_store(tmp_path: Path) -> None:
    """replay --from-store DB sends the store's points (ns) to the upstream."""
    from gateway.buffer.record import Record
    from gateway.store import LocalStore

    async with FakeUpstream() as fake:
        config = write_config(tmp_path, fake.url)
        store = LocalStore(tmp_path / "data" / "store", retention_ns=None)
        store.open()
        body = f"cpu v=1 {T}\ncpu v=2 {T + 1}\n".encode()
        await store.append(Record("mydb", "s", T * 10**9, "t", 2, T * 10**9, (T + 1) * 10**9, body))
        await store.close()
        code, _, err = await cli("replay", "--from-store", "mydb", "--to", "up", "-c", str(config))
        assert 0 == code, err
        assert [
            f"cpu v=1 {T * 10**9}".encode(),
            f"cpu v=2 {(T + 1) * 10**9}".encode(),
        ] == fake.lines()
        assert "ns" == fake.requests[0].query["precision"]


async def test_replay_dead_letters_what_the_upstream_refuses(tmp_path: Path) -> None:
    """A 400 during replay: the batch goes to the dead-letter file and the exit code is 1."""
    async with FakeUpstream(default=Step(400, b'{"error":"bad"}')) as fake:
        config = write_config(tmp_path, fake.url)
        source = tmp_path / "x.lp"
        source.write_text(f"m v=1 {T}\n")
        code, _, _ = await cli(
            "replay",
            str(source),
            "--database",
            "d",
            "--precision",
            "s",
            "--to",
            "up",
            "-c",
            str(config),
        )
        assert 1 == code
        assert 1 == len(deadletter.list_letters(tmp_path / "data" / "deadletter", "up"))


@pytest.mark.parametrize("args", [["--to", "nope", "--from-store", "x"], ["--to", "up"]])
async def test_replay_usage_errors(tmp_path: Path, args: list[str]) -> None:
    """An unknown upstream, or neither store nor files: exit 2."""
    config = write_config(tmp_path, "http://127.0.0.1:9")
    code, _, _ = await cli("replay", *args, "-c", str(config))
    assert 2 == code


async def test_buffer_status_shows_pending_per_upstream(tmp_path: Path) -> None:
    """buffer status reads the log and cursors of a (stopped) gateway."""
    from gateway.buffer.record import Record
    from gateway.config import load_config
    from gateway.destinations import build_wal

    config_path = write_config(tmp_path, "http://127.0.0.1:9")
    wal = build_wal(load_config(config_path, env={}))
    wal.open()
    for i in range(3):
        await wal.append(
            Record("mydb", "s", T * 10**9, "t", 1, T * 10**9, T * 10**9, f"m v={i} {T}\n".encode())
        )
    await wal.close()
    code, out, _ = await cli("buffer", "status", "--json", "-c", str(config_path))
    assert 0 == code
    rows = {row["upstream"]: row for row in json.loads(out)}
    assert 3 == rows["up"]["pending_records"]
    assert 3 == rows["store"]["pending_records"]
    assert rows["up"]["pending_bytes"] > 0
    code, out, _ = await cli("buffer", "status", "-c", str(config_path))
    assert "UPSTREAM" in out
