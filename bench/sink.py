"""A fast upstream sink for the benchmark: accepts writes, counts every line, answers 204.

It speaks just enough HTTP/1.1 (Content-Length and chunked bodies, keep-alive, `Expect:
100-continue`, gzip) on a bare asyncio BufferedProtocol (uvloop when installed) to stay far
ahead of what it measures: bodies are read into one reused buffer and never parsed as line
protocol; lines are counted with `bytearray.count(b"\\n", start, end)` as the bytes arrive.
With `--markers` it also finds the benchmark's marker lines (`bench_batch id=<n>i ...`, one per
request, see bench/payload.py and bench/lua/wrk.lua) and remembers every id, so duplicates (an
id seen twice) can be told from loss (fewer distinct ids than acknowledged requests).

    POST /api/v2/write, /write, /api/v3/write_lp   count (gzip bodies decompressed), 204
    GET  /stats                                     the counts as JSON
    POST /reset                                     zero the counts
    GET  /ping, /health                             204 / 200

With `--workers N` it forks N processes, each with its own SO_REUSEPORT socket on the same
port. Counters live in one shared anonymous mapping: one slot of counters per worker (each
written by one process only) and one byte per marker id, so /stats from any worker sums every
worker's counts. On SIGTERM/SIGINT the final counts are printed as JSON on stdout.

    python bench/sink.py [--host 127.0.0.1] [--port 0] [--workers 1] [--markers] [--no-gzip-cache]

prints `SINK_READY port=<port> pid=<pid>` on stdout once it accepts connections.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import mmap
import os
import signal
import socket
import sys
import zlib
from dataclasses import dataclass
from typing import Any

try:
    import uvloop
except ImportError:  # the stdlib loop works too, only slower
    uvloop = None  # type: ignore[assignment]

HAVE_UVLOOP = uvloop is not None

FIELDS = (
    "requests",  # every HTTP request answered
    "write_requests",
    "v2_requests",
    "v1_requests",
    "v3_requests",
    "gzip_requests",
    "lines",  # newline-terminated lines (plus an unterminated last line) of decoded bodies
    "bytes_in",  # write body bytes as received
    "bytes_decoded",  # write body bytes after gzip
    "markers",  # marker lines seen, duplicates included
    "distinct_markers",  # marker ids seen for the first time
    "markers_unkeyed",  # ids outside 0..MAX_IDS-1 (or unparsable): counted, not deduplicated
    "bad_requests",  # unparsable HTTP or corrupt gzip: answered 400 and closed
)
(
    I_REQUESTS, I_WRITES, I_V2, I_V1, I_V3, I_GZIP, I_LINES, I_BYTES_IN, I_BYTES_DECODED,
    I_MARKERS, I_DISTINCT, I_UNKEYED, I_BAD,
) = range(len(FIELDS))  # fmt: skip
WRITE_PATHS = {b"/api/v2/write": I_V2, b"/write": I_V1, b"/api/v3/write_lp": I_V3}

MAX_IDS = 1 << 25  # marker ids are thread * 2**20 + n (bench/lua/wrk.lua): 32 thread slots
MARKER = b"\nbench_batch id="
MARKER_SPAN = len(MARKER) + 21  # the marker, up to 20 digits and the `i`
BUFFER_BYTES = 256 * 1024
MAX_HEAD = 64 * 1024
MAX_BODY = 1 << 30

# At least one header: wrk passes responses without any to no Lua `response` hook.
NO_CONTENT = b"HTTP/1.1 204 No Content\r\nServer: bench-sink\r\n\r\n"
NO_CONTENT_CLOSE = b"HTTP/1.1 204 No Content\r\nServer: bench-sink\r\nConnection: close\r\n\r\n"
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
HEAD, BODY, CHUNK_SIZE, CHUNK_DATA, CHUNK_CRLF, TRAILERS = range(6)


class Shared:
    """Counters per worker and the marker id map, in a mapping shared across fork()."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.counter_bytes = workers * len(FIELDS) * 8
        self.mm = mmap.mmap(-1, self.counter_bytes + MAX_IDS)
        self.counters = memoryview(self.mm)[: self.counter_bytes].cast("q")
        self.ids = memoryview(self.mm)[self.counter_bytes :]

    def slot(self, worker: int) -> memoryview:
        """The counters of one worker (only that worker writes them)."""
        n = len(FIELDS)
        return self.counters[worker * n : (worker + 1) * n]

    def totals(self) -> dict[str, Any]:
        """The counts summed over all workers."""
        n = len(FIELDS)
        out: dict[str, Any] = {
            name: sum(self.counters[w * n + i] for w in range(self.workers))
            for i, name in enumerate(FIELDS)
        }
        out["duplicate_markers"] = out["markers"] - out["distinct_markers"] - out["markers_unkeyed"]
        out["workers"] = self.workers
        out["uvloop"] = HAVE_UVLOOP
        return out

    def reset(self) -> None:
        """Zero every counter and forget every marker id."""
        for i in range(len(self.counters)):
            self.counters[i] = 0
        self.mm[self.counter_bytes :] = bytes(MAX_IDS)


def record_marker(slot: memoryview, ids: memoryview, marker: int) -> None:
    """Count one marker line; remember its id (one byte per id, shared by all workers)."""
    slot[I_MARKERS] += 1
    if 0 <= marker < MAX_IDS:
        if not ids[marker]:
            ids[marker] = 1
            slot[I_DISTINCT] += 1
    else:
        slot[I_UNKEYED] += 1


@dataclass(frozen=True)
class Decoded:
    """What a gzip body held: lines, decoded bytes, marker ids."""

    lines: int
    size: int
    markers: list[int]


class BodyCounter:
    """Counts the lines (and marker ids) of one decoded body, fed in pieces of any size."""

    def __init__(self, slot: memoryview, ids: memoryview | None) -> None:
        self.slot = slot
        self.ids = ids  # None: do not look for markers
        self.lines = 0
        self.size = 0
        self.last = 0x0A
        self.tail = b"\n"  # the last MARKER_SPAN bytes so far; a body starts "after a newline"
        self.found: list[int] = []  # the marker ids of this body

    def feed(self, data: bytes | bytearray, a: int, b: int) -> None:
        """Count data[a:b]."""
        if b <= a:
            return
        self.lines += data.count(b"\n", a, b)
        self.size += b - a
        self.last = data[b - 1]
        if self.ids is not None:
            self._markers(data, a, b)

    def _markers(self, data: bytes | bytearray, a: int, b: int) -> None:
        # A marker is counted in the piece where its closing `i` arrives: markers that start in
        # the previous pieces' tail are found in tail + the start of this piece, the others in
        # this piece itself.
        tail = self.tail
        window = tail + bytes(data[a : min(b, a + MARKER_SPAN)])
        pos = window.find(MARKER)
        while 0 <= pos < len(tail):
            digits = pos + len(MARKER)
            end = window.find(b"i", digits, digits + 21)
            if end >= len(tail):
                self._marker(window[digits:end])
            elif end == -1 and digits + 21 <= len(window):
                self._marker(b"")  # malformed: no `i` after 20 digits
            pos = window.find(MARKER, pos + 1)
        pos = data.find(MARKER, a, b)
        while pos != -1:
            digits = pos + len(MARKER)
            end = data.find(b"i", digits, min(b, digits + 21))
            if end == -1:
                if digits + 21 <= b:
                    self._marker(b"")
                    pos = data.find(MARKER, digits, b)
                    continue
                break  # continues in the next piece: counted there, from the tail
            self._marker(bytes(data[digits:end]))
            pos = data.find(MARKER, end, b)
        self.tail = (
            window[-MARKER_SPAN:] if b - a < MARKER_SPAN else bytes(data[b - MARKER_SPAN : b])
        )

    def _marker(self, digits: bytes) -> None:
        try:
            marker = int(digits)
        except ValueError:
            marker = -1
        self.found.append(marker)
        assert self.ids is not None
        record_marker(self.slot, self.ids, marker)

    def finish(self) -> None:
        """The body is complete: add its counts to the worker's slot."""
        if self.size and self.last != 0x0A:
            self.lines += 1  # an unterminated last line
        self.slot[I_LINES] += self.lines
        self.slot[I_BYTES_DECODED] += self.size


class Gunzip:
    """A gzip body: collected as it arrives, then decoded (all members) into a BodyCounter.

    Decoding costs the sink ~4 ms per 5,000-line batch, more than a proxy spends on it. A
    benchmark that sends the same bytes every time would measure the sink's zlib, so a
    body identical to a recent one (same SHA-256 of the compressed bytes; not a CRC: gzip
    members end with their own CRC, which makes the CRC-32 of members that differ only in
    their content equal) is counted from `cache`: the lines, bytes and marker ids it held.
    """

    def __init__(self, counter: BodyCounter, cache: dict[bytes, Decoded] | None):
        self.counter = counter
        self.cache = cache
        self.pieces: list[bytes] = []
        self.digest = hashlib.sha256()

    def feed(self, data: memoryview) -> None:
        """Collect one piece of the compressed body."""
        self.pieces.append(bytes(data))
        self.digest.update(data)

    def finish(self) -> None:
        """The body is complete: count it (zlib.error when corrupt)."""
        counter = self.counter
        key = self.digest.digest()
        known = self.cache.get(key) if self.cache is not None else None
        if known is not None:
            counter.slot[I_LINES] += known.lines
            counter.slot[I_BYTES_DECODED] += known.size
            if counter.ids is not None:
                for marker in known.markers:
                    record_marker(counter.slot, counter.ids, marker)
            return
        data = b"".join(self.pieces)
        self.pieces = []
        while data:
            decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
            out = decoder.decompress(data)
            counter.feed(out, 0, len(out))
            if not decoder.eof:
                raise zlib.error("truncated gzip stream")
            data = decoder.unused_data
        counter.finish()
        if self.cache is not None:
            if len(self.cache) >= 64:
                self.cache.clear()
            self.cache[key] = Decoded(counter.lines, counter.size, counter.found)


class SinkProtocol(asyncio.BufferedProtocol):
    """One HTTP/1.1 connection: parse requests, count write bodies as they arrive, answer."""

    def __init__(
        self,
        shared: Shared,
        worker: int,
        markers: bool,
        cache: dict[bytes, Decoded] | None,
    ) -> None:
        self.shared = shared
        self.slot = shared.slot(worker)
        self.markers = markers
        self.cache = cache
        self.buf = bytearray(BUFFER_BYTES)
        self.view = memoryview(self.buf)
        self.start = 0  # unconsumed data is buf[start:end]
        self.end = 0
        self.transport: Any = None  # uvloop's transports are no asyncio.Transport subclass
        self._new_request()

    def _new_request(self) -> None:
        self.state = HEAD
        self.method = b""
        self.path = b""
        self.keep_alive = True
        self.remaining = 0
        self.write_index = -1  # the per-api counter of a write request, else -1
        self.counter: BodyCounter | None = None
        self.gunzip: Gunzip | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def get_buffer(self, sizehint: int) -> memoryview:
        if self.start == self.end or (self.end == len(self.buf) and self.start == 0):
            # Empty, or full of a head already refused as too large (the connection is closing).
            self.start = self.end = 0
        elif len(self.buf) - self.end < 65536 and self.start > 0:
            # Only a request head, chunk-size line or trailer is ever left unconsumed: move it.
            size = self.end - self.start
            self.buf[:size] = self.buf[self.start : self.end]
            self.start, self.end = 0, size
        return self.view[self.end :]

    def buffer_updated(self, nbytes: int) -> None:
        self.end += nbytes
        try:
            self._process()
        except (ValueError, zlib.error) as e:
            self._bad(str(e))

    def _process(self) -> None:
        buf = self.buf
        while self.start < self.end and self.transport is not None:
            state = self.state
            if state == HEAD:
                idx = buf.find(b"\r\n\r\n", self.start, self.end)
                if idx == -1:
                    if self.end - self.start > MAX_HEAD:
                        raise ValueError("request head too large")
                    return
                head = bytes(buf[self.start : idx])
                self.start = idx + 4
                self._head(head)
            elif state in (BODY, CHUNK_DATA):
                take = min(self.remaining, self.end - self.start)
                self._consume(self.start, self.start + take)
                self.start += take
                self.remaining -= take
                if not self.remaining:
                    if state == BODY:
                        self._finish()
                    else:
                        self.state, self.remaining = CHUNK_CRLF, 2
            elif state == CHUNK_CRLF:
                take = min(self.remaining, self.end - self.start)
                self.start += take
                self.remaining -= take
                if not self.remaining:
                    self.state = CHUNK_SIZE
            else:  # CHUNK_SIZE or TRAILERS: one CRLF-terminated line
                idx = buf.find(b"\r\n", self.start, self.end)
                if idx == -1:
                    if self.end - self.start > MAX_HEAD:
                        raise ValueError("chunk line too long")
                    return
                line = bytes(buf[self.start : idx])
                self.start = idx + 2
                if state == TRAILERS:
                    if not line:
                        self._finish()
                    continue
                size = int(line.split(b";")[0].strip(), 16)
                self.state, self.remaining = (CHUNK_DATA, size) if size else (TRAILERS, 0)

    def _head(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        try:
            self.method, target, version = lines[0].split(b" ")
        except ValueError:
            raise ValueError("bad request line") from None
        self.path = target.split(b"?", 1)[0]
        headers: dict[bytes, bytes] = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        connection = headers.get(b"connection", b"").lower()
        self.keep_alive = (
            connection != b"close" if version == b"HTTP/1.1" else connection == b"keep-alive"
        )
        api = WRITE_PATHS.get(self.path, -1) if self.method == b"POST" else -1
        self.write_index = api
        if api != -1:
            self.counter = BodyCounter(self.slot, self.shared.ids if self.markers else None)
            if headers.get(b"content-encoding", b"").lower() in (b"gzip", b"x-gzip"):
                self.gunzip = Gunzip(self.counter, self.cache)
        if headers.get(b"expect", b"").lower() == b"100-continue":
            self.transport.write(CONTINUE)
        if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
            self.state = CHUNK_SIZE
            return
        length = int(headers.get(b"content-length", b"0"))
        if not 0 <= length <= MAX_BODY:
            raise ValueError("bad content-length")
        self.state, self.remaining = BODY, length
        if not length:
            self._finish()

    def _consume(self, a: int, b: int) -> None:
        if self.counter is None or b <= a:
            return
        self.slot[I_BYTES_IN] += b - a
        if self.gunzip is not None:
            self.gunzip.feed(self.view[a:b])
        else:
            self.counter.feed(self.buf, a, b)

    def _finish(self) -> None:
        slot = self.slot
        slot[I_REQUESTS] += 1
        if self.counter is not None:
            slot[I_WRITES] += 1
            slot[self.write_index] += 1
            if self.gunzip is not None:
                slot[I_GZIP] += 1
                self.gunzip.finish()
            else:
                self.counter.finish()
            self._respond(NO_CONTENT if self.keep_alive else NO_CONTENT_CLOSE)
        elif self.path == b"/stats":
            self._respond_json(200, self.shared.totals())
        elif self.path == b"/reset" and self.method == b"POST":
            self.shared.reset()
            self._respond(NO_CONTENT if self.keep_alive else NO_CONTENT_CLOSE)
        elif self.path == b"/ping":
            self._respond(NO_CONTENT if self.keep_alive else NO_CONTENT_CLOSE)
        elif self.path == b"/health":
            self._respond_json(200, {"status": "pass"})
        else:
            self._respond_json(404, {"error": "not found"})

    def _respond_json(self, status: int, data: object) -> None:
        body = json.dumps(data).encode()
        reason = {200: b"OK", 400: b"Bad Request", 404: b"Not Found"}[status]
        close = b"" if self.keep_alive else b"Connection: close\r\n"
        self._respond(
            b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s"
            % (status, reason, len(body), close, body)
        )

    def _respond(self, response: bytes) -> None:
        self.transport.write(response)
        if not self.keep_alive:
            self.transport.close()
            self.transport = None
        self._new_request()

    def _bad(self, message: str) -> None:
        self.slot[I_BAD] += 1
        if self.transport is None:
            return
        self.keep_alive = False
        self._respond_json(400, {"error": message})


def listening_socket(host: str, port: int) -> socket.socket:
    """A bound, listening SO_REUSEPORT TCP socket."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


async def _serve(
    sock: socket.socket, shared: Shared, worker: int, markers: bool, gzip_cache: bool
) -> None:
    loop = asyncio.get_running_loop()
    cache: dict[bytes, Decoded] | None = {} if gzip_cache else None
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    server = await loop.create_server(
        lambda: SinkProtocol(shared, worker, markers, cache), sock=sock
    )
    await stop.wait()
    server.close()


def run_worker(
    sock: socket.socket, shared: Shared, worker: int, markers: bool, gzip_cache: bool
) -> None:
    """Serve on `sock` until SIGTERM/SIGINT (with uvloop when it is installed)."""
    if uvloop is not None:
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    asyncio.run(_serve(sock, shared, worker, markers, gzip_cache))


def main(argv: list[str] | None = None) -> None:
    """Command line: serve until SIGTERM/SIGINT, then print the final counts."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: pick a free port")
    parser.add_argument("--workers", type=int, default=1, help="processes (SO_REUSEPORT)")
    parser.add_argument("--markers", action="store_true", help="count distinct marker ids")
    parser.add_argument(
        "--no-gzip-cache", action="store_true", help="decode every gzip body, even a repeated one"
    )
    args = parser.parse_args(argv)

    shared = Shared(args.workers)
    first = listening_socket(args.host, args.port)
    port = first.getsockname()[1]
    sockets = [first] + [listening_socket(args.host, port) for _ in range(args.workers - 1)]
    print(f"SINK_READY port={port} pid={os.getpid()}", flush=True)
    if args.workers == 1:
        run_worker(first, shared, 0, args.markers, not args.no_gzip_cache)
    else:
        # The parent only waits; a signal to it stops every worker.
        stop_signals = {signal.SIGTERM, signal.SIGINT}
        signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
        children = []
        for worker, sock in enumerate(sockets):
            pid = os.fork()
            if pid == 0:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, stop_signals)
                run_worker(sock, shared, worker, args.markers, not args.no_gzip_cache)
                os._exit(0)
            children.append(pid)
        for sock in sockets:
            sock.close()
        signal.sigwait(stop_signals)
        for pid in children:
            with contextlib.suppress(ProcessLookupError):  # a signal to the group got there first
                os.kill(pid, signal.SIGTERM)
        for pid in children:
            os.waitpid(pid, 0)
    print(json.dumps(shared.totals()), flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
