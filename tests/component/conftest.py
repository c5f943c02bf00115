"""Fixtures shared by the component tests."""

from __future__ import annotations

import pytest

from gateway.buffer import record as record_module


@pytest.fixture(name="inflations")
def fixture_inflations(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The sizes of the stored gzip streams the log's records inflate from now on (each call of
    record.gunzip_member, in any thread)."""
    sizes: list[int] = []
    original = record_module.gunzip_member

    def counting(raw: bytes, max_bytes: int) -> tuple[bytes, bool]:
        sizes.append(len(raw))
        return original(raw, max_bytes)

    monkeypatch.setattr(record_module, "gunzip_member", counting)
    return sizes
