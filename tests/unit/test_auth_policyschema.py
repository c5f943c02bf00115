"""Unit tests for gateway.auth.policyschema (field rules) and the pure token helpers."""

from __future__ import annotations

import base64
import hashlib
import re
from datetime import UTC, date, datetime, time, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.auth.policy import TokenEntry, token_digest
from gateway.auth.policyfile import generate_token, hash_token
from gateway.auth.policyschema import (
    check_expires,
    check_name,
    check_patterns,
    check_rate_limit,
    parse_hash,
    policy_from_document,
)
from gateway.errors import PolicyError

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_generate_token_shape() -> None:
    """A token is igw_ and 43 url-safe base64 characters (32 bytes, unpadded)."""
    token = generate_token()
    assert re.fullmatch(r"igw_[A-Za-z0-9_-]{43}", token) is not None


def test_generate_token_carries_32_random_bytes() -> None:
    """The part after igw_ decodes to 32 bytes."""
    assert 32 == len(base64.urlsafe_b64decode(generate_token()[4:] + "="))


def test_generate_token_is_fresh_each_time() -> None:
    """Two calls never give the same token."""
    assert 100 == len({generate_token() for _ in range(100)})


def test_hash_token_format() -> None:
    """hash_token is sha256: and the hex digest of the token."""
    assert "sha256:" + hashlib.sha256(b"igw_x").hexdigest() == hash_token("igw_x")


@given(token=st.text(min_size=1))
def test_hash_token_authenticates_round_trip(token: str) -> None:
    """Any token, stored as hash_token(token), authenticates as its entry."""
    policy = policy_from_document({"tokens": [{"name": "t", "hash": hash_token(token)}]}, "p")
    result = policy.authenticate(token, NOW)
    assert "t" == (result.name if isinstance(result, TokenEntry) else result)


def test_parse_hash_accepts_uppercase_hex() -> None:
    """Hex digits are case-insensitive."""
    assert token_digest("x") == parse_hash(hash_token("x").upper().replace("SHA256", "sha256"))


@pytest.mark.parametrize(
    "value",
    [
        "",
        "sha256:",
        "sha256:" + "0" * 63,
        "sha256:" + "0" * 65,
        "md5:" + "0" * 64,
        "0" * 64,
        "sha256:" + "g" * 64,
        "igw_the-token-itself",
    ],
)
def test_parse_hash_refuses(value: str) -> None:
    """Anything but sha256: and 64 hex digits is refused."""
    with pytest.raises(ValueError, match="64 hex digits"):
        parse_hash(value)


def test_parse_hash_does_not_echo_value() -> None:
    """A token pasted where the hash belongs does not appear in the message."""
    token = generate_token()
    with pytest.raises(ValueError) as caught:
        parse_hash(token)
    assert token[4:] not in str(caught.value)


@pytest.mark.parametrize("name", ["a", "A" * 64, "telegraf-edge", "ci.bot_1", "team@ci", "0x"])
def test_check_name_accepts(name: str) -> None:
    """Names of 1-64 characters of A-Za-z0-9_.@- starting alphanumeric are accepted."""
    assert name == check_name(name)


@pytest.mark.parametrize("name", ["", "A" * 65, "-lead", ".hidden", "has space", "tab\t", "é"])
def test_check_name_refuses(name: str) -> None:
    """Empty, long, punctuation-led, whitespace and non-ASCII names are refused."""
    with pytest.raises(ValueError, match="not a valid token name"):
        check_name(name)


def test_check_patterns_gives_tuple() -> None:
    """A list of patterns becomes a tuple, order kept."""
    assert ("b", "a*") == check_patterns(["b", "a*"])


def test_check_patterns_refuses_bare_string() -> None:
    """A string where a list belongs is refused, suggesting the list."""
    with pytest.raises(ValueError, match=r'e\.g\. \["telegraf"\]'):
        check_patterns("telegraf")


@pytest.mark.parametrize("value", [[""], [1], ["a", None], 5, {"a": 1}])
def test_check_patterns_refuses(value: object) -> None:
    """Empty strings, non-strings and non-lists are refused."""
    with pytest.raises(ValueError, match="expected"):
        check_patterns(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (datetime(2027, 6, 30, tzinfo=UTC), datetime(2027, 6, 30, tzinfo=UTC)),
        (datetime(2027, 6, 30), datetime(2027, 6, 30, tzinfo=UTC)),
        (
            datetime(2027, 6, 30, 2, tzinfo=timezone(timedelta(hours=2))),
            datetime(2027, 6, 30, tzinfo=UTC),
        ),
        ("2027-06-30T00:00:00Z", datetime(2027, 6, 30, tzinfo=UTC)),
        ("2027-06-30t00:00:00z", datetime(2027, 6, 30, tzinfo=UTC)),
        ("2027-06-30 02:00:00+02:00", datetime(2027, 6, 30, tzinfo=UTC)),
        ("2027-06-30T00:00:00.5Z", datetime(2027, 6, 30, 0, 0, 0, 500000, tzinfo=UTC)),
    ],
    ids=["utc", "naive-is-utc", "offset", "string-z", "string-lower", "string-offset", "fraction"],
)
def test_check_expires_gives_utc(value: object, expected: datetime) -> None:
    """TOML datetimes and RFC3339 strings become UTC; naive means UTC."""
    result = check_expires(value)
    assert (expected, UTC) == (result, result.tzinfo)


@pytest.mark.parametrize(
    "value",
    [
        date(2027, 6, 30),
        time(12, 0),
        "2027-06-30",
        "2027-06-30T00:00:00",
        "tomorrow",
        "2027-02-30T00:00:00Z",
        1_800_000_000,
        True,
    ],
    ids=["date", "time", "date-string", "no-offset", "word", "feb-30", "int", "bool"],
)
def test_check_expires_refuses(value: object) -> None:
    """Bare dates and times, strings without offset or invalid, and numbers are refused."""
    with pytest.raises(ValueError, match="date-time"):
        check_expires(value)


def test_check_rate_limit_accepts_positive_int() -> None:
    """A positive integer is the rate limit."""
    assert 200_000 == check_rate_limit(200_000)


@pytest.mark.parametrize("value", [0, -1, True, 1.5, "100"])
def test_check_rate_limit_refuses(value: object) -> None:
    """Zero, negatives, booleans, floats and strings are refused."""
    with pytest.raises(ValueError, match="positive integer"):
        check_rate_limit(value)


def test_policy_from_document_defaults() -> None:
    """write and read default to no access; expires and rate_limit to None."""
    policy = policy_from_document({"tokens": [{"name": "t", "hash": hash_token("x")}]}, "p")
    assert ((), (), None, None) == (
        policy.tokens[0].write,
        policy.tokens[0].read,
        policy.tokens[0].expires,
        policy.tokens[0].rate_limit,
    )


def test_policy_from_document_empty() -> None:
    """An empty document is a valid policy with no tokens."""
    assert () == policy_from_document({}, "p").tokens


def test_policy_from_document_error_names_source() -> None:
    """Errors carry the source given, as PolicyError.file."""
    with pytest.raises(PolicyError) as caught:
        policy_from_document({"token": []}, "/etc/igw/policy.toml")
    assert "/etc/igw/policy.toml" == caught.value.file
