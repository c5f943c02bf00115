"""Unit tests for gateway.auth.policy: authentication and write/read decisions."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.auth.policy import Policy, TokenEntry, token_digest

NOW = datetime(2026, 1, 1, tzinfo=UTC)
EXPIRES = datetime(2027, 6, 30, tzinfo=UTC)
TELEGRAF = "igw_telegraf-token"
EXPIRING = "igw_expiring-token"


def entry(
    name: str = "t",
    token: str = TELEGRAF,
    write: tuple[str, ...] = (),
    read: tuple[str, ...] = (),
    expires: datetime | None = None,
) -> TokenEntry:
    """A token entry with defaults for what a test does not care about."""
    return TokenEntry(name, token_digest(token), write, read, expires, None)


@pytest.fixture(name="policy")
def fixture_policy() -> Policy:
    """Two tokens: telegraf (no expiry) and expiring (expires at EXPIRES)."""
    return Policy(
        tokens=(
            entry("telegraf", TELEGRAF, ("telegraf", "edge_*"), ("telegraf",)),
            entry("expiring", EXPIRING, ("*",), ("*",), EXPIRES),
        ),
        source="policy.toml",
    )


def test_token_digest_is_sha256_of_utf8() -> None:
    """The digest is SHA-256 over the token's UTF-8 bytes."""
    assert hashlib.sha256("igw_é".encode()).digest() == token_digest("igw_é")


def test_authenticate_known_token(policy: Policy) -> None:
    """A known, unexpired token authenticates as its entry."""
    assert "telegraf" == _name(policy.authenticate(TELEGRAF, NOW))


@pytest.mark.parametrize("token", [None, ""])
def test_authenticate_missing_token(policy: Policy, token: str | None) -> None:
    """No token or an empty one is "missing"."""
    assert "missing" == policy.authenticate(token, NOW)


def test_authenticate_unknown_token(policy: Policy) -> None:
    """A token that matches no hash is "unknown"."""
    assert "unknown" == policy.authenticate("igw_not-in-the-policy", NOW)


def test_authenticate_is_case_sensitive(policy: Policy) -> None:
    """Tokens are compared exactly: a different case is a different token."""
    assert "unknown" == policy.authenticate(TELEGRAF.upper(), NOW)


def test_authenticate_before_expiry(policy: Policy) -> None:
    """One microsecond before expiry the token still works."""
    assert "expiring" == _name(policy.authenticate(EXPIRING, EXPIRES - timedelta(microseconds=1)))


def test_authenticate_at_expiry(policy: Policy) -> None:
    """At the expiry instant the token is "expired"."""
    assert "expired" == policy.authenticate(EXPIRING, EXPIRES)


def test_authenticate_expiry_compares_instants_across_offsets(policy: Policy) -> None:
    """Expiry compares instants: a clock in another offset sees the same moment."""
    plus_two = EXPIRES.astimezone(timezone(timedelta(hours=2)))
    assert "expired" == policy.authenticate(EXPIRING, plus_two)


def test_authenticate_refuses_naive_now(policy: Policy) -> None:
    """A naive clock is a bug in the caller, reported as such."""
    with pytest.raises(ValueError, match="timezone-aware"):
        policy.authenticate(TELEGRAF, datetime(2026, 1, 1))


def test_empty_policy_knows_nobody() -> None:
    """With no tokens every token is unknown."""
    assert "unknown" == Policy(tokens=(), source="empty.toml").authenticate(TELEGRAF, NOW)


@pytest.mark.parametrize(
    ("patterns", "database", "expected"),
    [
        (("telegraf",), "telegraf", True),
        (("telegraf",), "telegraf2", False),
        (("telegraf",), "Telegraf", False),
        (("edge_*",), "edge_", True),
        (("edge_*",), "edge_paris", True),
        (("edge_*",), "edge_paris/autogen", True),
        (("edge_*",), "core_paris", False),
        (("*",), "any/thing", True),
        (("db/*",), "db/rp", True),
        (("db/*",), "db", False),
        (("db?",), "db1", True),
        (("db?",), "db12", False),
        (("db?",), "db", False),
        (("db[0-9]",), "db7", True),
        (("db[0-9]",), "dbx", False),
        (("db[!0-9]",), "dbx", True),
        (("a", "b*"), "bee", True),
        ((), "anything", False),
    ],
)
def test_may_write_glob(patterns: tuple[str, ...], database: str, expected: bool) -> None:
    """Write patterns use fnmatchcase: * spans /, ? is one character, [..] a class."""
    assert expected is entry(write=patterns).may_write(database)


def test_may_read_uses_read_patterns() -> None:
    """Read permission comes from the read patterns only."""
    token = entry(write=("*",), read=("telegraf",))
    assert (True, False) == (token.may_read("telegraf"), token.may_read("other"))


def test_may_write_ignores_read_patterns() -> None:
    """Write permission comes from the write patterns only."""
    token = entry(write=("telegraf",), read=("*",))
    assert False is token.may_write("other")


def test_entry_repr_hides_digest() -> None:
    """An entry's repr (which may reach a log) does not show the digest."""
    token = entry()
    assert token.digest.hex() not in repr(token) and repr(token.digest) not in repr(token)


def test_entry_refuses_short_digest() -> None:
    """A digest that is not 32 bytes is refused."""
    with pytest.raises(ValueError, match="32 bytes"):
        TokenEntry("t", b"short", (), (), None, None)


def test_entry_refuses_naive_expiry() -> None:
    """A naive expiry is refused by the model (the loader converts it first)."""
    with pytest.raises(ValueError, match="timezone-aware"):
        entry(expires=datetime(2027, 1, 1))


def test_policy_refuses_duplicate_names() -> None:
    """Two entries with one name are refused."""
    with pytest.raises(ValueError, match="duplicate token name"):
        Policy(tokens=(entry("a", "x"), entry("a", "y")), source="p")


def test_policy_refuses_duplicate_digests() -> None:
    """Two entries with one hash are refused: a token belongs to exactly one name."""
    with pytest.raises(ValueError, match="same hash"):
        Policy(tokens=(entry("a", "x"), entry("b", "x")), source="p")


@given(token=st.text(min_size=1), other=st.text(min_size=1))
def test_authenticate_round_trip(token: str, other: str) -> None:
    """Any non-empty token authenticates as its entry; any other token is unknown."""
    policy = Policy(tokens=(entry("only", token),), source="p")
    expected = "only" if other == token else "unknown"
    assert ("only", expected) == (
        _name(policy.authenticate(token, NOW)),
        _name(policy.authenticate(other, NOW)),
    )


def _name(result: TokenEntry | str) -> str:
    return result.name if isinstance(result, TokenEntry) else result
