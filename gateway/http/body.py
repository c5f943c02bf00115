"""Request bodies: read with a size and time limit, decode Content-Encoding with a size cap."""

from __future__ import annotations

from gateway import compression
from gateway.compression import Codec


class BodyTooLarge(Exception):
    """The body (raw or decompressed) is above the configured limit."""


class BadBody(Exception):
    """The body cannot be decoded: unknown encoding or corrupt gzip stream."""


def check_encoding(header: str | None) -> str:
    """The normalized Content-Encoding ("gzip" or "identity"), or BadBody naming the value."""
    value = (header or "identity").strip().lower()
    if value in ("", "identity"):
        return "identity"
    if value in ("gzip", "x-gzip"):
        return "gzip"
    raise BadBody(f"unacceptable content-encoding: {header}")


def gunzip_member(raw: bytes, max_bytes: int, codec: Codec | None = None) -> tuple[bytes, bool]:
    """Decompress a (possibly multi-member) gzip body, refusing output above max_bytes; and
    whether it is exactly one gzip member (compression.gunzip_member)."""
    try:
        return compression.gunzip_member(raw, max_bytes, codec)
    except compression.InflatedTooLarge as e:
        raise BodyTooLarge(str(e)) from None
    except compression.CorruptGzip as e:
        raise BadBody(str(e)) from None
