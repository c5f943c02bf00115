"""What the handlers share: the gateway's state (on the app) and the per-request log record."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import datetime

from aiohttp import web

from gateway.auth.policy import Policy
from gateway.config import Config
from gateway.destinations import Destinations
from gateway.observability import Metrics
from gateway.routing import Router
from gateway.timepolicy import TimePolicy
from gateway.workers import WorkerSet


@dataclass
class GatewayState:
    """Everything a request handler needs, built once by create_app."""

    config: Config
    metrics: Metrics
    policy: Policy
    router: Router
    time_policy: TimePolicy
    destinations: Destinations  # where accepted writes go; append() returns once durable
    clock: Callable[[], int]  # nanoseconds since the epoch
    version: str
    ready: bool = False
    shutting_down: bool = False
    in_flight: int = 0
    workers: WorkerSet | None = None  # the worker processes, with `run --workers N`
    validators: Executor | None = None  # large bodies are validated here (None: the loop's default)

    def wall_clock(self) -> datetime:
        """The injected clock as an aware UTC datetime (for token expiry)."""
        from datetime import UTC

        return datetime.fromtimestamp(self.clock() / 1e9, tz=UTC)


STATE = web.AppKey("gateway_state", GatewayState)


@dataclass
class RequestLog:
    """The fields of the one canonical log line written per request."""

    request_id: str
    trace_span: str | None
    endpoint: str
    token: str | None = None
    database: str | None = None
    lines_accepted: int = 0
    lines_rejected: int = 0
    bytes: int = 0
    encoding: str | None = None
    extra: dict[str, object] = field(default_factory=dict)


LOG = web.RequestKey("gateway_request_log", RequestLog)
