"""Record framing: one accepted write as bytes on disk, with a checksum. Pure, no I/O.

A frame is::

    magic  u8     FRAME_MAGIC (0xC1) as made, PLACED_MAGIC (0xC2) as written into a segment
                  (a zero byte never starts a frame: zeros end a stream like the end of a file)
    length u32    bytes after the 9-byte prefix (header + strings + payload)
    crc    u32    CRC-32 (zlib's) over 0xC1+length, then header, strings and payload; in a
                  placed frame XOR segment_mask(the segment's id)
    header        struct "<qqqIBHH": received_ns, min_time_ns, max_time_ns, lines,
                  precision code (| STORED_GZIP | ONE_MEMBER), len(database), len(token)
    database      utf-8
    token         utf-8 (the token's name, never a token value)
    payload       normalized line protocol; with STORED_GZIP in the code byte, that line
                  protocol as the gzip stream the client sent

All integers are little-endian.

A record may carry its line protocol as one gzip member (`stored_gzip`): a gzip request body
of one member whose lines were all accepted unchanged (the client's own stream), or large
accepted lines bound for a gzip upstream (compressed once at acceptance). The frame then stores
that stream (3-4x smaller on disk: less to write and fsync), inflated again when the frame is
read: a decoded record always holds line protocol, and also the stored stream when it is
exactly one member, which forwarders send as it is to gzip upstreams instead of compressing the
lines again. The record made on the write path keeps both, so nothing in memory is inflated
twice. (Frames written before the one-member rule may hold several members: they are read the
same way, and their lines compressed again to forward.)

A frame whose stream is flagged ONE_MEMBER (every stored stream since that flag: the write path
stores only single members) is read back without inflating it: the record's `payload` is
inflated on first use, and its `size` is the stream's own ISIZE trailer. A forwarder catching up
from disk to a gzip upstream, which is sent the stream as it is, then never inflates it (that
was nearly all of its CPU), nor do the summaries made at recovery. Readers that need the lines
inflate them in their own thread (`inflate`). Damage is still caught by the frame's checksum; a
flagged stream that is not gzip at all ends the stream like any other bad frame, and one that
passes both checks but does not inflate (only a hand-made frame can) raises
CorruptRecordError where its lines are needed.

A placed frame is valid only in the segment it was written to. The log reuses the files of
consumed segments (segmentwriter.py), so a segment's file can hold, past its valid end, frames
of an earlier segment: whole, with correct lengths, and failing this check. Frames made before
placed frames existed (0xC1 on disk) are still read, in any segment.

A frame that is cut short or fails its checksum ends a stream: `decode_stream` yields the valid
prefix, and the caller learns the valid end from the last offset it was given.
`next_frame_size` lets a chunked reader tell "need more bytes" from "corrupt".
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

from gateway.compression import crc32, gunzip_member
from gateway.errors import CorruptRecordError

FRAME_MAGIC = 0xC1
PLACED_MAGIC = 0xC2
_MAGICS = (FRAME_MAGIC, PLACED_MAGIC)
_PREFIX = struct.Struct("<BII")  # magic, length, crc
_LENGTH = struct.Struct("<BI")  # the checksummed part of the prefix
_CRC = struct.Struct("<I")
_HEADER = struct.Struct("<qqqIBHH")
PREFIX_SIZE = _PREFIX.size
MAX_FRAME_BODY = 2**32 - 1

_PRECISION_CODES = {"ns": 0, "us": 1, "ms": 2, "s": 3, "m": 4, "h": 5}
_PRECISIONS = {code: name for name, code in _PRECISION_CODES.items()}
STORED_GZIP = 0x80  # in the precision byte: the payload is stored as a gzip stream
ONE_MEMBER = 0x40  # with STORED_GZIP: exactly one member, whose ISIZE is the payload's size
_FLAGS = STORED_GZIP | ONE_MEMBER
_GZIP_MAGIC = b"\x1f\x8b\x08"  # a gzip member's first bytes (ID1, ID2, CM = deflate)
_GZIP_MIN = 18  # a member's 10-byte header and 8-byte trailer
_INFLATE_LIMIT = 2**62  # a stored stream passed its checksum: only a bug could make it huge


@dataclass(frozen=True, slots=True, eq=False)
class Record:
    """One accepted write: where it goes, who sent it, its time range and its lines."""

    database: str
    precision: str  # "ns" | "us" | "ms" | "s"
    received_ns: int  # gateway receive time
    token: str  # token NAME (never a token value)
    lines: int  # number of lines in payload
    min_time_ns: int  # min/max line timestamps in ns (for retention / filtering)
    max_time_ns: int
    payload: bytes  # normalized line protocol
    # Everything of the frame before the payload, when computed in advance (`framed`): the
    # writer then only writes it. Not part of the record's value.
    frame_head: bytes | None = field(default=None, compare=False, repr=False)
    # `payload` as exactly one gzip member, to store and forward instead (see above); set only
    # when inflating it gives `payload`. Not part of the record's value either.
    stored_gzip: bytes | None = field(default=None, compare=False, repr=False)

    def __eq__(self, other: object) -> bool:
        """The same write (a record read back lazily equals the one written)."""
        if not isinstance(other, Record):
            return NotImplemented
        return self._value() == other._value()

    def __hash__(self) -> int:
        return hash(self._value())

    def _value(self) -> tuple[str, str, int, str, int, int, int, bytes]:
        return (
            self.database,
            self.precision,
            self.received_ns,
            self.token,
            self.lines,
            self.min_time_ns,
            self.max_time_ns,
            self.payload,
        )

    @property
    def size(self) -> int:
        """Bytes of line protocol (`len(payload)`, known without inflating it)."""
        return len(self.payload)

    @property
    def inflated(self) -> bool:
        """Whether `payload` is in memory (False only for a record read back lazily)."""
        return True

    def inflate(self) -> None:
        """Have `payload` in memory from now on (inflate a lazily read record's stream here, in
        the caller's thread); raises CorruptRecordError for a stream that does not inflate."""


_PAYLOAD_SLOT = Record.__dict__["payload"]  # the slot that holds a record's payload


class _Deflated(Record):
    """A record read back whose line protocol is still its stored stream: `payload` inflates
    it on first use and keeps it (threads racing to it inflate the same bytes; either is kept),
    `size` comes from the stream's ISIZE trailer. Made only by `decode_stream` (it has no
    `dataclasses.replace`: `framed` and the tail cache take records of the write path)."""

    __slots__ = ("_size",)
    _size: int

    def __init__(
        self,
        database: str,
        precision: str,
        received_ns: int,
        token: str,
        lines: int,
        min_time_ns: int,
        max_time_ns: int,
        stored_gzip: bytes,
    ) -> None:
        super().__init__(
            database,
            precision,
            received_ns,
            token,
            lines,
            min_time_ns,
            max_time_ns,
            None,  # type: ignore[arg-type]  # the payload slot stays empty until inflated
            stored_gzip=stored_gzip,
        )
        object.__setattr__(self, "_size", int.from_bytes(stored_gzip[-4:], "little"))

    @property
    def payload(self) -> bytes:
        payload: bytes | None = _PAYLOAD_SLOT.__get__(self, Record)
        if payload is None:
            assert self.stored_gzip is not None
            try:
                payload, _ = gunzip_member(self.stored_gzip, _INFLATE_LIMIT)
            except ValueError as e:  # passed its checksum: a hand-made frame
                raise CorruptRecordError(f"a stored gzip stream does not inflate: {e}") from None
            _PAYLOAD_SLOT.__set__(self, payload)
        return payload

    @payload.setter
    def payload(self, value: bytes | None) -> None:  # for Record.__init__ only: it is frozen
        _PAYLOAD_SLOT.__set__(self, value)

    @property
    def size(self) -> int:
        return self._size

    def inflate(self) -> None:
        self.payload  # noqa: B018  # the property inflates and keeps the lines

    @property
    def inflated(self) -> bool:
        return _PAYLOAD_SLOT.__get__(self, Record) is not None


def encode(record: Record) -> bytes:
    """The frame for `record`; raises ValueError for a record that cannot be framed."""
    return b"".join(encode_parts(record))


def framed(record: Record) -> Record:
    """`record` with its frame head computed now (checksum included), e.g. in a worker thread
    while the request is still being handled, so the log's writer does not have to."""
    head, _ = encode_parts(record)
    return replace(record, frame_head=head)


def encode_parts(record: Record) -> tuple[bytes, bytes]:
    """The frame as (head, payload), to write with one vectored call and no copy of the
    payload; raises ValueError for a record that cannot be framed."""
    stored = record.payload if record.stored_gzip is None else record.stored_gzip
    if record.frame_head is not None:
        return record.frame_head, stored
    database = record.database.encode()
    token = record.token.encode()
    code = _PRECISION_CODES.get(record.precision)
    if code is None:
        raise ValueError(f"unknown precision {record.precision!r}")
    if record.stored_gzip is not None:
        code |= _FLAGS if record.size < 2**32 else STORED_GZIP  # ISIZE is the size mod 2**32
    try:
        header = _HEADER.pack(
            record.received_ns,
            record.min_time_ns,
            record.max_time_ns,
            record.lines,
            code,
            len(database),
            len(token),
        )
    except struct.error as e:
        raise ValueError(f"record does not fit the frame header: {e}") from None
    meta = header + database + token  # small; the payload is never copied
    length = len(meta) + len(stored)
    if length > MAX_FRAME_BODY:
        raise ValueError(f"record of {length} bytes is larger than a frame can hold")
    checked = _LENGTH.pack(FRAME_MAGIC, length)
    crc = crc32(stored, crc32(meta, crc32(checked, 0)))
    return b"".join((checked, _CRC.pack(crc), meta)), stored


def segment_mask(segment: int) -> int:
    """What a placed frame's checksum is XORed with: distinct for every segment id below 2**32
    (an odd multiplier is a bijection modulo 2**32), never 0 for a real id."""
    return (segment * 0x9E3779B1) & 0xFFFFFFFF


def place(head: bytes, segment: int) -> bytes:
    """The head of a frame (from `encode_parts`) as written into segment `segment`."""
    _magic, length, crc = _PREFIX.unpack_from(head)
    return _PREFIX.pack(PLACED_MAGIC, length, crc ^ segment_mask(segment)) + head[PREFIX_SIZE:]


def next_frame_size(buf: bytes | memoryview, offset: int) -> int | None:
    """Size the frame at `offset` needs (PREFIX_SIZE until its prefix is complete).

    None when the bytes already there cannot start a frame (wrong magic byte). Compare the
    result with the bytes available: more needed means incomplete, enough means corrupt
    (when `decode_stream` stopped there).
    """
    available = len(buf) - offset
    if available <= 0:
        return PREFIX_SIZE
    if buf[offset] not in _MAGICS:
        return None
    if available < PREFIX_SIZE:
        return PREFIX_SIZE
    _magic, length, _crc = _PREFIX.unpack_from(buf, offset)
    return PREFIX_SIZE + int(length)


def decode_stream(
    buf: bytes | memoryview, offset: int = 0, segment: int | None = None
) -> Iterator[tuple[int, Record]]:
    """Yield (end offset, record) for each valid frame from `offset`; stop at the first bad one.

    `segment`: the id of the segment `buf` was read from; placed frames are valid only there
    (without it, only frames as made are).
    """
    view = memoryview(buf)
    size = len(view)
    mask = None if segment is None else segment_mask(segment)
    while offset + PREFIX_SIZE <= size:
        magic, length, crc = _PREFIX.unpack_from(view, offset)
        end = offset + PREFIX_SIZE + length
        if end > size:
            return
        if magic == PLACED_MAGIC and mask is not None:
            crc ^= mask
        elif magic != FRAME_MAGIC:
            return
        body = view[offset + PREFIX_SIZE : end]
        if crc32(body, crc32(_LENGTH.pack(FRAME_MAGIC, length), 0)) != crc:
            return
        record = _decode_body(body)
        if record is None:
            return
        yield end, record
        offset = end


def _decode_body(body: memoryview) -> Record | None:
    if len(body) < _HEADER.size:
        return None
    received, min_time, max_time, lines, code, db_len, token_len = _HEADER.unpack_from(body)
    precision = _PRECISIONS.get(code & ~_FLAGS)
    strings_end = _HEADER.size + db_len + token_len
    if precision is None or strings_end > len(body) or code & _FLAGS == ONE_MEMBER:
        return None
    try:
        database = str(body[_HEADER.size : _HEADER.size + db_len], "utf-8")
        token = str(body[_HEADER.size + db_len : strings_end], "utf-8")
    except UnicodeDecodeError:
        return None
    payload = bytes(body[strings_end:])
    stored_gzip = None
    if code & _FLAGS == _FLAGS:
        if len(payload) < _GZIP_MIN or not payload.startswith(_GZIP_MAGIC):
            return None
        return _Deflated(
            database, precision, received, token, lines, min_time, max_time, stored_gzip=payload
        )
    if code & STORED_GZIP:
        try:
            inflated, one_member = gunzip_member(payload, _INFLATE_LIMIT)
        except ValueError:  # CorruptGzip: a frame written by something else; end the stream
            return None
        payload, stored_gzip = inflated, payload if one_member else None
    return Record(
        database=database,
        precision=precision,
        received_ns=received,
        token=token,
        lines=lines,
        min_time_ns=min_time,
        max_time_ns=max_time,
        payload=payload,
        stored_gzip=stored_gzip,
    )
