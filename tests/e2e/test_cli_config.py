"""`influx-gateway config check` and the exit codes of the CLI, as a user runs them."""

from __future__ import annotations

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
