"""`influx-gateway token create|list|revoke` as a user runs them (subprocess), against SPEC 1/4."""

from __future__ import annotations

import json
import re
import stat
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.auth.policyfile import hash_token, load_policy
from tests.e2e.conftest import cli

pytestmark = pytest.mark.slow

COMMENTED = """\
# Team policy: reviewed by security, do not reorder.
[[tokens]]
name = "telegraf-edge"   # the edge fleet
hash = "sha256:{zeros}"
write = ["telegraf", "edge_*"]
read = ["telegraf"]
# rotate in June
expires = 2030-06-30T00:00:00Z
rate_limit = 200000

# trailing note
""".format(zeros="0" * 64)


@pytest.fixture(name="policy")
def fixture_policy(tmp_path: Path) -> Path:
    """A commented policy file with one entry."""
    path = tmp_path / "policy.toml"
    path.write_text(COMMENTED)
    return path


def token(*args: str, check: bool = True) -> tuple[int, str, str]:
    """`influx-gateway token ARGS`: (exit code, stdout, stderr)."""
    result = cli("token", *args, check=check)
    return result.returncode, result.stdout.decode(), result.stderr.decode()


def test_create_prints_only_the_token_on_stdout(policy: Path) -> None:
    """stdout is exactly the token and a newline, so TOKEN=$(... token create ...) works."""
    _, out, _ = token("create", "ci", "--write", "ci", "--policy", str(policy))
    assert re.fullmatch(r"igw_[A-Za-z0-9_-]{43}\n", out)


def test_create_guidance_goes_to_stderr(policy: Path) -> None:
    """The guidance (where, scopes, shown once) is on stderr and does not repeat the token."""
    _, out, err = token("create", "ci", "--write", "ci", "--policy", str(policy))
    assert 'created token "ci"' in err
    assert "write: ci; read: -" in err
    assert out.strip() not in err


def test_create_stores_only_the_hash(policy: Path) -> None:
    """The file gains sha256(token), never the token."""
    _, out, _ = token("create", "ci", "--write", "ci", "--policy", str(policy))
    text = policy.read_text()
    assert (True, False) == (hash_token(out.strip()) in text, out.strip() in text)


def test_create_keeps_comments_and_other_entries(policy: Path) -> None:
    """The original text, comments included, is kept byte for byte; the new entry follows."""
    token("create", "ci", "--write", "ci", "--policy", str(policy))
    text = policy.read_text()
    assert text.startswith(COMMENTED)
    assert ["telegraf-edge", "ci"] == [t.name for t in load_policy(policy).tokens]


def test_create_replaces_the_file_atomically(policy: Path) -> None:
    """The new file is a new inode (temp file + rename), mode 0600, no temp file left."""
    before = policy.stat().st_ino
    token("create", "ci", "--write", "ci", "--policy", str(policy))
    after = policy.stat()
    leftovers = [p.name for p in policy.parent.iterdir() if p.name != "policy.toml"]
    assert (True, 0o600, []) == (before != after.st_ino, stat.S_IMODE(after.st_mode), leftovers)


def test_create_with_existing_name_exits_2_and_changes_nothing(policy: Path) -> None:
    """An existing name: exit 2 naming it, the file untouched (same bytes, same inode)."""
    before = (policy.read_bytes(), policy.stat().st_ino)
    code, out, err = token(
        "create", "telegraf-edge", "--write", "x", "--policy", str(policy), check=False
    )
    assert (2, "") == (code, out)
    assert 'a token named "telegraf-edge" already exists' in err
    assert before == (policy.read_bytes(), policy.stat().st_ino)


def test_expires_duration_is_stored_as_toml_datetime(policy: Path) -> None:
    """--expires 30d is stored as a TOML datetime 30 days from now."""
    token("create", "ci", "--write", "ci", "--expires", "30d", "--policy", str(policy))
    stored = tomllib.loads(policy.read_text())["tokens"][1]["expires"]
    expected = datetime.now(UTC) + timedelta(days=30)
    assert (True, True) == (
        isinstance(stored, datetime),
        abs((stored - expected).total_seconds()) < 60,
    )


def test_expires_rfc3339_is_stored_as_toml_datetime(policy: Path) -> None:
    """--expires 2031-01-02T03:04:05Z is stored as that TOML datetime (not a string)."""
    token(
        "create",
        "ci",
        "--write",
        "ci",
        "--expires",
        "2031-01-02T03:04:05Z",
        "--policy",
        str(policy),
    )
    assert "expires = 2031-01-02T03:04:05Z" in policy.read_text()


@pytest.mark.parametrize("value", ["tomorrow", "2020-01-01T00:00:00Z", "-1h"])
def test_invalid_or_past_expires_exits_2(policy: Path, value: str) -> None:
    """An unparseable or past --expires: exit 2, nothing written."""
    before = policy.read_bytes()
    code, out, _ = token(
        "create", "ci", "--write", "ci", "--expires", value, "--policy", str(policy), check=False
    )
    assert (2, "", before) == (code, out, policy.read_bytes())


def test_invalid_name_exits_2(policy: Path) -> None:
    """A name that cannot appear in logs and metrics: exit 2 saying the rule."""
    code, _, err = token("create", "bad name", "--policy", str(policy), check=False)
    assert (2, True) == (code, "is not a valid token name" in err)


def test_create_makes_a_missing_policy_file(tmp_path: Path) -> None:
    """With no policy file yet, create makes one (mode 0600) holding the new entry."""
    path = tmp_path / "data" / "policy.toml"
    token("create", "ci", "--write", "ci", "--data-dir", str(tmp_path / "data"))
    assert (["ci"], 0o600) == (
        [t.name for t in load_policy(path).tokens],
        stat.S_IMODE(path.stat().st_mode),
    )


def test_create_with_rate_limit(policy: Path) -> None:
    """--rate-limit is stored as rate_limit."""
    token("create", "ci", "--write", "ci", "--rate-limit", "500", "--policy", str(policy))
    assert 500 == load_policy(policy).tokens[1].rate_limit


def test_list_shows_names_scopes_and_expiry(policy: Path) -> None:
    """The table has a row per token: name, write, read, expiry, rate limit."""
    token("create", "ci", "--write", "ci", "--policy", str(policy))
    _, out, _ = token("list", "--policy", str(policy))
    rows = [line.split() for line in out.splitlines()]
    assert ["NAME", "WRITE", "READ", "EXPIRES", "RATE_LIMIT"] == rows[0]
    assert [
        "telegraf-edge",
        "telegraf,edge_*",
        "telegraf",
        "2030-06-30T00:00:00Z",
        "200000",
    ] == rows[1]
    assert ["ci", "ci", "-", "never", "-"] == rows[2]


def test_list_json(policy: Path) -> None:
    """--json gives the same facts as data."""
    _, out, _ = token("list", "--json", "--policy", str(policy))
    assert [
        {
            "name": "telegraf-edge",
            "write": ["telegraf", "edge_*"],
            "read": ["telegraf"],
            "expires": "2030-06-30T00:00:00Z",
            "rate_limit": 200000,
        }
    ] == json.loads(out)


def test_list_never_shows_a_hash_or_token(policy: Path) -> None:
    """Neither output form contains a hash (or the token it came from)."""
    _, new, _ = token("create", "ci", "--write", "ci", "--policy", str(policy))
    outputs = (
        token("list", "--policy", str(policy))[1]
        + token("list", "--json", "--policy", str(policy))[1]
    )
    assert (False, False, False) == (
        "sha256" in outputs,
        hash_token(new.strip())[7:] in outputs,
        new.strip() in outputs,
    )


def test_list_invalid_policy_exits_2_naming_the_file(tmp_path: Path) -> None:
    """A broken policy file: exit 2 with the file and the problem."""
    path = tmp_path / "policy.toml"
    path.write_text('[[tokens]]\nname = "x"\nhash = "nope"\n')
    code, _, err = token("list", "--policy", str(path), check=False)
    assert (2, True) == (code, str(path) in err and 'key "hash"' in err)


def test_revoke_removes_the_entry_and_keeps_the_rest(policy: Path) -> None:
    """revoke cuts out that entry only; comments and the other entry stay."""
    token("create", "ci", "--write", "ci", "--policy", str(policy))
    token("revoke", "ci", "--policy", str(policy))
    assert COMMENTED == policy.read_text()


def test_revoke_unknown_name_exits_2_and_changes_nothing(policy: Path) -> None:
    """Revoking a name that is not there: exit 2, file untouched."""
    before = policy.read_bytes()
    code, _, err = token("revoke", "nobody", "--policy", str(policy), check=False)
    assert (2, True, before) == (code, 'no token named "nobody"' in err, policy.read_bytes())


def test_created_token_is_usable_until_revoked(tmp_path: Path) -> None:
    """create then revoke through the config's policy path: the token authenticates, then not."""
    from gateway.auth.policy import Policy

    data = ["--data-dir", str(tmp_path / "data")]
    _, out, _ = token("create", "ci", "--write", "ci", *data)
    path = tmp_path / "data" / "policy.toml"
    now = datetime.now(UTC)
    first: Policy = load_policy(path)
    token("revoke", "ci", *data)
    assert ("ci", "unknown") == (
        getattr(first.authenticate(out.strip(), now), "name", None),
        load_policy(path).authenticate(out.strip(), now),
    )
