"""The token policy as values, and the two decisions made with it: who is this, may they do that.

Pure: no file access (``policyfile`` loads and edits the file), no clock (``now`` is passed in).
A token is known only by the SHA-256 digest of its UTF-8 bytes; the token itself is never held.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
from dataclasses import dataclass, field
from datetime import datetime
from fnmatch import translate
from typing import Literal

AuthFailure = Literal["missing", "unknown", "expired"]

DIGEST_SIZE = hashlib.sha256().digest_size


def token_digest(token: str) -> bytes:
    """The raw SHA-256 digest that identifies ``token`` in a policy."""
    # surrogatepass: a header decoded with surrogateescape must hash, not raise.
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


@functools.lru_cache(maxsize=4096)
def _compile_glob(pattern: str) -> re.Pattern[str]:
    """fnmatch.fnmatchcase semantics (``*`` also matches ``/``), compiled once per pattern."""
    return re.compile(translate(pattern))


def _matches_any(patterns: tuple[str, ...], database: str) -> bool:
    return any(_compile_glob(pattern).match(database) for pattern in patterns)


@dataclass(frozen=True, slots=True)
class TokenEntry:
    """One named token: its digest, the databases it may write and read, expiry and rate limit."""

    name: str
    digest: bytes = field(repr=False)  # a hash is not a secret, but it does not belong in logs
    write: tuple[str, ...]
    read: tuple[str, ...]
    expires: datetime | None  # tz-aware
    rate_limit: int | None  # lines per second; enforced by the rate limiter, carried here

    def __post_init__(self) -> None:
        if len(self.digest) != DIGEST_SIZE:
            raise ValueError(f"token {self.name!r}: digest must be {DIGEST_SIZE} bytes")
        if self.expires is not None and self.expires.utcoffset() is None:
            raise ValueError(f"token {self.name!r}: expires must be timezone-aware")

    def may_write(self, database: str) -> bool:
        """True when one of the write patterns matches ``database``."""
        return _matches_any(self.write, database)

    def may_read(self, database: str) -> bool:
        """True when one of the read patterns matches ``database``."""
        return _matches_any(self.read, database)

    def expired(self, now: datetime) -> bool:
        """True from the instant ``expires`` is reached."""
        return self.expires is not None and now >= self.expires


@dataclass(frozen=True, slots=True)
class Policy:
    """Every token the gateway accepts, and where they were loaded from."""

    tokens: tuple[TokenEntry, ...]
    source: str  # the policy file path, for messages
    _by_digest: dict[bytes, TokenEntry] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_digest: dict[bytes, TokenEntry] = {}
        names: set[str] = set()
        for entry in self.tokens:
            if entry.name in names:
                raise ValueError(f"duplicate token name {entry.name!r}")
            if entry.digest in by_digest:
                raise ValueError(
                    f"tokens {by_digest[entry.digest].name!r} and {entry.name!r} have the same hash"
                )
            names.add(entry.name)
            by_digest[entry.digest] = entry
        object.__setattr__(self, "_by_digest", by_digest)

    def authenticate(self, token: str | None, now: datetime) -> TokenEntry | AuthFailure:
        """The entry ``token`` belongs to, or why there is none: missing, unknown or expired."""
        if now.utcoffset() is None:
            raise ValueError("now must be timezone-aware")
        if not token:
            return "missing"
        digest = token_digest(token)
        # The dict finds the candidate by digest (an unkeyed hash of the token, so lookup timing
        # reveals nothing usable about the token); compare_digest confirms it in constant time.
        entry = self._by_digest.get(digest)
        if entry is None or not hmac.compare_digest(entry.digest, digest):
            return "unknown"
        if entry.expired(now):
            return "expired"
        return entry
