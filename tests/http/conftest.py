"""Fixtures for HTTP tests: a gateway app on a temp data dir, a fixed clock, known tokens."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

from gateway.app import create_app
from gateway.auth.policy import Policy, TokenEntry, token_digest
from gateway.config import Config, load_config
from gateway.http.state import STATE, GatewayState

NOW_NS = 1_700_000_000 * 10**9  # 2023-11-14T22:13:20Z
WRITER = "igw_writer-token-value"
READER = "igw_reader-token-value"
EXPIRED = "igw_expired-token-value"
ALL = "igw_all-token-value"

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


def make_policy() -> Policy:
    """Four tokens: a writer on mydb/edge_*, a reader, an expired one, and one for everything."""
    return Policy(
        tokens=(
            TokenEntry(
                "writer", token_digest(WRITER), ("mydb", "edge_*", "db/rp"), ("mydb",), None, None
            ),
            TokenEntry("reader", token_digest(READER), (), ("mydb",), None, None),
            TokenEntry(
                "expired",
                token_digest(EXPIRED),
                ("*",),
                ("*",),
                datetime(2023, 1, 1, tzinfo=UTC),
                None,
            ),
            TokenEntry("all", token_digest(ALL), ("*",), ("*",), None, None),
        ),
        source="test-policy",
    )


@pytest.fixture(name="make_config")
def fixture_make_config(tmp_path: Path) -> Callable[..., Config]:
    """Build a config on tmp_path from TOML text plus server option overrides."""

    def make(toml: str = "", **server: Any) -> Config:
        path = tmp_path / "gw.toml"
        path.write_text(f'data_dir = "{tmp_path / "data"}"\n{toml}')
        config = load_config(path, env={})
        if server:
            config = dataclasses.replace(
                config, server=dataclasses.replace(config.server, **server)
            )
        return config

    return make


@pytest.fixture(name="gateway")
def fixture_gateway(
    aiohttp_client: ClientFactory, make_config: Callable[..., Config]
) -> Callable[..., Awaitable[TestClient[Any, Any]]]:
    """Start a gateway app (fixed clock, fresh registry) and return a test client for it."""

    async def start(toml: str = "", **server: Any) -> TestClient[Any, Any]:
        app = create_app(
            make_config(toml, **server),
            clock=lambda: NOW_NS,
            registry=CollectorRegistry(),
            policy=make_policy(),
        )
        return await aiohttp_client(app)

    return start


def state_of(client: TestClient[Any, Any]) -> GatewayState:
    """The gateway state behind a test client."""
    app = client.server.app
    assert isinstance(app, web.Application)
    return app[STATE]


def auth(token: str) -> dict[str, str]:
    """An Authorization header for a token."""
    return {"Authorization": f"Token {token}"}


def exported(client: TestClient[Any, Any], database: str) -> bytes:
    """Everything the local store holds for a database, as ns line protocol."""
    store: Any = state_of(client).destinations.store
    return b"".join(store.export(database))


def basic(user: str, password: str) -> dict[str, str]:
    """A Basic Authorization header."""
    import base64

    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}
