"""Where a request carries its token: the Authorization header or the v1 ``u``/``p`` parameters.

Pure functions over header and query values; no I/O, no logging. The token is a secret: it is
never logged and never placed in an exception message by this module.

Accepted forms (SPEC 2.1, 2.2):

- ``Authorization: Token X`` and ``Authorization: Bearer X`` (scheme case-insensitive);
- ``Authorization: Basic base64(user:password)``: the password is the token, or the user name
  when the password is empty (some clients put the token there);
- no Authorization header: query parameter ``p`` is the token (``u`` when ``p`` is empty, the
  same rule as Basic).

A header that is present but malformed (unknown scheme, bad base64, no credentials) yields
``None``; it does not fall back to the query parameters, so a broken client is told so (401)
instead of being authenticated by a different credential than the one it meant to send.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping

_TOKEN_SCHEMES = frozenset({"token", "bearer"})


def extract_token(authorization: str | None, query: Mapping[str, str]) -> str | None:
    """Return the token a request presents, or None when it presents none or a malformed one."""
    if authorization is not None and authorization.strip():
        return _from_authorization(authorization)
    return _user_or_password(query.get("u", ""), query.get("p", ""))


def _from_authorization(header: str) -> str | None:
    parts = header.split(None, 1)
    if len(parts) != 2:
        return None
    scheme, credentials = parts[0].lower(), parts[1].strip()
    if scheme in _TOKEN_SCHEMES:
        return _single_word(credentials)
    if scheme == "basic":
        return _from_basic(credentials)
    return None


def _single_word(credentials: str) -> str | None:
    # A token never contains whitespace; "Bearer a b" is a malformed header, not token "a b".
    if not credentials or len(credentials.split()) != 1:
        return None
    return credentials


def _from_basic(credentials: str) -> str | None:
    encoded = _single_word(credentials)
    if encoded is None:
        return None
    # Some clients drop the "=" padding; restore it rather than reject the request.
    encoded += "=" * (-len(encoded) % 4)
    try:
        decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        # ValueError covers UnicodeDecodeError and non-ASCII characters in the base64 text.
        return None
    user, colon, password = decoded.partition(":")
    if not colon:
        return None
    return _user_or_password(user, password)


def _user_or_password(user: str, password: str) -> str | None:
    """The password is the token; an empty password means the client put the token in the user."""
    return password or user or None
