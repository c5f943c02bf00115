"""`influx-gateway run`: prepare the data dir and policy, listen, and shut down gracefully.

The listener is asyncio's own server around aiohttp's protocol factory, wrapped by
``ReadDeadlines`` so a client that is slow to send its request is cut off (aiohttp has no such
timeout). SIGHUP reloads the policy through the app's ``PolicyWatcher``, which also reloads it
when the file changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import ssl
import sys
from pathlib import Path

import structlog
from aiohttp import web
from prometheus_client import generate_latest

from gateway.allocator import freeze_startup_objects, tune_allocator
from gateway.app import POLICY_WATCHER, create_app
from gateway.auth.policyfile import create_default_policy, load_policy
from gateway.config import Config, validate
from gateway.errors import StartupError, StorageError
from gateway.http.connection import READ_DEADLINES, ReadDeadlines
from gateway.http.state import STATE
from gateway.observability import configure_logging
from gateway.workers import WorkerSet, orphan_shards, serve_own_metrics, supervise

log = structlog.get_logger("gateway")

# Idle keep-alive connections are closed after this (aiohttp's default is an hour). Longer than
# the 60 s idle timeout of common load balancers, so they, not we, close pooled connections.
KEEPALIVE_TIMEOUT_S = 75.0
DRAIN_POLL_S = 1.0  # a drain-only worker checks this often whether its shard is empty


def serve(config: Config, *, listen: str | None = None, workers: int | None = None) -> int:
    """Run the gateway until SIGTERM/SIGINT; returns the process exit code."""
    if listen:
        config = dataclasses.replace(
            config, server=dataclasses.replace(config.server, listen=listen)
        )
    if workers is not None:
        config = dataclasses.replace(
            config, server=dataclasses.replace(config.server, workers=workers)
        )
    validate(config)
    configure_logging(config.log.level, config.log.format)
    _prepare_data_dir(config.data_path)
    _ensure_policy(config)
    tune_allocator()
    if config.server.workers > 1 or orphan_shards(config):
        return supervise(config, _run_worker)
    return _run_worker(config, None, True)


def _run_worker(config: Config, workers: WorkerSet | None, listen: bool) -> int:
    """One gateway process: the only one, or worker `config.worker` of `workers`."""
    try:
        import uvloop  # optional [fast] extra
    except ImportError:
        return asyncio.run(_serve(config, workers, listen))
    return uvloop.run(_serve(config, workers, listen))


def _prepare_data_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-probe"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise StartupError(f"data dir {path} is not writable: {e.strerror or e}") from None


def _ensure_policy(config: Config) -> None:
    path = config.policy_path
    if path.exists():
        return
    token = create_default_policy(path)
    host, _, port = config.server.listen.rpartition(":")
    scheme = "https" if config.server.tls_cert else "http"
    base = f"{scheme}://{host}:{port}"
    print(
        f"""
Created the token policy {path} with one token, "admin" (write + read on every database).
The admin token is shown only this once; keep it somewhere safe:

    {token}

Try a write:

    curl -i "{base}/api/v2/write?bucket=mydb&precision=s" \\
      -H "Authorization: Token {token}" \\
      --data-binary "cpu,host=server01 usage=0.64 $(date +%s)"

Then read it back:  influx-gateway store export --database mydb
""",
        file=sys.stderr,
        flush=True,
    )


def _ssl_context(config: Config) -> ssl.SSLContext | None:
    if not config.server.tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(config.server.tls_cert, config.server.tls_key)
    except (OSError, ssl.SSLError) as e:
        raise StartupError(f"cannot load server.tls_cert/tls_key: {e}") from None
    return context


async def _serve(config: Config, workers: WorkerSet | None, listen: bool) -> int:
    policy = load_policy(config.policy_path)
    app = create_app(config, policy=policy)
    state = app[STATE]
    state.workers = workers
    deadlines = ReadDeadlines(config.server.read_timeout)
    app[READ_DEADLINES] = deadlines
    ssl_context = _ssl_context(config)
    runner = web.AppRunner(
        app,
        access_log=None,
        shutdown_timeout=config.server.shutdown_timeout,
        keepalive_timeout=KEEPALIVE_TIMEOUT_S,
    )
    try:
        await runner.setup()
    except StorageError as e:
        raise StartupError(str(e)) from None
    assert runner.server is not None
    loop = asyncio.get_running_loop()
    if not listen:  # a shard left by an earlier run with more workers: deliver it, then exit
        return await _drain_only(app, runner)
    own_metrics = None
    if workers is not None:
        own_metrics = await serve_own_metrics(
            workers, config.worker, lambda: generate_latest(state.metrics.registry)
        )
    host, _, port = config.server.listen.rpartition(":")
    try:
        listener = await loop.create_server(
            deadlines.protocol_factory(runner.server),
            host.strip("[]") or None,
            int(port),
            ssl=ssl_context,
            # A TLS handshake is part of sending the request: the same bound applies.
            ssl_handshake_timeout=config.server.read_timeout if ssl_context else None,
            backlog=1024,
            reuse_port=workers is not None,
        )
    except OSError as e:
        if own_metrics is not None:
            own_metrics.close()
        await runner.cleanup()
        raise StartupError(f"cannot listen on {config.server.listen}: {e.strerror or e}") from None

    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: _reload_policy(app))
    log.info(
        "listening",
        listen=config.server.listen,
        data_dir=str(config.data_path),
        store=str(config.store_path) if config.store_enabled else None,
        policy=str(config.policy_path),
        pid=os.getpid(),
        worker=config.worker if workers is not None else None,
    )
    freeze_startup_objects()
    await stop.wait()
    log.info("shutting down", timeout_s=float(config.server.shutdown_timeout))
    state.shutting_down = True
    listener.close()  # stop accepting; runner.cleanup finishes in-flight requests
    if own_metrics is not None:
        own_metrics.close()
    await runner.cleanup()
    log.info("stopped")
    return 0


async def _drain_only(app: web.Application, runner: web.AppRunner) -> int:
    """Forward a leftover shard until nothing is pending (or SIGTERM), then stop."""
    state = app[STATE]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    log.info("draining a leftover worker shard", buffer=str(state.config.buffer_path))
    while not stop.is_set():
        pending = await state.destinations.pending_records()
        if not pending:
            log.info("leftover worker shard drained", buffer=str(state.config.buffer_path))
            break
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), DRAIN_POLL_S)
    state.shutting_down = True
    await runner.cleanup()
    return 0


def _reload_policy(app: web.Application) -> None:
    """SIGHUP: reload the policy file soon (off the loop); on error the old one stays in force."""
    app[POLICY_WATCHER].reload_soon("SIGHUP")
