"""The policy file schema (SPEC 4): a parsed TOML document in, a ``Policy`` or a PolicyError out.

Pure: no file access. ``policyfile`` reads and writes the file; this module decides whether its
content is a valid policy, and says exactly where it is not (entry number, name and key). The
same field rules check the arguments of ``token create``.

Choices where SPEC 4 is silent:

- a naive (local) TOML datetime in ``expires`` is taken as UTC; a bare date or time is refused
  because "expires on 2027-06-30" could mean its start or its end;
- ``write`` and ``read`` default to ``[]`` (no access) when absent;
- token names are 1-64 characters of ``A-Za-z0-9_.@-`` starting with a letter or digit: they
  appear in logs, metric labels and buffer records;
- two entries with the same hash are refused: a token must map to exactly one name.

A ``hash`` value is never repeated in a message: someone may have pasted the token itself there.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date, datetime, time
from typing import Any, TypeVar

from gateway.auth.policy import Policy, TokenEntry
from gateway.errors import PolicyError

ENTRY_KEYS = ("name", "hash", "write", "read", "expires", "rate_limit")
TOP_LEVEL_KEYS = ("tokens",)

_HASH = re.compile(r"sha256:([0-9a-fA-F]{64})")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})")
_T = TypeVar("_T")

NAME_RULE = "use 1-64 characters of A-Za-z0-9_.@- starting with a letter or digit"


def quote(value: str) -> str:
    """A value as it would be written in TOML, control characters escaped, for messages."""
    return json.dumps(value, ensure_ascii=False)


def check_name(name: str) -> str:
    """Return ``name`` when it is a valid token name, else raise ValueError saying why."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"{quote(name)} is not a valid token name: {NAME_RULE}")
    return name


def parse_hash(value: str) -> bytes:
    """The raw digest in ``sha256:<64 hex>``; ValueError (without the value) otherwise."""
    found = _HASH.fullmatch(value)
    if found is None:
        raise ValueError(
            'expected "sha256:" followed by 64 hex digits (the hash of the token, never the token)'
        )
    return bytes.fromhex(found.group(1))


def check_patterns(value: object) -> tuple[str, ...]:
    """A list of non-empty database glob patterns, as a tuple; ValueError otherwise."""
    if isinstance(value, str):
        raise ValueError(f"expected a list of database patterns, e.g. [{quote(value)}]")
    if not isinstance(value, Sequence):
        raise ValueError(f"expected a list of database patterns, not {_type_name(value)}")
    patterns: list[str] = []
    for position, pattern in enumerate(value, start=1):
        if not isinstance(pattern, str) or not pattern:
            raise ValueError(f"item {position}: expected a non-empty string")
        patterns.append(pattern)
    return tuple(patterns)


def check_expires(value: object) -> datetime:
    """A UTC datetime from a TOML datetime or an RFC3339 string; naive means UTC."""
    if isinstance(value, str):
        if not _RFC3339.fullmatch(value):
            raise ValueError(
                f"{quote(value)} is not an RFC3339 date-time like 2027-06-30T00:00:00Z"
            )
        try:
            parsed = datetime.fromisoformat(value.upper())
        except ValueError as exc:
            raise ValueError(f"{quote(value)} is not a valid date-time: {exc}") from None
        return parsed.astimezone(UTC)
    if isinstance(value, datetime):
        if value.utcoffset() is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)
    if isinstance(value, date | time):
        raise ValueError("expected a date-time like 2027-06-30T00:00:00Z, not a bare date or time")
    raise ValueError(f"expected a date-time like 2027-06-30T00:00:00Z, not {_type_name(value)}")


def check_rate_limit(value: object) -> int:
    """A positive integer number of lines per second; ValueError otherwise."""
    # bool is an int subclass: `rate_limit = true` must not mean 1 line per second.
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"expected a positive integer (lines per second), not {_type_name(value)}")
    if value <= 0:
        raise ValueError(f"expected a positive integer (lines per second), not {value}")
    return value


def policy_from_document(document: Mapping[str, object], source: str) -> Policy:
    """Check a parsed policy document and build the ``Policy``; PolicyError names what is wrong."""
    for key in document:
        if key not in TOP_LEVEL_KEYS:
            raise PolicyError(
                f"unknown top-level key {quote(key)}{_suggest(key, TOP_LEVEL_KEYS)}"
                ' (the only top-level key is "tokens")',
                file=source,
            )
    tokens = document.get("tokens", [])
    if not isinstance(tokens, list):
        raise PolicyError(
            f'key "tokens": expected [[tokens]] tables, not {_type_name(tokens)}', file=source
        )
    entries: list[TokenEntry] = []
    seen_names: dict[str, int] = {}
    seen_digests: dict[bytes, int] = {}
    for number, raw in enumerate(tokens, start=1):
        entry = _entry(number, raw, source)
        where = _where(number, entry.name)
        if entry.name in seen_names:
            raise PolicyError(
                f'{where}: key "name": duplicate of tokens entry #{seen_names[entry.name]}',
                file=source,
            )
        if entry.digest in seen_digests:
            raise PolicyError(
                f'{where}: key "hash": same hash as tokens entry #{seen_digests[entry.digest]};'
                " every token needs its own entry",
                file=source,
            )
        seen_names[entry.name] = number
        seen_digests[entry.digest] = number
        entries.append(entry)
    return Policy(tokens=tuple(entries), source=source)


def _entry(number: int, raw: object, source: str) -> TokenEntry:
    if not isinstance(raw, dict):
        raise PolicyError(
            f"{_where(number, None)}: expected a table, not {_type_name(raw)}", file=source
        )
    name = raw.get("name")
    return check_entry(raw, _where(number, name if isinstance(name, str) else None), source)


def check_entry(raw: Mapping[str, object], where: str, source: str) -> TokenEntry:
    """One token entry's keys checked and converted; PolicyError names ``where`` and the key."""
    name = raw.get("name")

    def fail(key: str, problem: str) -> PolicyError:
        return PolicyError(f"{where}: key {quote(key)}: {problem}", file=source)

    def checked(key: str, check: Callable[[Any], _T], value: object) -> _T:
        try:
            return check(value)
        except ValueError as exc:
            raise fail(key, str(exc)) from None

    for key in raw:
        if key not in ENTRY_KEYS:
            allowed = ", ".join(ENTRY_KEYS)
            raise fail(key, f"unknown key{_suggest(key, ENTRY_KEYS)} (allowed: {allowed})")
    for required in ("name", "hash"):
        if required not in raw:
            raise fail(required, "missing (every token needs a name and a hash)")
    for text_key in ("name", "hash"):
        if not isinstance(raw[text_key], str):
            raise fail(text_key, f"expected a string, not {_type_name(raw[text_key])}")
    expires = raw.get("expires")
    rate_limit = raw.get("rate_limit")
    return TokenEntry(
        name=checked("name", check_name, name),
        digest=checked("hash", parse_hash, raw["hash"]),
        write=checked("write", check_patterns, raw.get("write", [])),
        read=checked("read", check_patterns, raw.get("read", [])),
        expires=None if expires is None else checked("expires", check_expires, expires),
        rate_limit=None
        if rate_limit is None
        else checked("rate_limit", check_rate_limit, rate_limit),
    )


def _where(number: int, name: str | None) -> str:
    return f"tokens entry #{number}" + (f" ({quote(name)})" if name else "")


def _suggest(key: str, allowed: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1)
    return f" (did you mean {quote(close[0])}?)" if close else ""


def _type_name(value: object) -> str:
    names = {
        bool: "a boolean",
        int: "an integer",
        float: "a float",
        str: "a string",
        list: "a list",
        dict: "a table",
    }
    for kind, label in names.items():
        if isinstance(value, kind):
            return label
    if isinstance(value, datetime | date | time):
        return "a date/time"
    return type(value).__name__
