"""How a window of records becomes batches (forwarder.plan_batches): order, limits, and the
records sent to a gzip upstream as the client's own gzip stream."""

from __future__ import annotations

from collections import defaultdict

from hypothesis import given
from hypothesis import strategies as st

from gateway.buffer.record import Record
from gateway.forward.forwarder import AS_SENT_MIN_BYTES, plan_batches

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
