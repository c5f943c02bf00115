"""Request bodies: read with a size and time limit, decode Content-Encoding with a size cap."""

from __future__ import annotations

from gateway.compression import CODEC, Codec


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


def gunzip(raw: bytes, max_bytes: int, codec: Codec = CODEC) -> bytes:
    """Decompress a (possibly multi-member) gzip body; refuse output above max_bytes."""
    parts: list[bytes] = []
    total = 0
    data = raw
    while True:
        decoder = codec.decompressobj()
        try:
            out = decoder.decompress(data, max_bytes - total + 1)
        except codec.errors as e:
            raise BadBody(f"corrupt gzip body: {e}") from None
        total += len(out)
        if total > max_bytes or decoder.unconsumed_tail:
            raise BodyTooLarge(f"decompressed body is larger than the limit of {max_bytes} bytes")
        parts.append(out)
        if not decoder.eof:
            raise BadBody("corrupt gzip body: unexpected end of stream (truncated)")
        data = decoder.unused_data
        if not data.strip(b"\x00"):
            break
    return parts[0] if len(parts) == 1 else b"".join(parts)
