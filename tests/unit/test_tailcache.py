"""The in-memory tail of the log: lookup by cursor position, limits, eviction, release."""

from __future__ import annotations

from dataclasses import replace

from gateway.buffer.record import Record
from gateway.buffer.segmentwriter import Position
from gateway.buffer.tailcache import Limits, TailCache

T = 1_700_000_000 * 10**9
ALL = Limits(10**6, 10**9, 2**40)


def rec(i: int, lines: int = 1, size: int = 10) -> Record:
    payload = (b"m v=%di\n" % i).ljust(size, b"x")
    return Record("db", "ns", T, "tok", lines, T, T, payload)


def placed(segment: int, offset: int, *records: Record, frame: int = 100):
    """(start, end, record) for records written back to back, `frame` bytes each."""
    out = []
    for r in records:
        out.append((Position(segment, offset), Position(segment, offset + frame), r))
        offset += frame
    return out


def payloads(found):
    return [r.payload for _, r in found]


def test_read_from_any_record_start_to_the_newest() -> None:
    cache = TailCache(2**20)
    cache.add(placed(1, 0, rec(0), rec(1), rec(2)))
    assert payloads(cache.read(Position(1, 100), ALL)) == [rec(1).payload, rec(2).payload]
    assert [end for end, _ in cache.read(Position(1, 0), ALL)] == [
        Position(1, 100),
        Position(1, 200),
        Position(1, 300),
    ]


def test_a_cursor_at_the_newest_end_gets_nothing_and_elsewhere_misses() -> None:
    cache = TailCache(2**20)
    assert cache.read(Position(1, 0), ALL) is None  # empty: unknown
    cache.add(placed(1, 0, rec(0)))
    assert cache.read(Position(1, 100), ALL) == []
    assert cache.read(Position(1, 50), ALL) is None  # not a record boundary it knows
    assert cache.read(Position(0, 0), ALL) is None


def test_the_first_record_of_a_new_segment_is_found_from_the_previous_end() -> None:
    cache = TailCache(2**20)
    cache.add(placed(1, 0, rec(0)))
    cache.add(placed(2, 0, rec(1)))  # the writer rolled to segment 2
    assert payloads(cache.read(Position(1, 100), ALL)) == [rec(1).payload]
    assert payloads(cache.read(Position(2, 0), ALL)) == [rec(1).payload]


def test_limits_return_at_least_one_and_stop_at_the_first_reached() -> None:
    cache = TailCache(2**20)
    cache.add(placed(1, 0, rec(0, lines=5, size=10), rec(1, lines=5, size=10), rec(2)))
    assert len(cache.read(Position(1, 0), Limits(2, 10**9, 2**40))) == 2
    assert len(cache.read(Position(1, 0), Limits(10, 5, 2**40))) == 1
    assert len(cache.read(Position(1, 0), Limits(10, 6, 2**40))) == 2
    assert len(cache.read(Position(1, 0), Limits(10, 10**9, 1))) == 1


def test_bounded_by_payload_bytes_oldest_first() -> None:
    cache = TailCache(25)
    cache.add(placed(1, 0, rec(0), rec(1), rec(2)))  # 30 bytes of payload
    assert cache.size_bytes == 20 and len(cache) == 2
    assert cache.read(Position(1, 0), ALL) is None
    assert payloads(cache.read(Position(1, 100), ALL)) == [rec(1).payload, rec(2).payload]


def test_release_forgets_what_every_consumer_passed_but_still_knows_the_end() -> None:
    cache = TailCache(2**20)
    cache.add(placed(1, 0, rec(0), rec(1)))
    cache.release(Position(1, 100))
    assert cache.read(Position(1, 0), ALL) is None
    assert payloads(cache.read(Position(1, 100), ALL)) == [rec(1).payload]
    cache.release(Position(1, 200))
    assert len(cache) == 0 and cache.size_bytes == 0
    assert cache.read(Position(1, 200), ALL) == []  # caught up: nothing newer anywhere
    cache.add(placed(1, 200, rec(2)))
    assert payloads(cache.read(Position(1, 200), ALL)) == [rec(2).payload]


def test_going_backwards_restarts_the_tail() -> None:
    cache = TailCache(2**20)
    cache.add(placed(1, 0, rec(0), rec(1)))
    cache.add(placed(1, 100, rec(9)))  # cannot happen with one writer; never serve stale data
    assert cache.read(Position(1, 0), ALL) is None
    assert payloads(cache.read(Position(1, 100), ALL)) == [rec(9).payload]


def test_clear() -> None:
    cache = TailCache(2**20)
    cache.add(placed(1, 0, rec(0)))
    cache.clear()
    assert cache.read(Position(1, 0), ALL) is None
    assert cache.read(Position(1, 100), ALL) is None


def test_a_record_keeps_its_gzip_stream_only_when_asked_and_never_its_frame_head() -> None:
    """The client's gzip stream costs memory: kept (and counted) only for a log with a gzip
    upstream to send it to; a frame head is never kept."""
    written = replace(rec(0, size=100), frame_head=b"h" * 30, stored_gzip=b"g" * 40)
    for keep, held in ((False, 100), (True, 140)):
        cache = TailCache(2**20, keep_gzip=keep)
        cache.add(placed(1, 0, written))
        [(_, cached)] = cache.read(Position(1, 0), ALL)
        assert cached == written and cached.frame_head is None
        assert cached.stored_gzip == (b"g" * 40 if keep else None)
        assert cache.size_bytes == held
        cache.release(Position(1, 100))
        assert cache.size_bytes == 0


def test_the_tail_cache_budget_follows_consumers_and_workers(tmp_path) -> None:
    """32 MiB for one process and one consumer; twice that for one process with several (the
    slowest lags further); with workers the gateway's 32 MiB is split between them."""
    from gateway.buffer.wal import TAIL_CACHE_BYTES
    from gateway.config import load_config
    from gateway.destinations import tail_cache_bytes

    def budget(upstreams: int, workers: int, store: bool = False) -> int:
        text = f"[server]\nworkers = {workers}\n[store]\nenabled = {str(store).lower()}\n"
        for n in range(upstreams):
            text += f'[[upstreams]]\nname = "u{n}"\nurl = "http://127.0.0.1:{9000 + n}"\n'
        path = tmp_path / "gw.toml"
        path.write_text(text)
        return tail_cache_bytes(load_config(path, env={}))

    assert 32 * 2**20 == TAIL_CACHE_BYTES == budget(1, 1)
    assert 2 * TAIL_CACHE_BYTES == budget(2, 1) == budget(1, 1, store=True) == budget(3, 1)
    assert TAIL_CACHE_BYTES // 2 == budget(1, 2) == budget(2, 2)
    assert TAIL_CACHE_BYTES // 4 == budget(3, 4)
