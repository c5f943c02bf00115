"""Unit tests for gateway.auth.credentials: which token a request presents."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.auth.credentials import extract_token

TOKEN = "igw_abc-DEF_123"


def basic(user: str, password: str) -> str:
    """An Authorization value for HTTP Basic with these credentials."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


@pytest.mark.parametrize(
    "header",
    [
        f"Token {TOKEN}",
        f"Bearer {TOKEN}",
        f"token {TOKEN}",
        f"BEARER {TOKEN}",
        f"tOkEn {TOKEN}",
        f"  Token   {TOKEN}  ",
        f"Bearer\t{TOKEN}",
    ],
)
def test_token_and_bearer_schemes_are_equivalent(header: str) -> None:
    """Token and Bearer, in any case and with surrounding whitespace, yield the token."""
    assert TOKEN == extract_token(header, {})


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (basic("telegraf", TOKEN), TOKEN),
        (basic("", TOKEN), TOKEN),
        (basic(TOKEN, ""), TOKEN),
        (basic("user", "pass:with:colons"), "pass:with:colons"),
        ("basic " + basic("u", TOKEN).split()[1], TOKEN),
        ("Basic " + basic("u", TOKEN).split()[1].rstrip("="), TOKEN),
    ],
    ids=["password", "no-user", "token-in-user", "colons", "lowercase", "no-padding"],
)
def test_basic_password_is_the_token(header: str, expected: str) -> None:
    """Basic: the password is the token, or the user name when the password is empty."""
    assert expected == extract_token(header, {})


@pytest.mark.parametrize(
    "header",
    [
        "Token",
        "Bearer ",
        "Bearer a b",
        "Digest abc",
        "igw_bare-token-without-scheme",
        "Basic !!!not-base64!!!",
        "Basic " + base64.b64encode(b"no-colon").decode(),
        "Basic " + base64.b64encode(b":").decode(),
        "Basic " + base64.b64encode(b"\xff\xfe:\xff").decode(),
        "Basic \u00e9\u00e9\u00e9\u00e9",
        "Basic",
    ],
)
def test_malformed_header_yields_none(header: str) -> None:
    """An unknown scheme, bad base64, bad UTF-8 or missing credentials yields None."""
    assert None is extract_token(header, {})


def test_malformed_header_does_not_fall_back_to_query() -> None:
    """A present but malformed header is not rescued by the u/p parameters."""
    assert None is extract_token("Digest abc", {"p": TOKEN})


def test_v1_password_parameter_is_the_token() -> None:
    """Without a header, query parameter p is the token."""
    assert TOKEN == extract_token(None, {"u": "telegraf", "p": TOKEN})


def test_v1_user_parameter_is_the_token_when_password_empty() -> None:
    """Without a header and with an empty p, u is the token (the same rule as Basic)."""
    assert TOKEN == extract_token(None, {"u": TOKEN, "p": ""})


def test_blank_header_counts_as_absent() -> None:
    """An empty Authorization header lets the u/p parameters speak."""
    assert TOKEN == extract_token("  ", {"p": TOKEN})


def test_header_beats_query() -> None:
    """When both are present, the Authorization header wins over p."""
    assert TOKEN == extract_token(f"Token {TOKEN}", {"p": "igw_other"})


def test_nothing_presented_yields_none() -> None:
    """No header and no u/p parameters: no token."""
    assert None is extract_token(None, {"db": "mydb"})


@given(header=st.one_of(st.none(), st.text()), query=st.dictionaries(st.text(), st.text()))
def test_never_raises_on_arbitrary_input(header: str | None, query: dict[str, str]) -> None:
    """Any header text and any query parameters give a str or None, never an exception."""
    assert isinstance(extract_token(header, query), str | None)


@given(token=st.text(alphabet=st.characters(blacklist_categories=("Z", "C")), min_size=1))
def test_bearer_round_trips_any_single_word(token: str) -> None:
    """Any token without whitespace survives the Bearer scheme unchanged."""
    assert token == extract_token(f"Bearer {token}", {})


@given(token=st.text(alphabet=st.characters(codec="utf-8"), min_size=1))
def test_basic_round_trips_any_password(token: str) -> None:
    """Any encodable password, colons included, survives Basic encoding unchanged."""
    header = basic("user", token)
    assert token == extract_token(header, {})
