"""The two gzip codecs (ISA-L through `isal`, and zlib) are interchangeable, and gunzip keeps
its limits with either: same output, same errors, same refusals."""

from __future__ import annotations

import gzip
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.compression import CODEC, ISAL, ZLIB, Codec
from gateway.http.body import BadBody, BodyTooLarge, gunzip_member

assert ISAL is not None, "the test extra installs isal: run .ci/run or pip install -e '.[test]'"
CODECS = [ZLIB, ISAL]


def gunzip(raw: bytes, max_bytes: int, codec: Codec) -> bytes:
    """What a request body inflates to (or BadBody / BodyTooLarge)."""
    return gunzip_member(raw, max_bytes, codec)[0]


bodies = st.binary(max_size=20_000) | st.text(max_size=5_000).map(str.encode)


def test_the_gateway_uses_isal_when_installed() -> None:
    assert CODEC is ISAL


@given(bodies, st.sampled_from([1, 2]))
def test_each_decodes_what_the_other_encodes(data: bytes, level: int) -> None:
    for encoder in CODECS:
        packed = encoder.compress(data, level)
        assert gzip.decompress(packed) == data  # standard gzip
        for decoder in CODECS:
            assert gunzip(packed, 10**6, decoder) == data


@given(st.lists(bodies, min_size=1, max_size=4))
def test_multi_member_bodies(parts: list[bytes]) -> None:
    packed = b"".join(gzip.compress(p) for p in parts)
    for codec in CODECS:
        assert gunzip(packed, 10**6, codec) == b"".join(parts)


@given(st.lists(bodies, min_size=1, max_size=3), st.integers(0, 3))
def test_one_member_is_told_from_several_or_padding(parts: list[bytes], padding: int) -> None:
    """Only a stream of exactly one member, nothing after it, counts as one member: the kind
    every upstream's gzip reader reads whole."""
    packed = b"".join(gzip.compress(p) for p in parts) + b"\0" * padding
    for codec in CODECS:
        data, one_member = gunzip_member(packed, 10**6, codec)
        assert data == b"".join(parts)
        assert one_member == (len(parts) == 1 and padding == 0)


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c.name)
def test_limits_and_damage_are_refused_alike(codec: Codec) -> None:
    bomb = gzip.compress(b"\0" * 5_000_000)
    with pytest.raises(BodyTooLarge):
        gunzip(bomb, 1_000_000, codec)
    assert len(gunzip(bomb, 5_000_000, codec)) == 5_000_000  # exactly at the limit is fine
    whole = gzip.compress(b"cpu v=1 1\n" * 1000)
    with pytest.raises(BadBody, match="truncated"):
        gunzip(whole[:-12], 10**6, codec)
    damaged = whole[:20] + bytes(b ^ 0xFF for b in whole[20:60]) + whole[60:]
    with pytest.raises(BadBody, match="corrupt gzip body"):
        gunzip(damaged, 10**6, codec)
    with pytest.raises(BadBody, match="corrupt gzip body"):
        gunzip(b"not gzip at all", 10**6, codec)
    assert gunzip(whole + b"\0" * 10, 10**6, codec) == b"cpu v=1 1\n" * 1000  # zero padding


@given(st.binary(min_size=1, max_size=2000))
def test_garbage_gets_the_same_verdict_from_both(garbage: bytes) -> None:
    """Arbitrary bytes: both accept with the same output, or both refuse."""
    verdicts = []
    for codec in CODECS:
        try:
            verdicts.append(("ok", gunzip(b"\x1f\x8b\x08\x00" + garbage, 10**6, codec)))
        except (BadBody, BodyTooLarge) as e:
            verdicts.append((type(e).__name__, b""))
    assert verdicts[0][0] == verdicts[1][0] and verdicts[0][1] == verdicts[1][1]


def test_zlib_can_be_forced(monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway import compression

    monkeypatch.setenv("INFLUX_GATEWAY_ZLIB", "1")
    assert compression._isal() is None
    monkeypatch.delenv("INFLUX_GATEWAY_ZLIB")
    assert compression._isal() is not None
    assert zlib.decompress(ZLIB.compress(b"x"), compression.GZIP_WBITS) == b"x"


@given(st.binary(max_size=20_000), st.integers(0, 2**32 - 1), st.integers(0, 50))
def test_crc32_is_zlibs_function_in_both(data: bytes, start: int, cut: int) -> None:
    """The log's frame checksum: either codec computes zlib.crc32, from any start value and on
    memoryview slices, so logs written with one are read with the other."""
    view = memoryview(data)[min(cut, len(data)) :]
    for codec in CODECS:
        assert codec.crc32(data, start) == zlib.crc32(data, start)
        assert codec.crc32(view, 0) == zlib.crc32(view)


@given(st.lists(bodies, max_size=5))
def test_compressing_parts_is_compressing_their_concatenation(parts: list[bytes]) -> None:
    """A forwarded batch is compressed part by part, never joined: one member, same bytes."""
    for codec in CODECS:
        packed = codec.compress(parts, 1)
        assert gzip.decompress(packed) == b"".join(parts)
        assert gunzip(packed, 10**6, codec) == b"".join(parts)  # one member


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c.name)
def test_the_trailer_size_is_only_a_hint(codec: Codec) -> None:
    """gunzip sizes its first pass by the size the trailer claims (the last member's): a short
    claim (a big member before a small last one) still inflates everything; a bomb claiming
    to be tiny is still refused at the limit, never inflated whole."""
    big, tiny = b"cpu v=1i 1\n" * 50_000, b"mem v=2i 2\n"
    assert gunzip(gzip.compress(big) + gzip.compress(tiny), 10**6, codec) == big + tiny
    assert gunzip(gzip.compress(tiny) + gzip.compress(big), 10**6, codec) == tiny + big
    bomb = bytearray(gzip.compress(b"\0" * 5_000_000))
    bomb[-4:] = (10).to_bytes(4, "little")  # claims 10 bytes
    with pytest.raises(BodyTooLarge):
        gunzip(bytes(bomb), 1_000_000, codec)
    with pytest.raises(BadBody, match="corrupt"):  # under the limit: the claim is checked
        gunzip(bytes(bomb), 10_000_000, codec)


@given(st.binary(max_size=5_000), st.integers(0, 2**32 - 1))
def test_a_wrong_trailer_size_is_refused_by_both(data: bytes, claimed: int) -> None:
    """Any other size in the trailer: both codecs refuse the body (or, when the claim is
    right, both return it), whatever the first pass was sized by."""
    packed = bytearray(gzip.compress(data))
    packed[-4:] = claimed.to_bytes(4, "little")
    for codec in CODECS:
        if claimed == len(data):
            assert gunzip(bytes(packed), 10**6, codec) == data
        else:
            with pytest.raises(BadBody):
                gunzip(bytes(packed), 10**6, codec)
