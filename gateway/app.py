"""create_app: wire config, policy, routing, storage and metrics into an aiohttp application.

The data flow is visible in the routes: the write handlers validate and hand each accepted
write to the app's sink (Destinations: the write-ahead log, or the local store when no upstream
is configured), which returns once the write is durable. Storage and the delivery loops open
and close with the app (cleanup_ctx), so tests and `run` share one lifecycle.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry

from gateway import __version__
from gateway.auth.policy import Policy
from gateway.auth.policyfile import load_policy
from gateway.auth.policywatch import PolicyWatcher
from gateway.auth.ratelimit import RateLimiter
from gateway.buffer.segmentlog import RecoveryReport
from gateway.config import Config
from gateway.destinations import Destinations
from gateway.http import endpoints
from gateway.http.middleware import edge
from gateway.http.offload import validation_executor
from gateway.http.state import STATE, GatewayState
from gateway.http.write import RATE_LIMITER, v1_write, v2_write
from gateway.observability import Metrics
from gateway.routing import Router, compile_rewrite
from gateway.store import LocalStore
from gateway.timepolicy import TimePolicy

RETENTION_INTERVAL_S = 60.0
log = structlog.get_logger("gateway")

# The policy file watcher: `run` reloads through it on SIGHUP too, so both share one state.
POLICY_WATCHER = web.AppKey("gateway_policy_watcher", PolicyWatcher)


def build_router(config: Config) -> Router:
    """The router for this config: rewrite rules, upstream patterns, store patterns."""
    return Router(
        [compile_rewrite(rule.match, rule.database) for rule in config.rewrite],
        [(up.name, up.databases) for up in config.upstreams],
        config.store.databases if config.store_enabled else None,
    )


def create_app(
    config: Config,
    *,
    clock: Callable[[], int] = time.time_ns,
    registry: CollectorRegistry | None = None,
    policy: Policy | None = None,
) -> web.Application:
    """The gateway as an aiohttp application; storage opens on startup, closes on cleanup."""
    if policy is None:
        policy = load_policy(config.policy_path)
    metrics = Metrics(registry if registry is not None else CollectorRegistry())
    router = build_router(config)
    destinations = Destinations(config, router=router, metrics=metrics, clock=clock)
    state = GatewayState(
        config=config,
        metrics=metrics,
        policy=policy,
        router=router,
        time_policy=TimePolicy(config.precision),
        destinations=destinations,
        clock=clock,
        version=__version__,
    )
    app = web.Application(
        middlewares=[edge],
        client_max_size=config.server.max_body_bytes,
        handler_args={
            "max_line_size": config.server.max_header_bytes,
            "max_field_size": config.server.max_header_bytes,
            # We decode Content-Encoding ourselves: with a size cap, and raw bytes for "unknown".
            "auto_decompress": False,
        },
    )
    app[STATE] = state
    rate_limiter = RateLimiter(config.server.workers)
    app[RATE_LIMITER] = rate_limiter

    def apply_policy(new: Policy) -> None:
        state.policy = new
        limits = {t.name: t.rate_limit for t in new.tokens if t.rate_limit is not None}
        rate_limiter.update(limits, clock())

    watcher = PolicyWatcher(config.policy_path, apply=apply_policy, reloads=metrics.policy_reloads)
    app[POLICY_WATCHER] = watcher
    app.router.add_post("/api/v2/write", v2_write)
    app.router.add_post("/write", v1_write)
    app.router.add_get("/ping", endpoints.ping)
    app.router.add_get("/health", endpoints.health)
    app.router.add_get("/ready", endpoints.ready)
    app.router.add_get("/metrics", endpoints.metrics)
    app.router.add_route("*", "/api/v2/query", endpoints.v2_query)
    app.router.add_get("/query", endpoints.query)
    app.router.add_post("/query", endpoints.query)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        state.validators = validation_executor(config.server.validation_nice)
        reports = await asyncio.to_thread(destinations.open)
        _report_recovery(reports, metrics)
        await destinations.start()
        retention = None
        if destinations.store is not None:
            retention = asyncio.create_task(_retention_loop(destinations.store))
        await asyncio.to_thread(watcher.prime)
        watch = asyncio.create_task(watcher.run())
        state.ready = True
        yield
        state.ready = False
        state.shutting_down = True
        watch.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watch
        if retention is not None:
            retention.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await retention
        await destinations.stop(config.server.shutdown_timeout)
        state.validators.shutdown(wait=False)  # requests are over: nothing is running there
        state.validators = None

    app.cleanup_ctx.append(lifecycle)
    return app


def _report_recovery(reports: list[tuple[str, RecoveryReport]], metrics: Metrics) -> None:
    """Log and count every torn tail that opening storage truncated."""
    for where, report in reports:
        if report.torn_tails:
            metrics.storage_torn_tails.inc(report.torn_tails)
            metrics.storage_torn_bytes.inc(report.torn_bytes)
            log.warning(
                "truncated a torn tail (an unacknowledged write cut short by a crash)",
                log=where,
                torn_bytes=report.torn_bytes,
                torn_tails=report.torn_tails,
            )


async def _retention_loop(store: LocalStore) -> None:
    """Enforce the store's retention at start-up and every minute."""
    while True:
        try:
            freed = await asyncio.to_thread(store.enforce_retention)
            if freed:
                log.info("retention enforced", bytes_freed=freed)
        except Exception:
            log.exception("retention sweep failed")
        await asyncio.sleep(RETENTION_INTERVAL_S)
