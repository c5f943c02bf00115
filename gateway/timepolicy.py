"""Which timestamp rules apply to a database: the [precision] defaults and their overrides."""

from __future__ import annotations

from fnmatch import fnmatchcase

from gateway.config import PrecisionConfig
from gateway.lineprotocol import TimeRules

_NS = 10**9


class TimePolicy:
    """Resolves the TimeRules for a database: the first override whose globs match wins."""

    def __init__(self, config: PrecisionConfig) -> None:
        self._config = config
        self._default = TimeRules(
            guard=config.guard,
            max_future_ns=int(config.max_future * _NS),
            min_time_ns=int(config.min_time),
        )
        self._cache: dict[str, TimeRules] = {}

    def rules_for(self, database: str) -> TimeRules:
        """The rules for one database (cached)."""
        rules = self._cache.get(database)
        if rules is None:
            rules = self._resolve(database)
            if len(self._cache) < 10_000:
                self._cache[database] = rules
        return rules

    def _resolve(self, database: str) -> TimeRules:
        base = self._default
        for override in self._config.overrides:
            if any(fnmatchcase(database, pattern) for pattern in override.databases):
                return TimeRules(
                    guard=base.guard if override.guard is None else override.guard,
                    max_future_ns=base.max_future_ns
                    if override.max_future is None
                    else int(override.max_future * _NS),
                    min_time_ns=base.min_time_ns
                    if override.min_time is None
                    else int(override.min_time),
                    round_to_ns=0 if override.round_to is None else int(override.round_to * _NS),
                )
        return base
