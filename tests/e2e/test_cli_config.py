"""`influx-gateway config check` and the exit codes of the CLI, as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def run(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """The CLI as a subprocess, text output."""
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=cwd,
        check=False,
    )


def test_config_check_prints_effective_config_with_secrets_redacted(tmp_path: Path) -> None:
    """A valid config: exit 0, the effective config, the upstream token redacted."""
    config = tmp_path / "gw.toml"
    config.write_text(
        '[[upstreams]]\nname = "d"\nurl = "https://x.example"\ntoken = "${UP_TOKEN}"\n'
    )
    result = run(
        "config", "check", "-c", str(config), env={**os.environ, "UP_TOKEN": "s3cr3t-upstream"}
    )
    assert 0 == result.returncode, result.stderr
    assert 'token = "<redacted>"' in result.stdout
    assert "s3cr3t-upstream" not in result.stdout + result.stderr
    assert 'listen = "127.0.0.1:8086"' in result.stdout


def test_config_check_invalid_exits_2_naming_file_and_key(tmp_path: Path) -> None:
    """An invalid value: exit 2 with the file and the key in the message."""
    config = tmp_path / "gw.toml"
    config.write_text('[buffer]\nfsync = "sometimes"\n')
    result = run("config", "check", "-c", str(config))
    assert 2 == result.returncode
    assert str(config) in result.stderr
    assert "buffer.fsync" in result.stderr


def test_config_check_invalid_policy_exits_2(tmp_path: Path) -> None:
    """An invalid policy file: exit 2 naming it."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "policy.toml").write_text('[[tokens]]\nname = "x"\n')
    result = run("config", "check", "--data-dir", str(tmp_path / "data"))
    assert 2 == result.returncode
    assert "policy.toml" in result.stderr


def test_config_from_environment_variable(tmp_path: Path) -> None:
    """$INFLUX_GATEWAY_CONFIG is used when -c is not given."""
    config = tmp_path / "env.toml"
    config.write_text('[server]\nlisten = "127.0.0.1:9999"\n')
    result = run(
        "config", "check", env={**os.environ, "INFLUX_GATEWAY_CONFIG": str(config)}, cwd=tmp_path
    )
    assert 0 == result.returncode, result.stderr
    assert 'listen = "127.0.0.1:9999"' in result.stdout


def test_data_dir_not_writable_exits_3(tmp_path: Path) -> None:
    """A data dir that cannot be created: exit 3 (start-up failure)."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = run("run", "--data-dir", str(blocker / "sub"), "--listen", "127.0.0.1:0")
    assert 3 == result.returncode
    assert "not writable" in result.stderr


def test_unknown_command_is_usage_error() -> None:
    """A typo in a command exits 2 (click's usage error)."""
    assert 2 == run("storr").returncode


def test_log_level_from_the_command_line(tmp_path: Path) -> None:
    """--log-level warning silences the per-request info lines; info shows them as JSON."""
    import urllib.request

    from tests.e2e.conftest import start_gateway

    (tmp_path / "quiet").mkdir()
    (tmp_path / "loud").mkdir()
    quiet = start_gateway(tmp_path / "quiet", "--log-level", "warning")
    loud = start_gateway(tmp_path / "loud")
    try:
        for gateway in (quiet, loud):
            with urllib.request.urlopen(f"{gateway.url}/ping", timeout=5) as response:
                assert 204 == response.status
    finally:
        assert 0 == quiet.stop()
        assert 0 == loud.stop()
    assert '"event":"request"' not in quiet.stderr()
    assert '"event":"request"' in loud.stderr()


def test_store_export_and_stats_read_past_a_damaged_segment(tmp_path: Path) -> None:
    """A store segment damaged on disk: `store export` prints every readable line (the next
    segment's too), warns on stderr naming the file and offset, and exits 1; so does `stats`."""
    import asyncio

    from gateway.buffer.record import Record
    from gateway.store import LocalStore

    t = 1_700_000_000 * 10**9
    written = [f"m,i={i} v={i}i {t}" for i in range(100)]

    async def fill() -> None:
        store = LocalStore(tmp_path / "store", retention_ns=None, fsync="never", segment_bytes=4096)
        store.open()
        for line in written:
            await store.append(Record("db", "ns", t, "tok", 1, t, t, f"{line}\n".encode()))
        await store.close()

    asyncio.run(fill())
    first = min((tmp_path / "store").rglob("*.seg"))
    data = bytearray(first.read_bytes())
    data[len(data) // 2] ^= 0xFF
    first.write_bytes(bytes(data))

    export = run("store", "export", "--database", "db", "--data-dir", str(tmp_path))
    assert 1 == export.returncode
    got = export.stdout.splitlines()
    assert 0 < len(got) < 100 and got[-1] == written[-1]
    assert got == [line for line in written if line in set(got)]
    assert f"warning: {first}: invalid record at offset" in export.stderr
    stats = run("store", "stats", "--json", "--data-dir", str(tmp_path))
    assert 1 == stats.returncode
    assert len(got) == json.loads(stats.stdout)[0]["points"]
    assert f"warning: {first}" in stats.stderr
