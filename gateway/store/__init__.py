"""The local store: the embedded default destination when no upstream is configured."""

from __future__ import annotations

from gateway.store.localstore import LocalStore
from gateway.store.query import DatabaseStats

__all__ = ["DatabaseStats", "LocalStore"]
