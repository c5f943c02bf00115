"""How a window of records becomes batches (forwarder.plan_batches): order, limits, and the
records sent to a gzip upstream as the client's own gzip stream."""

from __future__ import annotations

import gzip
from collections import defaultdict

from hypothesis import given
from hypothesis import strategies as st

from gateway.buffer.record import Record, decode_stream, encode
from gateway.forward.forwarder import AS_SENT_MIN_BYTES, plan_batches, sent_as_stored

T = 1_700_000_000 * 10**9
BIG = AS_SENT_MIN_BYTES


@st.composite
def windows(draw: st.DrawFn) -> list[Record]:
    """Up to 30 records, each with a payload of its own."""
    count = draw(st.integers(0, 30))
    return [draw(records(number)) for number in range(count)]


@st.composite
def records(draw: st.DrawFn, number: int) -> Record:
    """A record of one of two databases and two precisions; small or just above the size sent
    alone; held as a gzip stream or not (the stream's bytes only need to be told apart)."""
    lines = draw(st.integers(1, 40))
    size = draw(st.sampled_from([20, 500, BIG - 1, BIG]))
    payload = (b"m v=%di\n" % number).ljust(size, b"x")
    stream = b"gz%d" % number if draw(st.booleans()) else None
    return Record(
        database=draw(st.sampled_from(["a", "b"])),
        precision=draw(st.sampled_from(["ns", "s"])),
        received_ns=T,
        token="t",
        lines=lines,
        min_time_ns=T,
        max_time_ns=T,
        payload=payload,
        stored_gzip=stream,
    )


@given(
    windows(),
    st.integers(1, 100),
    st.integers(1, 3 * BIG),
    st.booleans(),
)
def test_batches_keep_order_limits_and_send_large_streams_alone(
    window: list[Record], max_lines: int, max_bytes: int, gzip: bool
) -> None:
    batches = plan_batches(window, max_lines=max_lines, max_bytes=max_bytes, gzip=gzip)

    # Every payload once, and each (database, precision) in the order of the window.
    sent: dict[tuple[str, str], list[bytes]] = defaultdict(list)
    for batch in batches:
        sent[batch.database, batch.precision] += batch.payloads
    wanted: dict[tuple[str, str], list[bytes]] = defaultdict(list)
    for record in window:
        wanted[record.database, record.precision].append(record.payload)
    assert sent == wanted

    alone = {
        r.payload: r.stored_gzip
        for r in window
        if gzip and r.stored_gzip is not None and len(r.payload) >= AS_SENT_MIN_BYTES
    }
    for batch in batches:
        assert batch.size == sum(map(len, batch.payloads))
        if batch.as_sent is not None:  # the client's stream, of exactly its one record
            assert [batch.as_sent] == [alone[p] for p in batch.payloads]
            continue
        assert not alone.keys() & set(batch.payloads)
        if len(batch.payloads) > 1:
            assert batch.lines <= max_lines and batch.size <= max_bytes
    assert len([b for b in batches if b.as_sent is not None]) == len(alone)


def test_a_large_stream_ends_the_batch_before_it() -> None:
    """Small, large (sent alone), small: three batches, in that order."""
    small = Record("a", "ns", T, "t", 1, T, T, b"m v=1i\n")
    large = Record("a", "ns", T, "t", 1, T, T, b"m v=2i\n".ljust(BIG, b"x"), stored_gzip=b"gz")
    later = Record("a", "ns", T, "t", 1, T, T, b"m v=3i\n")
    batches = plan_batches([small, large, later], max_lines=100, max_bytes=10 * BIG, gzip=True)
    assert [(b.payloads, b.as_sent) for b in batches] == [
        ([small.payload], None),
        ([large.payload], b"gz"),
        ([later.payload], None),
    ]
    plain = plan_batches([small, large, later], max_lines=100, max_bytes=10 * BIG, gzip=False)
    assert [(b.payloads, b.as_sent) for b in plain] == [
        ([small.payload, large.payload, later.payload], None)
    ]


def _read_back(payload: bytes) -> Record:
    """A record as a reader of the log gets it: lines held as a one-member gzip stream, not
    inflated yet."""
    written = Record("a", "ns", T, "t", 3, T, T, payload, stored_gzip=gzip.compress(payload))
    [(_, record)] = list(decode_stream(encode(written)))
    assert not record.inflated
    return record


def test_a_stream_read_back_goes_to_a_gzip_upstream_without_being_inflated() -> None:
    """A large record read back from disk: a gzip upstream's batch is its stream, sized by its
    trailer, and nothing inflates it; its lines are still there when asked for (a split, a dead
    letter), and a plain upstream's batch gets them."""
    payload = b"cpu,host=a v=1i 1700000000000000000\n" * (BIG // 30)
    record = _read_back(payload)
    [batch] = plan_batches([record], max_lines=100, max_bytes=10 * BIG, gzip=True)
    assert (batch.as_sent, batch.parts, batch.size, batch.lines) == (
        record.stored_gzip,
        [],
        len(payload),
        3,
    )
    assert not record.inflated
    assert batch.body() == payload  # inflated on demand
    assert record.inflated
    other = _read_back(payload)
    [plain] = plan_batches([other], max_lines=100, max_bytes=10 * BIG, gzip=False)
    assert (plain.as_sent, plain.parts) == (None, [payload])


def test_a_small_stream_read_back_is_batched_as_lines() -> None:
    """Below AS_SENT_MIN_BYTES a stored stream is batched with others as line protocol (its
    size, from the trailer, counts like any payload)."""
    small = _read_back(b"m v=1i 1\n")
    assert not sent_as_stored(small) and small.size == 9
    batches = plan_batches([small, small], max_lines=100, max_bytes=18, gzip=True)
    assert [b.parts for b in batches] == [[b"m v=1i 1\n", b"m v=1i 1\n"]]
