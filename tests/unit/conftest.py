"""Unit test configuration: the line protocol test modules run once per built implementation."""

from __future__ import annotations

from collections.abc import Iterator
from unittest import mock

import pytest

from gateway.lineprotocol import implementation
from gateway.lineprotocol.implementation import Implementation

# Every test in these modules runs with `validate` defaulting to each implementation in turn
# (the C accelerator when it is built, and pure Python), so the whole suite proves both.
_PER_IMPLEMENTATION = frozenset(
    {"test_lineprotocol", "test_lineprotocol_points", "test_lineprotocol_properties"}
)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize the line protocol test modules over the available implementations."""
    if metafunc.module.__name__.rsplit(".", 1)[-1] in _PER_IMPLEMENTATION:
        metafunc.parametrize(
            "lp_implementation", implementation.AVAILABLE, indirect=True, scope="module"
        )


@pytest.fixture(name="lp_implementation", scope="module", autouse=True)
def fixture_lp_implementation(request: pytest.FixtureRequest) -> Iterator[Implementation | None]:
    """The implementation `validate` uses by default, when the module is parametrized."""
    which: Implementation | None = getattr(request, "param", None)
    if which is None:
        yield None
        return
    with mock.patch.object(implementation, "ACTIVE", which):
        yield which
