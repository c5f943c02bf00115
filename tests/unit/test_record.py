"""Record framing: round trips, torn and corrupt streams."""

from __future__ import annotations

import gzip
import zlib
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.buffer.record import (
    FRAME_MAGIC,
    ONE_MEMBER,
    PLACED_MAGIC,
    PREFIX_SIZE,
    STORED_GZIP,
    Record,
    decode_stream,
    encode,
    encode_parts,
    framed,
    next_frame_size,
    place,
    segment_mask,
)
from gateway.errors import CorruptRecordError

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)

plain_records = st.builds(
    Record,
    database=st.text(min_size=1, max_size=64),
    precision=st.sampled_from(["ns", "us", "ms", "s"]),
    received_ns=INT64,
    token=st.text(max_size=40),
    lines=st.integers(min_value=0, max_value=2**32 - 1),
    min_time_ns=INT64,
    max_time_ns=INT64,
    payload=st.binary(max_size=300),
)


@st.composite
def _gzip_bodies(draw: st.DrawFn) -> tuple[Record, bool]:
    """A record whose payload came as a gzip body: one or two members, maybe zero padded; and
    whether that body is exactly one member."""
    record = draw(plain_records)
    cut = draw(st.integers(min_value=0, max_value=len(record.payload)))
    parts = (
        [record.payload[:cut], record.payload[cut:]] if draw(st.booleans()) else [record.payload]
    )
    level = draw(st.sampled_from([1, 6]))
    stored = b"".join(gzip.compress(part, level) for part in parts)
    padding = b"\0" * draw(st.integers(0, 3))
    return replace(record, stored_gzip=stored + padding), len(parts) == 1 and not padding


@st.composite
def _one_member_bodies(draw: st.DrawFn) -> Record:
    """A record whose stream is one gzip member, as the write path stores them."""
    record = draw(plain_records)
    level = draw(st.sampled_from([1, 6]))
    return replace(record, stored_gzip=gzip.compress(record.payload, level))


records = plain_records | _one_member_bodies()


def _old_frame(record: Record) -> bytes:
    """`record`'s frame as written before streams were flagged ONE_MEMBER (when a stream could
    hold several members): the flag cleared, the checksum made again."""
    frame = bytearray(encode(record))
    frame[PREFIX_SIZE + 28] &= ~ONE_MEMBER
    crc = zlib.crc32(frame[PREFIX_SIZE:], zlib.crc32(frame[:5]))
    frame[5:9] = crc.to_bytes(4, "little")
    return bytes(frame)


def _record(payload: bytes = b"cpu,host=a usage=1 1700000000000000000\n", **kw: object) -> Record:
    fields: dict[str, object] = {
        "database": "telegraf/autogen",
        "precision": "ns",
        "received_ns": 1_700_000_000_123_456_789,
        "token": "edge",
        "lines": 1,
        "min_time_ns": 1_700_000_000_000_000_000,
        "max_time_ns": 1_700_000_000_000_000_000,
        "payload": payload,
    }
    fields.update(kw)
    return Record(**fields)  # type: ignore[arg-type]  # test helper: fields checked by Record


def test_round_trip_of_one_record() -> None:
    """A frame decodes back to the record it was encoded from."""
    record = _record()
    frame = encode(record)
    assert [(len(frame), record)] == list(decode_stream(frame))


def test_frame_layout_starts_with_magic_length_and_crc() -> None:
    """The prefix is magic, body length and the CRC32 of everything but the CRC itself."""
    frame = encode(_record())
    body = frame[PREFIX_SIZE:]
    assert FRAME_MAGIC == frame[0]
    assert len(body) == int.from_bytes(frame[1:5], "little")
    assert zlib.crc32(body, zlib.crc32(frame[:5])) == int.from_bytes(frame[5:9], "little")


def test_decode_starts_at_the_given_offset() -> None:
    """Offsets yielded are absolute within the buffer, starting from `offset`."""
    first, second = encode(_record(lines=1)), encode(_record(lines=2))
    stream = b"junk" + first + second
    assert [4 + len(first), 4 + len(first) + len(second)] == [
        end for end, _ in decode_stream(stream, 4)
    ]


def test_unknown_precision_is_refused() -> None:
    """Encoding a record with a precision the frame cannot name raises ValueError."""
    with pytest.raises(ValueError, match="precision"):
        encode(_record(precision="fortnight"))


def test_out_of_range_line_count_is_refused() -> None:
    """A value that does not fit its header field raises ValueError, not struct.error."""
    with pytest.raises(ValueError, match="header"):
        encode(_record(lines=-1))


def test_zero_filled_tail_is_not_a_frame() -> None:
    """A zero-filled tail (as after a power loss) ends the stream."""
    frame = encode(_record())
    assert [len(frame)] == [end for end, _ in decode_stream(frame + bytes(64))]


def test_next_frame_size_of_a_partial_prefix_asks_for_the_prefix() -> None:
    """With fewer bytes than a prefix, the size needed is the prefix size."""
    assert PREFIX_SIZE == next_frame_size(encode(_record())[:3], 0)


def test_next_frame_size_reads_the_declared_length() -> None:
    """With a complete prefix, the size needed is the whole frame's."""
    frame = encode(_record())
    assert len(frame) == next_frame_size(frame[:PREFIX_SIZE], 0)


def test_next_frame_size_rejects_a_wrong_magic_byte() -> None:
    """Bytes that cannot start a frame are reported as such (None)."""
    assert next_frame_size(b"\x00" * 20, 0) is None


@given(st.lists(records, max_size=5))
def test_any_records_round_trip(batch: list[Record]) -> None:
    """Any sequence of records survives encode + decode_stream unchanged."""
    stream = b"".join(encode(record) for record in batch)
    assert batch == [record for _, record in decode_stream(stream)]


@given(st.lists(records, min_size=1, max_size=4), st.data())
def test_any_truncation_yields_a_prefix(batch: list[Record], data: st.DataObject) -> None:
    """A stream cut anywhere decodes to exactly the records wholly before the cut."""
    frames = [encode(record) for record in batch]
    stream = b"".join(frames)
    cut = data.draw(st.integers(min_value=0, max_value=len(stream)))
    complete = 0
    ends = 0
    for frame in frames:
        if ends + len(frame) > cut:
            break
        ends += len(frame)
        complete += 1
    assert batch[:complete] == [record for _, record in decode_stream(stream[:cut])]


@given(st.lists(records, min_size=1, max_size=4), st.data())
def test_any_flipped_byte_is_detected(batch: list[Record], data: st.DataObject) -> None:
    """Changing any byte stops decoding at the frame that holds it."""
    frames = [encode(record) for record in batch]
    stream = bytearray(b"".join(frames))
    where = data.draw(st.integers(min_value=0, max_value=len(stream) - 1))
    stream[where] ^= data.draw(st.integers(min_value=1, max_value=255))
    damaged = 0
    start = 0
    for frame in frames:
        if start + len(frame) > where:
            break
        start += len(frame)
        damaged += 1
    assert batch[:damaged] == [record for _, record in decode_stream(bytes(stream))]


@given(records)
def test_a_record_framed_in_advance_writes_the_same_bytes(record: Record) -> None:
    """`framed` only computes ahead what `encode` would: same frame, same record value."""
    early = framed(record)
    assert early == record and early.frame_head is not None
    assert encode(early) == encode(record)
    head, payload = encode_parts(early)
    stored = record.payload if record.stored_gzip is None else record.stored_gzip
    assert payload is stored  # written as is, never copied
    [(end, decoded)] = list(decode_stream(head + payload))
    assert (end, decoded) == (len(head) + len(payload), record)


def test_a_gzip_body_is_stored_as_it_came_and_read_back_as_line_protocol() -> None:
    """A record with its client's gzip stream: the frame holds that stream (flagged in the
    precision byte, checksummed), a fraction of the line protocol's size; decoding inflates
    it, so the record read back holds line protocol and equals the one written."""
    lines = b"".join(
        b"cpu,host=h%d usage=%d.5 %d\n" % (i % 7, i, 1_700_000_000 + i) for i in range(500)
    )
    record = _record(lines, lines=500, stored_gzip=gzip.compress(lines))
    frame = encode(record)
    assert len(frame) < len(encode(_record(lines, lines=500))) / 3
    assert record.stored_gzip is not None and frame.endswith(record.stored_gzip)
    assert frame[PREFIX_SIZE + 28] == 0 | STORED_GZIP | ONE_MEMBER  # precision "ns" (0), flagged
    [(end, decoded)] = list(decode_stream(frame))
    assert decoded.stored_gzip == record.stored_gzip  # kept, to forward as it is
    assert (False, len(lines)) == (decoded.inflated, decoded.size)  # known without inflating
    assert (end, decoded, decoded.payload) == (len(frame), record, lines)
    assert decoded.inflated  # inflated once, when its lines were asked for


@given(_one_member_bodies())
def test_a_stored_stream_is_read_back_without_inflating_it(record: Record) -> None:
    """A one-member stream is read back as it is: its size is its ISIZE trailer, its lines are
    inflated on first use and equal the lines written."""
    [(_, decoded)] = list(decode_stream(encode(record)))
    assert (False, len(record.payload)) == (decoded.inflated, decoded.size)
    assert decoded.stored_gzip == record.stored_gzip
    assert (decoded.payload, decoded.size, decoded.inflated) == (
        record.payload,
        len(record.payload),
        True,
    )
    assert decoded == record and hash(decoded) == hash(record)


@given(_gzip_bodies())
def test_a_stored_stream_is_kept_when_read_back_only_when_it_is_one_member(
    drawn: tuple[Record, bool],
) -> None:
    """A record read back keeps the stored stream (for gzip upstreams) only when it is exactly
    one gzip member: one with more members or padding after it (from a frame written before
    the write path stored only single members) is not passed on as it is."""
    record, one_member = drawn
    [(_, decoded)] = list(decode_stream(_old_frame(record)))
    assert decoded.inflated  # an old frame's stream is inflated as it is read
    assert decoded == record
    assert decoded.stored_gzip == (record.stored_gzip if one_member else None)


def test_a_stored_stream_that_does_not_inflate_ends_the_stream() -> None:
    """Checksummed bytes flagged as gzip that are not gzip (never written by the gateway): the
    frame is invalid, like any other damage."""
    good = encode(_record())
    for bad in (
        encode(_record(stored_gzip=b"not gzip at all")),
        _old_frame(_record(stored_gzip=b"not gzip at all")),
        encode(_record(stored_gzip=b"\x1f\x8b\x08")),  # a gzip magic, too short for a member
    ):
        assert [_record()] == [record for _, record in decode_stream(good + bad + good)]


def test_a_flagged_stream_that_does_not_inflate_raises_where_its_lines_are_needed() -> None:
    """A checksummed, flagged member whose deflate data is broken (only a hand-made frame can
    be): read back lazily, it raises CorruptRecordError when its lines are asked for."""
    stream = bytearray(gzip.compress(b"cpu v=1 1\n" * 100))
    stream[12:20] = b"\xff" * 8  # inside the deflate data
    [(_, decoded)] = list(decode_stream(encode(_record(stored_gzip=bytes(stream)))))
    with pytest.raises(CorruptRecordError, match="does not inflate"):
        decoded.payload  # noqa: B018  # the access is the test


SEGMENT_IDS = st.integers(min_value=1, max_value=2**32 - 1)


def _placed(batch: list[Record], segment: int) -> bytes:
    return b"".join(place(head, segment) + payload for head, payload in map(encode_parts, batch))


@given(st.lists(records, min_size=1, max_size=4), SEGMENT_IDS)
def test_placed_frames_round_trip_in_their_segment(batch: list[Record], segment: int) -> None:
    """Frames placed into a segment decode, read as that segment, to the records written."""
    stream = _placed(batch, segment)
    assert stream[0] == PLACED_MAGIC
    assert batch == [record for _, record in decode_stream(stream, 0, segment)]


@given(st.lists(records, min_size=1, max_size=4), SEGMENT_IDS, SEGMENT_IDS)
def test_placed_frames_are_invalid_in_any_other_segment(
    batch: list[Record], written: int, read: int
) -> None:
    """What a reused file holds from an earlier segment never passes as a record of the new
    one: every frame fails its checksum there, even whole and at a frame boundary."""
    if written == read:
        read = written % (2**32 - 1) + 1
    stream = _placed(batch, written)
    offsets = [0]
    for record in batch[:-1]:
        offsets.append(offsets[-1] + len(encode(record)))
    for offset in offsets:
        assert [] == list(decode_stream(stream, offset, read))
    assert [] == list(decode_stream(stream))  # nor with no segment at all


def test_segment_masks_differ_for_every_pair_of_ids_in_a_range() -> None:
    """An odd multiplier modulo 2**32: distinct ids get distinct masks, none of them 0."""
    masks = {segment_mask(segment) for segment in range(1, 200_001)}
    assert len(masks) == 200_000 and 0 not in masks
    assert segment_mask(2**32 - 1) not in (0, segment_mask(1))


@given(st.lists(records, min_size=1, max_size=3), SEGMENT_IDS)
def test_frames_as_made_are_read_in_any_segment(batch: list[Record], segment: int) -> None:
    """Frames written before frames were placed (magic 0xC1 on disk) stay readable."""
    stream = b"".join(encode(record) for record in batch)
    assert stream[0] == FRAME_MAGIC
    assert batch == [record for _, record in decode_stream(stream, 0, segment)]


def test_next_frame_size_reads_a_placed_frame() -> None:
    """The chunked reader sizes placed frames like frames as made."""
    head, payload = encode_parts(_record())
    placed = place(head, 7) + payload
    assert len(placed) == next_frame_size(placed[:PREFIX_SIZE], 0)


def test_the_one_member_flag_without_a_stored_stream_ends_the_stream() -> None:
    """ONE_MEMBER only qualifies STORED_GZIP: a frame with it alone is not one the gateway
    writes, and is invalid like any other damage."""
    good = encode(_record())
    frame = bytearray(encode(_record()))
    frame[PREFIX_SIZE + 28] |= ONE_MEMBER
    frame[5:9] = zlib.crc32(frame[PREFIX_SIZE:], zlib.crc32(frame[:5])).to_bytes(4, "little")
    assert [_record()] == [record for _, record in decode_stream(good + bytes(frame) + good)]
