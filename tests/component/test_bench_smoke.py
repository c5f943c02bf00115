"""The benchmark (bench/), CI-sized: it runs end to end, and every acknowledged line arrives.

Correctness only, never speed: `bench/run.py --quick --unique-ids` drives the sink alone, nginx
in front of the sink and influx-gateway in front of the sink for 2 s each (plain bodies), and
the sink must hold every line that was answered 204, each batch once. It needs Debian's wrk and
nginx, which `.ci/run` installs; without them the test fails and says so.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import random
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import sink
from bench.payload import batch_body, marker_line, stored_gzip_member
from bench.targets import find_nginx

REPO = Path(__file__).resolve().parents[2]


def count(data: bytes, pieces: list[int], *, gzipped: bool) -> dict[str, Any]:
    """The sink's counts for one body arriving in pieces of the given sizes."""
    shared = sink.Shared(1)
    counter = sink.BodyCounter(shared.slot(0), shared.ids)
    decoder = sink.Gunzip(counter, {}) if gzipped else None
    offset = 0
    for size in pieces:
        # Each piece sits inside a bigger buffer, as in the sink's receive buffer.
        buffer = bytearray(b"xx") + bytearray(data[offset : offset + size]) + bytearray(b"yy")
        end = 2 + len(data[offset : offset + size])
        if decoder is not None:
            decoder.feed(memoryview(buffer)[2:end])
        else:
            counter.feed(buffer, 2, end)
        offset += size
    if decoder is not None:
        decoder.finish()
    else:
        counter.finish()
    return shared.totals()


@pytest.mark.parametrize("gzipped", [False, True])
def test_sink_counts_lines_and_batch_ids_however_the_body_is_cut(gzipped: bool) -> None:
    """Lines and marker ids are counted exactly, even when a marker spans several pieces."""
    rng = random.Random(7)
    lines = batch_body(50, now_ns=1_700_000_000 * 10**9)
    ids = [3, 1 << 20, 5, 3]  # 3 twice: a duplicate
    parts = [marker_line(i, 1_700_000_000 * 10**9) + lines for i in ids]
    data = b"".join(gzip.compress(p) for p in parts) if gzipped else b"".join(parts)
    pieces: list[int] = []
    while sum(pieces) < len(data):
        pieces.append(rng.choice([1, 2, 5, 16, 17, 40, 999]))
    totals = count(data, pieces, gzipped=gzipped)
    assert (200, 4, 3, 1) == (
        totals["lines"],
        totals["markers"],
        totals["distinct_markers"],
        totals["duplicate_markers"],
    )


def test_sink_tells_gzip_bodies_apart_that_differ_only_in_their_marker() -> None:
    """Bodies shaped like wrk.lua's (stored marker member + the same batch) are not confused."""
    shared = sink.Shared(1)
    cache: dict[bytes, sink.Decoded] = {}
    batch = gzip.compress(batch_body(10, now_ns=1_700_000_000 * 10**9))
    for batch_id in (1, 2, 3, 2):
        member = stored_gzip_member(marker_line(batch_id, 1_700_000_000 * 10**9))
        assert marker_line(batch_id, 1_700_000_000 * 10**9) == gzip.decompress(member)
        decoder = sink.Gunzip(sink.BodyCounter(shared.slot(0), shared.ids), cache)
        decoder.feed(memoryview(member + batch))
        decoder.finish()
    totals = shared.totals()
    assert (40, 4, 3, 1) == (
        totals["lines"],
        totals["markers"],
        totals["distinct_markers"],
        totals["duplicate_markers"],
    )


def test_sink_counts_an_unterminated_last_line() -> None:
    """A body without a final newline still counts its last line."""
    assert 2 == count(b"cpu v=1 1\ncpu v=2 2", [7, 100], gzipped=False)["lines"]


async def test_sink_speaks_http_keep_alive_chunked_and_pipelined() -> None:
    """Pipelined requests, a chunked body and a gzip body cut at odd places: all counted."""
    shared = sink.Shared(1)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: sink.SinkProtocol(shared, 0, True, {}), "127.0.0.1", 0
    )
    port = server.sockets[0].getsockname()[1]
    plain = marker_line(1, 1) + b"cpu v=1 1\n"
    packed = gzip.compress(marker_line(2, 1) + b"cpu v=1 1\ncpu v=2 2\n")
    chunked = (
        b"4\r\n" + plain[:4] + b"\r\n" + b"%x\r\n" % (len(plain) - 4) + plain[4:] + b"\r\n0\r\n\r\n"
    )
    stream = (
        b"POST /api/v2/write?bucket=x HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s"
        % (len(plain), plain)
        + b"POST /write?db=x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        + chunked
        + b"POST /api/v3/write_lp?db=x HTTP/1.1\r\nContent-Encoding: gzip\r\n"
        + b"Content-Length: %d\r\n\r\n%s" % (len(packed), packed)
        + b"GET /stats HTTP/1.1\r\nConnection: close\r\n\r\n"
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for offset in range(0, len(stream), 7):
        writer.write(stream[offset : offset + 7])
        await writer.drain()
    answer = await asyncio.wait_for(reader.read(), timeout=10)
    writer.close()
    server.close()
    assert 3 == answer.count(b"HTTP/1.1 204 No Content")
    totals = json.loads(answer[answer.rindex(b"\r\n\r\n") + 4 :])
    wanted = {
        "v2_requests": 1,
        "v1_requests": 1,
        "v3_requests": 1,
        "gzip_requests": 1,
        "lines": 7,
        "markers": 3,  # ids 1, 1 again (the chunked body), 2
        "distinct_markers": 2,
        "bad_requests": 0,
    }
    assert wanted == {key: totals[key] for key in wanted}


@pytest.fixture(name="bench_tools")
def fixture_bench_tools() -> None:
    """wrk and nginx must be installed: fail (never skip) with the way to get them."""
    tools = {"wrk": shutil.which("wrk"), "nginx": find_nginx()}
    missing = [name for name, path in tools.items() if path is None]
    if missing:
        pytest.fail(
            f"{' and '.join(missing)} not installed: run .ci/run, which installs Debian's wrk "
            "and nginx (or: apt-get install wrk nginx)"
        )


@pytest.mark.slow
@pytest.mark.usefixtures("bench_tools")
def test_quick_benchmark_delivers_every_acknowledged_line(tmp_path: Path) -> None:
    """sink, nginx and gateway: only 204s, and the sink got every acknowledged batch once."""
    report = tmp_path / "bench.json"
    command = [sys.executable, str(REPO / "bench" / "run.py"), "--quick", "--unique-ids"]
    command += ["--python", sys.executable, "--json", str(report)]
    done = subprocess.run(
        command,
        cwd=REPO,
        capture_output=True,
        timeout=150,
    )
    output = done.stdout.decode() + done.stderr.decode()
    assert 0 == done.returncode, output
    results = json.loads(report.read_text())["results"]
    assert ["sink", "nginx", "gateway"] == [r["case"] for r in results]
    for r in results:
        name = r["case"]
        assert {"204": r["requests"]} == r["statuses"], name
        assert 0 < r["acked_requests"], name
        assert {} == {k: v for k, v in r["socket_errors"].items() if v}, name
        assert [] == [k for k in r["ping"]["statuses"] if k != "204"], name
        assert ("PASS", []) == (r["delivery"]["status"], r["delivery"]["problems"]), name
        assert 0 == r["delivery"]["duplicate_batches"], name
        assert r["acked_requests"] <= r["sink"]["distinct_markers"], name
    gateway = results[2]["gateway"]
    assert (0, 0) == (gateway["pending_records"], gateway["deadletter_lines"])
    assert gateway["accepted_lines"] <= results[2]["sink"]["lines"]


@pytest.mark.slow
@pytest.mark.usefixtures("bench_tools")
def test_quick_fanout_and_half_load_deliver_every_acknowledged_line(tmp_path: Path) -> None:
    """The fan-out case (two upstreams, both the sink) and the half-load run: the sink must
    get every acknowledged line once per upstream, including those of the half-load run."""
    report = tmp_path / "bench.json"
    command = [sys.executable, str(REPO / "bench" / "run.py"), "--quick", "--unique-ids"]
    command += ["--cases", "gateway-fanout", "--half-load"]
    command += ["--python", sys.executable, "--json", str(report)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, timeout=150)
    output = done.stdout.decode() + done.stderr.decode()
    assert 0 == done.returncode, output
    [r] = json.loads(report.read_text())["results"]
    assert (r["case"], r["copies"]) == ("gateway-fanout", 2)
    assert {"204": r["requests"]} == r["statuses"]
    half = r["half_load"]
    assert half["acked_requests"] > 0 and half["non_204"] == 0
    assert 0.2 < half["fraction_of_peak"] < 0.9  # a pause was applied; not the full rate
    assert ("PASS", []) == (r["delivery"]["status"], r["delivery"]["problems"])
    batches = r["acked_requests"] + half["acked_requests"]
    assert r["sink"]["distinct_markers"] >= batches
    assert r["sink"]["lines"] >= 2 * (r["acked_lines"] + half["acked_lines"])
    assert "Fan-out" not in output or "two upstreams" in output


@pytest.mark.slow
@pytest.mark.usefixtures("bench_tools")
def test_quick_outage_absorbs_the_load_and_delivers_it_all_afterwards(tmp_path: Path) -> None:
    """The stalled-upstream case: the sink is stopped for the whole load, yet every request is
    answered 204, and once the sink runs again it gets every acknowledged batch once."""
    report = tmp_path / "bench.json"
    command = [sys.executable, str(REPO / "bench" / "run.py"), "--quick", "--unique-ids"]
    command += ["--cases", "gateway-outage", "--python", sys.executable, "--json", str(report)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, timeout=150)
    output = done.stdout.decode() + done.stderr.decode()
    assert 0 == done.returncode, output
    [r] = json.loads(report.read_text())["results"]
    assert r["case"] == "gateway-outage" and r["acked_requests"] > 0
    assert {"204": r["requests"]} == r["statuses"]
    assert r["delivered_lines_during_load"] < r["acked_lines"] / 2  # the upstream was stalled
    assert ("PASS", []) == (r["delivery"]["status"], r["delivery"]["problems"])
    assert 0 == r["delivery"]["duplicate_batches"]
    assert r["sink"]["distinct_markers"] >= r["acked_requests"]
    assert "Upstream stalled (plain)" in output
