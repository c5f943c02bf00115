"""Component tests for gateway.auth.policyfile: loading, creating and editing real files."""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.auth import policyfile
from gateway.auth.policy import Policy, TokenEntry
from gateway.auth.policyfile import (
    add_token,
    atomic_write,
    create_default_policy,
    hash_token,
    load_policy,
    policy_mtime,
    remove_token,
)
from gateway.errors import PolicyError

NOW = datetime(2026, 1, 1, tzinfo=UTC)
HASH_A = hash_token("igw_a")
HASH_B = hash_token("igw_b")
HASH_C = hash_token("igw_c")

COMMENTED = f"""\
# Production policy: owned by the platform team.

[[tokens]]
# Telegraf on the edge nodes.
name = "telegraf"   # rotated yearly
hash = "{HASH_A}"
write = ["telegraf", "edge_*"]
read = ["telegraf"]

# The CI token below is temporary.
[[tokens]]
name = "ci"
hash = "{HASH_B}"
write = [
  "ci",
  # staging too
  "ci_staging",
]
expires = 2027-06-30T00:00:00Z

# Grafana reads everything.
[[tokens]]
name = "grafana"
hash = "{HASH_C}"
read = ["*"]
"""


@pytest.fixture(name="policy_path")
def fixture_policy_path(tmp_path: Path) -> Path:
    """Where a test's policy file lives (not created)."""
    return tmp_path / "policy.toml"


@pytest.fixture(name="write_policy")
def fixture_write_policy(policy_path: Path) -> Callable[[str], Path]:
    """Write policy text to the test's policy file and return its path."""

    def write(text: str) -> Path:
        policy_path.write_text(text, encoding="utf-8")
        return policy_path

    return write


@pytest.fixture(name="commented")
def fixture_commented(write_policy: Callable[[str], Path]) -> Path:
    """A policy file with three tokens and comments everywhere a human puts them."""
    return write_policy(COMMENTED)


def error_of(path: Path) -> str:
    """The message of the PolicyError that loading ``path`` raises."""
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    return str(caught.value)


def entry_text(name: str, key_values: str = "") -> str:
    """One [[tokens]] table with a valid hash and extra key lines."""
    return f'[[tokens]]\nname = "{name}"\nhash = "{hash_token(name)}"\n{key_values}'


def names(policy: Policy) -> list[str]:
    """The token names of a policy, in file order."""
    return [entry.name for entry in policy.tokens]


def leftovers(directory: Path) -> list[str]:
    """Files in ``directory`` other than policy.toml (temp files would show up here)."""
    return sorted(p.name for p in directory.iterdir() if p.name != "policy.toml")


# --------------------------------------------------------------------------------- load


def test_load_full_entry(write_policy: Callable[[str], Path]) -> None:
    """Every key of an entry is loaded into the TokenEntry."""
    path = write_policy(
        entry_text(
            "telegraf-edge",
            'write = ["telegraf", "edge_*"]\nread = ["telegraf"]\n'
            "expires = 2027-06-30T00:00:00Z\nrate_limit = 200000\n",
        )
    )
    token = load_policy(path).tokens[0]
    assert (
        "telegraf-edge",
        ("telegraf", "edge_*"),
        ("telegraf",),
        datetime(2027, 6, 30, tzinfo=UTC),
        200_000,
    ) == (token.name, token.write, token.read, token.expires, token.rate_limit)


def test_load_records_source(commented: Path) -> None:
    """The policy remembers the file it came from."""
    assert str(commented) == load_policy(commented).source


def test_load_commented_file(commented: Path) -> None:
    """Comments anywhere, multi-line arrays and datetimes load."""
    assert ["telegraf", "ci", "grafana"] == names(load_policy(commented))


def test_load_empty_file(write_policy: Callable[[str], Path]) -> None:
    """An empty file is a valid policy with no tokens (nobody can write)."""
    assert () == load_policy(write_policy("")).tokens


def test_load_comments_only(write_policy: Callable[[str], Path]) -> None:
    """A file of comments is a valid policy with no tokens."""
    assert () == load_policy(write_policy("# nobody yet\n")).tokens


def test_load_naive_datetime_is_utc(write_policy: Callable[[str], Path]) -> None:
    """A TOML local datetime in expires is taken as UTC."""
    path = write_policy(entry_text("t", "expires = 2027-06-30T12:00:00\n"))
    assert datetime(2027, 6, 30, 12, tzinfo=UTC) == load_policy(path).tokens[0].expires


def test_load_rfc3339_string_expiry(write_policy: Callable[[str], Path]) -> None:
    """An RFC3339 string in expires is accepted and converted to UTC."""
    path = write_policy(entry_text("t", 'expires = "2027-06-30T02:00:00+02:00"\n'))
    assert datetime(2027, 6, 30, tzinfo=UTC) == load_policy(path).tokens[0].expires


def test_loaded_token_authenticates(commented: Path) -> None:
    """A token whose hash is in the file authenticates as its entry."""
    result = load_policy(commented).authenticate("igw_b", NOW)
    assert "ci" == (result.name if isinstance(result, TokenEntry) else result)


def test_error_missing_file(policy_path: Path) -> None:
    """A missing file is an error naming the file."""
    assert f"{policy_path}: policy file does not exist" == error_of(policy_path)


def test_error_unreadable_file(tmp_path: Path) -> None:
    """A path that cannot be read as a file is an error naming the file and the reason."""
    assert f"{tmp_path}: cannot read policy file: Is a directory" == error_of(tmp_path)


def test_error_not_utf8(policy_path: Path) -> None:
    """A file that is not UTF-8 is an error naming the file."""
    policy_path.write_bytes(b"# caf\xe9\n")
    assert f"{policy_path}: not UTF-8 text (byte 5)" == error_of(policy_path)


def test_error_toml_syntax_names_line(write_policy: Callable[[str], Path]) -> None:
    """A TOML syntax error names the file and the line."""
    message = error_of(write_policy('[[tokens]]\nname = "a"\nhash = \n'))
    assert "invalid TOML" in message and "line 3" in message and "policy.toml" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f'[[tokens]]\nhash = "{HASH_A}"\n', 'tokens entry #1: key "name": missing'),
        ('[[tokens]]\nname = "a"\n', 'tokens entry #1 ("a"): key "hash": missing'),
        (
            entry_text("a") + entry_text("b", "wirte = []\n"),
            'tokens entry #2 ("b"): key "wirte": unknown key (did you mean "write"?)',
        ),
        (
            entry_text("a", "scope = 1\n"),
            'tokens entry #1 ("a"): key "scope": unknown key (allowed',
        ),
        (
            entry_text("a") + entry_text("a"),
            'tokens entry #2 ("a"): key "name": duplicate of tokens entry #1',
        ),
        (
            entry_text("a") + f'[[tokens]]\nname = "b"\nhash = "{hash_token("a")}"\n',
            'tokens entry #2 ("b"): key "hash": same hash as tokens entry #1',
        ),
        (
            '[[tokens]]\nname = "a"\nhash = "sha256:abc"\n',
            'tokens entry #1 ("a"): key "hash": expected "sha256:" followed by 64 hex digits',
        ),
        (
            f'[[tokens]]\nname = 7\nhash = "{HASH_A}"\n',
            'tokens entry #1: key "name": expected a string',
        ),
        (
            f'[[tokens]]\nname = "has space"\nhash = "{HASH_A}"\n',
            'tokens entry #1 ("has space"): key "name": "has space" is not a valid token name',
        ),
        (
            '[[tokens]]\nname = "a"\nhash = 1\n',
            'tokens entry #1 ("a"): key "hash": expected a string',
        ),
        (entry_text("a", 'write = "db"\n'), 'tokens entry #1 ("a"): key "write": expected a list'),
        (entry_text("a", "read = [1]\n"), 'tokens entry #1 ("a"): key "read": item 1: expected a'),
        (
            entry_text("a", "expires = 2027-06-30\n"),
            'tokens entry #1 ("a"): key "expires": expected a date-time',
        ),
        (
            entry_text("a", 'expires = "next week"\n'),
            'tokens entry #1 ("a"): key "expires": "next week" is not an RFC3339 date-time',
        ),
        (
            entry_text("a", "rate_limit = 0\n"),
            'tokens entry #1 ("a"): key "rate_limit": expected a',
        ),
        (entry_text("a", "rate_limit = -5\n"), "positive integer (lines per second), not -5"),
        (entry_text("a", "rate_limit = 1.5\n"), 'key "rate_limit": expected a positive integer'),
        (
            entry_text("a", 'rate_limit = "10"\n'),
            "positive integer (lines per second), not a string",
        ),
        ('tokens = "all"\n', 'key "tokens": expected [[tokens]] tables, not a string'),
        ("tokens = [1]\n", "tokens entry #1: expected a table, not an integer"),
        ("[[token]]\n", 'unknown top-level key "token" (did you mean "tokens"?)'),
        ("[server]\n", 'unknown top-level key "server"'),
    ],
    ids=[
        "no-name",
        "no-hash",
        "typo",
        "unknown-key",
        "duplicate-name",
        "duplicate-hash",
        "bad-hash",
        "name-type",
        "name-chars",
        "hash-type",
        "write-string",
        "read-item",
        "bare-date",
        "bad-string-date",
        "rate-zero",
        "rate-negative",
        "rate-float",
        "rate-string",
        "tokens-type",
        "entry-type",
        "top-typo",
        "top-unknown",
    ],
)
def test_error_names_file_entry_and_key(
    write_policy: Callable[[str], Path], text: str, expected: str
) -> None:
    """Each problem is a PolicyError that starts with the file and names entry and key."""
    path = write_policy(text)
    message = error_of(path)
    assert (True, True) == (message.startswith(f"{path}: "), expected in message), message


def test_error_does_not_echo_pasted_token(write_policy: Callable[[str], Path]) -> None:
    """A token pasted into hash does not appear in the error message."""
    secret = "igw_4kKw5ZyJzjbY8Qa6WZVh7JrY-JwhOEAdAwf3vBwH7ao"
    message = error_of(write_policy(f'[[tokens]]\nname = "a"\nhash = "{secret}"\n'))
    assert secret not in message


# --------------------------------------------------------------------------- atomic write


def test_atomic_write_writes_data(policy_path: Path) -> None:
    """The file holds exactly the data written."""
    atomic_write(policy_path, b"data")
    assert b"data" == policy_path.read_bytes()


def test_atomic_write_mode_0600(policy_path: Path) -> None:
    """By default the file is mode 0600, whatever the umask."""
    atomic_write(policy_path, b"data")
    assert 0o600 == stat.S_IMODE(policy_path.stat().st_mode)


def test_atomic_write_custom_mode(policy_path: Path) -> None:
    """An explicit mode is applied."""
    atomic_write(policy_path, b"data", 0o640)
    assert 0o640 == stat.S_IMODE(policy_path.stat().st_mode)


def test_atomic_write_replaces(policy_path: Path) -> None:
    """An existing file is replaced by a new inode (readers never see a partial file)."""
    policy_path.write_bytes(b"old")
    old_inode = policy_path.stat().st_ino
    atomic_write(policy_path, b"new")
    assert (b"new", True) == (policy_path.read_bytes(), old_inode != policy_path.stat().st_ino)


def test_atomic_write_leaves_no_temp_files(policy_path: Path) -> None:
    """After several writes only the target file is in the directory."""
    for n in range(3):
        atomic_write(policy_path, str(n).encode())
    assert [] == leftovers(policy_path.parent)


def test_atomic_write_failure_keeps_old_file_and_no_temp(policy_path: Path) -> None:
    """A write that fails midway leaves the old file and no temp file behind."""
    policy_path.write_bytes(b"old")
    with pytest.raises(TypeError):
        atomic_write(policy_path, "not bytes")  # type: ignore[arg-type]
    assert (b"old", []) == (policy_path.read_bytes(), leftovers(policy_path.parent))


def test_atomic_write_without_overwrite_refuses_existing(policy_path: Path) -> None:
    """overwrite=False raises FileExistsError and keeps the existing file."""
    policy_path.write_bytes(b"old")
    with pytest.raises(FileExistsError):
        atomic_write(policy_path, b"new", overwrite=False)
    assert (b"old", []) == (policy_path.read_bytes(), leftovers(policy_path.parent))


def test_policy_mtime_missing(policy_path: Path) -> None:
    """A missing file has no modification time."""
    assert None is policy_mtime(policy_path)


def test_policy_mtime_existing(commented: Path) -> None:
    """An existing file's modification time is its stat mtime."""
    assert commented.stat().st_mtime == policy_mtime(commented)


# ----------------------------------------------------------------------- default policy


def test_default_policy_token_writes_and_reads_anything(tmp_path: Path) -> None:
    """The returned token authenticates as admin with write and read on any database."""
    path = tmp_path / "data" / "policy.toml"
    token = create_default_policy(path)
    admin = load_policy(path).authenticate(token, NOW)
    assert isinstance(admin, TokenEntry)
    assert ("admin", True, True) == (
        admin.name,
        admin.may_write("any/db_name"),
        admin.may_read("other"),
    )


def test_default_policy_is_mode_0600(policy_path: Path) -> None:
    """The created file is readable by its owner only."""
    create_default_policy(policy_path)
    assert 0o600 == stat.S_IMODE(policy_path.stat().st_mode)


def test_default_policy_is_commented(policy_path: Path) -> None:
    """The created file explains itself to the operator who opens it."""
    create_default_policy(policy_path)
    assert policy_path.read_text().startswith("# influx-gateway token policy.")


def test_default_policy_does_not_store_token(policy_path: Path) -> None:
    """The file holds the token's hash, not the token."""
    token = create_default_policy(policy_path)
    assert token not in policy_path.read_text()


def test_default_policy_refuses_to_overwrite(commented: Path) -> None:
    """An existing file is a PolicyError and keeps its content."""
    with pytest.raises(PolicyError, match="already exists"):
        create_default_policy(commented)
    assert (COMMENTED, []) == (commented.read_text(), leftovers(commented.parent))


# ---------------------------------------------------------------------------- add token


def test_add_token_creates_missing_file(tmp_path: Path) -> None:
    """Adding to a missing file creates it (and its directory) with the one token."""
    path = tmp_path / "new" / "policy.toml"
    token = add_token(path, "ci", write=["ci"], read=[], expires=None)
    result = load_policy(path).authenticate(token, NOW)
    assert ("ci", 0o600) == (
        result.name if isinstance(result, TokenEntry) else result,
        stat.S_IMODE(path.stat().st_mode),
    )


def test_add_token_keeps_existing_text(commented: Path) -> None:
    """The old file is kept byte for byte; the new entry is appended after it."""
    add_token(commented, "new", write=["x"], read=[], expires=None)
    assert commented.read_text().startswith(COMMENTED)


def test_add_token_keeps_other_entries(commented: Path) -> None:
    """Every existing entry is still there, followed by the new one."""
    add_token(commented, "new", write=["x"], read=[], expires=None)
    assert ["telegraf", "ci", "grafana", "new"] == names(load_policy(commented))


def test_add_token_stores_scopes_and_limits(commented: Path) -> None:
    """write, read, expires and rate_limit are stored as given."""
    add_token(
        commented,
        "new",
        write=["a", "b_*"],
        read=["c"],
        expires=datetime(2027, 6, 30, tzinfo=UTC),
        rate_limit=500,
    )
    token = load_policy(commented).tokens[-1]
    assert (("a", "b_*"), ("c",), datetime(2027, 6, 30, tzinfo=UTC), 500) == (
        token.write,
        token.read,
        token.expires,
        token.rate_limit,
    )


def test_add_token_stores_expires_as_toml_datetime(commented: Path) -> None:
    """expires is written as a TOML datetime in UTC, not a string."""
    add_token(commented, "new", write=[], read=[], expires=datetime(2027, 6, 30, tzinfo=UTC))
    assert "expires = 2027-06-30T00:00:00Z\n" in commented.read_text().split('name = "new"')[1]


def test_add_token_naive_expires_is_utc(commented: Path) -> None:
    """A naive expires is taken as UTC, as in the file."""
    add_token(commented, "new", write=[], read=[], expires=datetime(2027, 6, 30))
    assert datetime(2027, 6, 30, tzinfo=UTC) == load_policy(commented).tokens[-1].expires


def test_add_token_does_not_store_token(commented: Path) -> None:
    """The new token itself is not in the file."""
    token = add_token(commented, "new", write=[], read=[], expires=None)
    assert token not in commented.read_text()


def test_add_token_existing_name_changes_nothing(commented: Path) -> None:
    """An existing name is a PolicyError; the file is the same file with the same bytes."""
    before = commented.stat()
    with pytest.raises(PolicyError, match='a token named "ci" already exists'):
        add_token(commented, "ci", write=["x"], read=[], expires=None)
    after = commented.stat()
    assert (COMMENTED, before.st_ino, before.st_mtime_ns) == (
        commented.read_text(),
        after.st_ino,
        after.st_mtime_ns,
    )


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"name": "bad name"}, 'cannot add token: key "name": "bad name" is not a valid token'),
        ({"write": [""]}, 'cannot add token: key "write": item 1: expected a non-empty string'),
        ({"read": "db"}, 'cannot add token: key "read": expected a list of database patterns'),
        ({"rate_limit": 0}, 'cannot add token: key "rate_limit": expected a positive integer'),
    ],
    ids=["name", "pattern", "string-scope", "rate-limit"],
)
def test_add_token_refuses_invalid_values(
    commented: Path, kwargs: dict[str, object], expected: str
) -> None:
    """Invalid arguments are a PolicyError naming the problem; the file is unchanged."""
    arguments: dict[str, object] = {"name": "new", "write": [], "read": [], "expires": None}
    arguments.update(kwargs)
    with pytest.raises(PolicyError, match=expected):
        add_token(commented, **arguments)  # type: ignore[arg-type]
    assert COMMENTED == commented.read_text()


def test_add_token_refuses_invalid_file(write_policy: Callable[[str], Path]) -> None:
    """An existing file that does not load is not edited."""
    path = write_policy(f'[[tokens]]\nname = 1\nhash = "{HASH_A}"\n')
    with pytest.raises(PolicyError, match='key "name"'):
        add_token(path, "new", write=[], read=[], expires=None)
    assert f'[[tokens]]\nname = 1\nhash = "{HASH_A}"\n' == path.read_text()


def test_add_token_never_writes_an_unintended_file(
    commented: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If an edit would not yield exactly the intended tokens, nothing is written."""
    monkeypatch.setattr(policyfile, "_append_entry", lambda text, values: text)
    with pytest.raises(PolicyError, match="could not edit the policy file safely"):
        add_token(commented, "new", write=[], read=[], expires=None)
    assert COMMENTED == commented.read_text()


def test_add_token_to_inline_array(write_policy: Callable[[str], Path]) -> None:
    """A file that writes tokens as an inline array gets the entry in that array."""
    path = write_policy(f'tokens = [{{name = "a", hash = "{HASH_A}"}}]  # inline\n')
    add_token(path, "b", write=["b"], read=[], expires=None)
    assert (["a", "b"], True) == (names(load_policy(path)), "# inline" in path.read_text())


def test_add_token_keeps_crlf_line_endings(write_policy: Callable[[str], Path]) -> None:
    """A file with CRLF line endings gets a CRLF entry."""
    path = write_policy(entry_text("a").replace("\n", "\r\n"))
    add_token(path, "b", write=[], read=[], expires=None)
    assert b"\n" not in path.read_bytes().replace(b"\r\n", b"")


def test_add_token_concurrently(commented: Path) -> None:
    """Concurrent adds are serialised: every token ends up in the file."""
    errors: list[BaseException] = []

    def add(name: str) -> None:
        try:
            add_token(commented, name, write=[], read=[], expires=None)
        except BaseException as exc:  # the assertion below reports it
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(f"t{n}",)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert ([], {f"t{n}" for n in range(8)}) == (
        errors,
        set(names(load_policy(commented))) - {"telegraf", "ci", "grafana"},
    )


# ------------------------------------------------------------------------- remove token


def test_remove_middle_token_keeps_everything_else(commented: Path) -> None:
    """Removing ci cuts exactly its table; every comment outside it stays."""
    remove_token(commented, "ci")
    expected = COMMENTED.replace(
        f'[[tokens]]\nname = "ci"\nhash = "{HASH_B}"\nwrite = [\n  "ci",\n  # staging too\n'
        '  "ci_staging",\n]\nexpires = 2027-06-30T00:00:00Z\n',
        "",
    )
    assert expected == commented.read_text()


def test_remove_first_token_keeps_header_comment(commented: Path) -> None:
    """Removing the first entry keeps the file's header comment and the others."""
    remove_token(commented, "telegraf")
    text = commented.read_text()
    assert (True, ["ci", "grafana"], False) == (
        text.startswith("# Production policy: owned by the platform team.\n\n"),
        names(load_policy(commented)),
        "rotated yearly" in text,
    )


def test_remove_last_token(commented: Path) -> None:
    """Removing the last entry leaves the others and ends the file cleanly."""
    remove_token(commented, "grafana")
    text = commented.read_text()
    assert (["telegraf", "ci"], True) == (
        names(load_policy(commented)),
        text.endswith("# Grafana reads everything.\n"),
    )


def test_remove_every_token_leaves_valid_empty_policy(commented: Path) -> None:
    """After removing all entries the file loads as a policy with no tokens, comments kept."""
    for name in ("ci", "telegraf", "grafana"):
        remove_token(commented, name)
    assert ((), True) == (
        load_policy(commented).tokens,
        commented.read_text().startswith("# Production policy"),
    )


def test_remove_unknown_name_changes_nothing(commented: Path) -> None:
    """Removing a name that is not there is a PolicyError; the file is untouched."""
    with pytest.raises(PolicyError, match='no token named "nobody"'):
        remove_token(commented, "nobody")
    assert COMMENTED == commented.read_text()


def test_remove_from_missing_file(policy_path: Path) -> None:
    """Removing from a missing file is a PolicyError naming the file."""
    with pytest.raises(PolicyError, match="does not exist"):
        remove_token(policy_path, "ci")


def test_remove_keeps_mode_0600(commented: Path) -> None:
    """The rewritten file is mode 0600."""
    os.chmod(commented, 0o644)
    remove_token(commented, "ci")
    assert 0o600 == stat.S_IMODE(commented.stat().st_mode)


def test_remove_from_inline_array(write_policy: Callable[[str], Path]) -> None:
    """An entry of an inline tokens array is removed from that array."""
    path = write_policy(
        f'tokens = [{{name = "a", hash = "{HASH_A}"}}, {{name = "b", hash = "{HASH_B}"}}]\n'
    )
    remove_token(path, "a")
    assert ["b"] == names(load_policy(path))


def test_remove_where_header_appears_inside_a_string(write_policy: Callable[[str], Path]) -> None:
    """A [[tokens]] line inside a multi-line string does not confuse the edit."""
    path = write_policy(
        entry_text("a", 'write = ["""\n[[tokens]]\n"""]\n') + "\n" + entry_text("b")
    )
    remove_token(path, "b")
    assert (["a"], ("[[tokens]]\n",)) == (
        names(load_policy(path)),
        load_policy(path).tokens[0].write,
    )


def test_add_then_remove_restores_file(commented: Path) -> None:
    """token create then token revoke gives back the original bytes."""
    add_token(commented, "temp", write=["x"], read=[], expires=None, rate_limit=5)
    remove_token(commented, "temp")
    assert COMMENTED == commented.read_text()


def test_edits_leave_no_temp_files(commented: Path) -> None:
    """After adds and removes only the policy file is in the directory."""
    add_token(commented, "temp", write=[], read=[], expires=None)
    remove_token(commented, "temp")
    assert [] == leftovers(commented.parent)
