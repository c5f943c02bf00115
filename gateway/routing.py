"""Where a write goes (SPEC 5): source name, rewrite rules, database name check, upstream selection.

Pure: built from config values, no I/O. The HTTP layer turns the request's bucket (v2) or db/rp
(v1) into a source name, ``Router.database`` rewrites and checks it, and ``Router.targets`` says
which upstreams (and whether the local store) receive it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

from gateway.errors import GatewayError

DATABASE_NAME_RULE = "use 1-64 characters of A-Za-z0-9_-/"
_DATABASE_NAME = re.compile(r"[A-Za-z0-9_/-]{1,64}")
_DEFAULT_RETENTION_POLICIES = frozenset({"", "autogen", "default"})
_MAX_NAME_IN_MESSAGE = 100  # a hostile 1 MB bucket name must not become a 1 MB error body
TARGETS_CACHE_SIZE = 10_000


class InvalidDatabase(GatewayError):
    """The database name (after rewriting) breaks the naming rule; answered as 400 invalid."""

    def __init__(self, name: str, source_name: str | None = None) -> None:
        self.name = name
        self.source_name = source_name
        rewritten = "" if source_name is None else f" (rewritten from {_quote(source_name)})"
        super().__init__(f"invalid database name {_quote(name)}{rewritten}: {DATABASE_NAME_RULE}")


@dataclass(frozen=True, slots=True)
class RewriteRule:
    """``[[rewrite]]``: a source name that fully matches ``match`` becomes ``database``."""

    match: re.Pattern[str]
    database: str  # template: \1, \g<1>, \g<name> refer to groups of `match`


def compile_rewrite(match: str, database: str) -> RewriteRule:
    """Build a rule from config strings; ValueError says what is wrong with either."""
    try:
        pattern = re.compile(match)
    except re.error as exc:
        raise ValueError(f"rewrite match {_quote(match)} is not a valid regex: {exc}") from None
    try:
        # re checks a replacement template (group numbers and names against the pattern, escapes)
        # before it searches, so substituting into "" validates the template without a match.
        # Python 3.11 reports an unknown group name as IndexError, other problems as re.error.
        pattern.sub(database, "")
    except (re.error, IndexError) as exc:
        raise ValueError(
            f"rewrite database {_quote(database)} does not fit match {_quote(match)}: {exc}"
            f" (the match has {pattern.groups} group{'' if pattern.groups == 1 else 's'})"
        ) from None
    return RewriteRule(match=pattern, database=database)


def source_name_v2(bucket: str) -> str:
    """A v2 write's source name: the bucket itself."""
    return bucket


def source_name_v1(db: str, rp: str | None) -> str:
    """A v1 write's source name: ``db``, or ``db/rp`` unless rp is empty, autogen or default."""
    if rp is None or rp in _DEFAULT_RETENTION_POLICIES:
        return db
    return f"{db}/{rp}"


@dataclass(frozen=True, slots=True)
class Targets:
    """Who receives a write to one database: upstream names in config order, and the store."""

    upstreams: tuple[str, ...]
    store: bool

    @property
    def empty(self) -> bool:
        """True when nothing receives the write (answered 404, nothing stored)."""
        return not self.upstreams and not self.store


class Router:
    """Rewrite rules plus upstream and store database patterns, with a bounded targets cache."""

    def __init__(
        self,
        rewrites: Sequence[RewriteRule],
        upstreams: Sequence[tuple[str, Sequence[str]]],
        store_databases: Sequence[str] | None,  # None: the store is disabled
        *,
        cache_size: int = TARGETS_CACHE_SIZE,
    ) -> None:
        self._rewrites = tuple(rewrites)
        self._upstreams = tuple((name, tuple(patterns)) for name, patterns in upstreams)
        self._store = None if store_databases is None else tuple(store_databases)
        self._cache_size = cache_size
        self._cache: dict[str, Targets] = {}

    def database(self, source_name: str) -> str:
        """The database for a source name: first fully matching rewrite, then the name check."""
        for rule in self._rewrites:
            found = rule.match.fullmatch(source_name)
            if found is not None:
                name = found.expand(rule.database)
                if not _DATABASE_NAME.fullmatch(name):
                    raise InvalidDatabase(name, None if name == source_name else source_name)
                return name
        if not _DATABASE_NAME.fullmatch(source_name):
            raise InvalidDatabase(source_name)
        return source_name

    def targets(self, database: str) -> Targets:
        """Every upstream whose patterns match ``database``, and whether the store takes it."""
        cached = self._cache.get(database)
        if cached is not None:
            return cached
        targets = Targets(
            upstreams=tuple(
                name for name, patterns in self._upstreams if _matches_any(patterns, database)
            ),
            store=self._store is not None and _matches_any(self._store, database),
        )
        if len(self._cache) >= self._cache_size:
            # Evict the oldest entry; insertion order is dict order.
            del self._cache[next(iter(self._cache))]
        self._cache[database] = targets
        return targets


def _matches_any(patterns: tuple[str, ...], database: str) -> bool:
    # fnmatchcase: `*` also matches `/`, and case matters (as database names do upstream).
    return any(fnmatchcase(database, pattern) for pattern in patterns)


def _quote(value: str) -> str:
    if len(value) > _MAX_NAME_IN_MESSAGE:
        value = value[:_MAX_NAME_IN_MESSAGE] + "..."
    return json.dumps(value, ensure_ascii=False)
