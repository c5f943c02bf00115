"""`run --workers N`: N worker processes on one port (SO_REUSEPORT), one data shard each.

The supervisor (the process started by the operator) checks the port, then forks the workers
and waits. Worker K is a whole gateway: its own listener socket bound with SO_REUSEPORT (the
kernel spreads connections over them), its own write-ahead buffer, local store and dead
letters (`Config.for_worker(K)`: worker 0 uses the data dir's own, worker K > 0
`<dir>.worker-K` beside them), its own forwarders. A 204 from any worker means the write is
durable in that worker's shard; nothing is shared on the write path, so the workers scale with
cores.

- Shards left by an earlier run with more workers are not forgotten: a drain-only worker
  (no listener) forwards what they hold and exits once they are empty.
- SIGTERM/SIGINT to the supervisor stop every worker gracefully (each drains within
  `server.shutdown_timeout`); SIGHUP reloads the policy in every worker.
- If a listening worker dies, the supervisor stops the others and exits non-zero, so that the
  service manager restarts the whole gateway (a worker's crash loses nothing acknowledged: its
  shard is recovered at the next start).
- Each worker also serves its own metrics on an abstract Unix socket; a scrape of /metrics
  merges every worker's (metricsmerge.py), so the numbers are the gateway's, not one worker's.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import os
import signal
import socket
import sys
import traceback
import typing
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from gateway.allocator import freeze_startup_objects
from gateway.config import Config
from gateway.destinations import build_wal
from gateway.errors import StartupError
from gateway.observability import flush_logs

log = structlog.get_logger("gateway")

EXIT_STARTUP = 3
SIBLING_TIMEOUT_S = 2.0
PR_SET_PDEATHSIG = 1  # prctl(2)


@dataclass(frozen=True)
class WorkerSet:
    """Who the workers are: how many listen, and the supervisor they belong to."""

    count: int
    supervisor_pid: int

    def metrics_socket(self, worker: int) -> str:
        """The abstract Unix socket where worker `worker` serves its own metrics."""
        return f"\0influx-gateway/{self.supervisor_pid}/metrics/{worker}"


def orphan_shards(config: Config) -> list[int]:
    """Shards of workers beyond `server.workers` whose buffer still holds undelivered records."""
    if not config.upstreams:
        return []
    found = []
    for shard in config.shards():
        if shard.worker < config.server.workers or not shard.buffer_path.is_dir():
            continue
        wal = build_wal(shard, read_only=True)
        wal.open()
        if any(wal.status(name).pending_records for name in wal.consumers):
            found.append(shard.worker)
    return found


def check_port(listen: str) -> None:
    """Fail early, in the supervisor, when something already listens on `listen`."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, int(port)))
        except OSError as e:
            raise StartupError(f"cannot listen on {listen}: {e.strerror or e}") from None


def supervise(config: Config, run_worker: Callable[[Config, WorkerSet, bool], int]) -> int:
    """Fork the workers, forward signals to them, and wait; returns the exit code."""
    check_port(config.server.listen)
    workers = WorkerSet(config.server.workers, os.getpid())
    children: dict[int, tuple[int, bool]] = {}  # pid -> (worker, listens)
    stopping = False

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        if signum in (signal.SIGTERM, signal.SIGINT):
            stopping = True
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM if signum == signal.SIGINT else signum)

    previous = {
        s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    }
    flush_logs()  # no log thread may be mid-write (holding stderr's lock) at the fork
    sys.stdout.flush()
    sys.stderr.flush()
    freeze_startup_objects()  # the workers share these pages instead of copying them
    try:
        for worker in range(workers.count):
            children[_fork(config.for_worker(worker), workers, True, run_worker)] = (worker, True)
        for worker in orphan_shards(config):
            children[_fork(config.for_worker(worker), workers, False, run_worker)] = (worker, False)
        log.info("workers started", workers=workers.count, pids=sorted(children))
        code = 0
        while children:
            pid, status = os.waitpid(-1, 0)
            if pid not in children:
                continue
            worker, listens = children.pop(pid)
            exit_code = os.waitstatus_to_exitcode(status)
            if stopping or (not listens and exit_code == 0):
                code = code or max(exit_code, 0)
                continue
            log.error("worker exited: stopping the gateway", worker=worker, exit_code=exit_code)
            code = exit_code if exit_code > 0 else 1
            stopping = True
            forward(signal.SIGTERM, None)
        return code
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _fork(
    config: Config,
    workers: WorkerSet,
    listen: bool,
    run_worker: Callable[[Config, WorkerSet, bool], int],
) -> int:
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:  # the worker: never returns into the supervisor's code
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, signal.SIG_DFL)
        _stop_with_parent(workers.supervisor_pid)
        code = run_worker(config, workers, listen)
    except StartupError as e:
        print(f"error: worker {config.worker}: {e}", file=sys.stderr)
        code = EXIT_STARTUP
    except BaseException:
        traceback.print_exc()
    finally:
        flush_logs()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _stop_with_parent(supervisor_pid: int) -> None:
    """Linux: SIGTERM this worker (a graceful stop) if the supervisor dies, even by kill -9."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != supervisor_pid:  # it died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


# -- the metrics of every worker ---------------------------------------------------------------


class _Exposition(asyncio.Protocol):
    """Answers a connection with this worker's metrics, then closes it."""

    def __init__(self, render: Callable[[], bytes]) -> None:
        self._render = render

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        writer = typing.cast(asyncio.WriteTransport, transport)  # uvloop's are not subclasses
        writer.write(self._render())
        writer.close()


async def serve_own_metrics(
    workers: WorkerSet, worker: int, render: Callable[[], bytes]
) -> asyncio.AbstractServer:
    """Serve this worker's exposition on its abstract socket, for the others to merge."""
    loop = asyncio.get_running_loop()
    return await loop.create_unix_server(
        lambda: _Exposition(render), workers.metrics_socket(worker)
    )


async def sibling_metrics(workers: WorkerSet, worker: int) -> list[str]:
    """The expositions of every other listening worker (those that answer in time)."""

    async def fetch(other: int) -> str | None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            # Connected here, not by the loop: uvloop cannot connect to an abstract name. A
            # local connect completes at once (or fails: the backlog of a hung worker is full).
            sock.setblocking(False)
            sock.connect(workers.metrics_socket(other))
            async with asyncio.timeout(SIBLING_TIMEOUT_S):
                reader, writer = await asyncio.open_unix_connection(sock=sock)
                data = await reader.read()
                writer.close()
        except (OSError, TimeoutError):
            sock.close()
            data = b""
        if not data:
            log.warning("worker metrics unavailable", worker=other)
            return None
        return data.decode()

    found = await asyncio.gather(*(fetch(k) for k in range(workers.count) if k != worker))
    return [text for text in found if text is not None]
