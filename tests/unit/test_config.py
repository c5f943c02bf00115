"""Config loading: defaults, conversions, ${ENV}, unknown keys, redaction."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import Config, find_config_file, load_config, redacted
from gateway.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gw.toml"
    path.write_text(text)
    return path


def test_no_file_gives_the_embedded_default() -> None:
    """Without a file every option has its documented default."""
    config = load_config(None, env={})
    assert "127.0.0.1:8086" == config.server.listen
    assert Path("gateway-data/policy.toml") == config.policy_path
    assert config.store_enabled
    assert "always" == config.buffer.fsync
    assert 10 * 2**30 == config.buffer.max_bytes
    assert 50_000_000 == config.server.max_body_bytes


def test_empty_file_is_valid(tmp_path: Path) -> None:
    """An empty config file is valid and equals the defaults (paths aside)."""
    config = load_config(write(tmp_path, ""), env={})
    assert Config().server == config.server
    assert Config().buffer == config.buffer


def test_example_config_loads() -> None:
    """config.example.toml documents every option and loads as it is."""
    config = load_config(Path(__file__).parents[2] / "config.example.toml", env={})
    assert 3600.0 == config.precision.max_future


def test_sections_convert(tmp_path: Path) -> None:
    """Durations and sizes inside sections are converted."""
    config = load_config(
        write(
            tmp_path,
            '[server]\nread_timeout = "5s"\nmax_body_bytes = "1MiB"\n'
            '[buffer]\nmax_bytes = "1GiB"\nfsync = "never"\n'
            '[[precision.overrides]]\ndatabases = ["iot_*"]\nmax_future = "1d"\nround_to = "1s"\n',
        ),
        env={},
    )
    assert 5.0 == config.server.read_timeout
    assert 2**20 == config.server.max_body_bytes
    assert 2**30 == config.buffer.max_bytes
    assert "never" == config.buffer.fsync
    assert ("iot_*",) == config.precision.overrides[0].databases
    assert 86400.0 == config.precision.overrides[0].max_future


def test_env_expansion(tmp_path: Path) -> None:
    """${VAR} in strings is read from the environment."""
    path = write(tmp_path, '[server]\nlisten = "127.0.0.1:${PORT}"\n')
    assert "127.0.0.1:9999" == load_config(path, env={"PORT": "9999"}).server.listen


def test_missing_env_names_file_key_and_variable(tmp_path: Path) -> None:
    """An unset ${VAR} is an error naming the file, the key and the variable."""
    path = write(tmp_path, '[server]\nlisten = "127.0.0.1:${NOPE}"\n')
    with pytest.raises(ConfigError) as e:
        load_config(path, env={})
    assert str(path) in str(e.value)
    assert "server.listen" in str(e.value)
    assert "NOPE" in str(e.value)


def test_unknown_key_is_an_error(tmp_path: Path) -> None:
    """A typo in a key is an error naming the file and the key."""
    path = write(tmp_path, "[server]\nlisten_addr = '127.0.0.1:1'\n")
    with pytest.raises(ConfigError) as e:
        load_config(path, env={})
    assert str(path) in str(e.value)
    assert "server.listen_addr" in str(e.value)


def test_unknown_section_is_an_error(tmp_path: Path) -> None:
    """An unknown table is an error naming it."""
    with pytest.raises(ConfigError, match="servers"):
        load_config(write(tmp_path, "[servers]\n"), env={})


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[buffer]\nfsync = "sometimes"\n', "buffer.fsync"),
        ("[server]\npartial_writes = 1\n", "server.partial_writes"),
        ('[server]\nlisten = "nohost"\n', "server.listen"),
        ('[server]\nmax_lines = "many"\n', "server.max_lines"),
        ("[server]\nvalidation_nice = 20\n", "server.validation_nice"),
        ("[server]\nvalidation_nice = -1\n", "server.validation_nice"),
        ("[[rewrite]]\nmatch = '^(a'\ndatabase = 'x'\n", "rewrite[0].match"),
        ("[[rewrite]]\nmatch = '^a$'\ndatabase = '\\1'\n", "rewrite[0].database"),
        ('[[upstreams]]\nname = "a"\nurl = "ftp://x"\n', "upstreams[0].url"),
        (
            '[[upstreams]]\nname = "a"\nurl = "http://x"\n[[upstreams]]\nname = "a"\nurl = "http://y"\n',
            "upstreams[1].name",
        ),
    ],
)
def test_invalid_values_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    """Each invalid value is refused with its key in the message."""
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        load_config(write(tmp_path, text), env={})


def test_bad_toml_names_the_file(tmp_path: Path) -> None:
    """A TOML syntax error names the file."""
    path = write(tmp_path, "[server\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(path, env={})


def test_data_dir_override_and_relative_paths(tmp_path: Path) -> None:
    """data_dir is relative to the config file; --data-dir overrides it; paths live inside."""
    path = write(tmp_path, 'data_dir = "data"\n[auth]\npolicy_file = "tokens.toml"\n')
    config = load_config(path, env={})
    assert tmp_path / "data" / "store" == config.store_path
    assert tmp_path / "tokens.toml" == config.policy_path
    assert Path("/elsewhere/buffer") == load_config(path, env={}, data_dir="/elsewhere").buffer_path


def test_store_defaults_to_enabled_only_without_upstreams(tmp_path: Path) -> None:
    """The store is the embedded default: off once an upstream is configured."""
    path = write(tmp_path, '[[upstreams]]\nname = "a"\nurl = "http://127.0.0.1:1"\n')
    assert not load_config(path, env={}).store_enabled


def test_redacted_hides_upstream_tokens(tmp_path: Path) -> None:
    """The effective config never shows a secret."""
    path = write(tmp_path, '[[upstreams]]\nname = "a"\nurl = "http://x"\ntoken = "${SECRET}"\n')
    data = redacted(load_config(path, env={"SECRET": "s3cr3t-value"}))
    assert "<redacted>" == data["upstreams"][0]["token"]
    assert "s3cr3t-value" not in repr(data)


def test_find_config_file_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """-c wins, then $INFLUX_GATEWAY_CONFIG, then ./influx-gateway.toml if present."""
    monkeypatch.chdir(tmp_path)
    assert find_config_file(None, {}) is None
    (tmp_path / "influx-gateway.toml").write_text("")
    assert Path("influx-gateway.toml") == find_config_file(None, {})
    assert Path("/e.toml") == find_config_file(None, {"INFLUX_GATEWAY_CONFIG": "/e.toml"})
    assert Path("/c.toml") == find_config_file("/c.toml", {"INFLUX_GATEWAY_CONFIG": "/e.toml"})


def test_worker_shards_sit_beside_the_data_dirs_own(tmp_path: Path) -> None:
    """Worker 0 uses the data dir's buffer/store/dead letters; worker K `<dir>.worker-K`."""
    config = Config(data_dir=str(tmp_path))
    assert config.for_worker(0).buffer_path == config.buffer_path == tmp_path / "buffer"
    one = config.for_worker(1)
    assert one.buffer_path == tmp_path / "buffer.worker-1"
    assert one.store_path == tmp_path / "store.worker-1"
    assert one.deadletter_path == tmp_path / "deadletter.worker-1"
    assert one.policy_path == config.policy_path  # one policy for every worker
    assert [c.worker for c in config.shards()] == [0]
    (tmp_path / "store.worker-3").mkdir()
    (tmp_path / "buffer.worker-1").mkdir()
    (tmp_path / "buffer.worker-x").mkdir()  # not a shard
    (tmp_path / "store.worker-2").write_text("")  # not a directory
    assert [c.worker for c in config.shards()] == [0, 1, 3]
    assert [c.worker for c in one.shards()] == [0, 1, 3]
