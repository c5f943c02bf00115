"""The local stores of every worker shard, read as one (`run --workers N` keeps one per worker).

Read-only: `store export|stats` and `replay --from-store` see every accepted write whichever
worker took it. A database's records come shard after shard (within a shard, in append order).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence

from gateway.buffer.record import Record
from gateway.errors import CorruptRecordError
from gateway.store.localstore import LocalStore
from gateway.store.query import DatabaseStats, database_stats, export_lines


class StoreShards:
    """Several read-only LocalStores behaving as one."""

    def __init__(self, stores: Sequence[LocalStore]) -> None:
        self.stores = list(stores)

    def databases(self) -> list[str]:
        """The databases of every shard, sorted."""
        return sorted({db for store in self.stores for db in store.databases()})

    @property
    def damage(self) -> list[CorruptRecordError]:
        """What reading skipped so far, in every shard (see LocalStore.records)."""
        return [e for store in self.stores for e in store.damage]

    def records(self, database: str) -> Iterator[Record]:
        """Every record of `database`, shard after shard."""
        return itertools.chain.from_iterable(store.records(database) for store in self.stores)

    def export(
        self,
        database: str,
        *,
        measurement: str | None = None,
        start_ns: int | None = None,
        end_ns: int | None = None,
    ) -> Iterator[bytes]:
        """Lines of `database` in ns from every shard, start inclusive, end exclusive."""
        yield from export_lines(
            self.records(database), measurement=measurement, start_ns=start_ns, end_ns=end_ns
        )

    def stats(self) -> list[DatabaseStats]:
        """Per database over all shards (series and measurements counted once)."""
        return [
            database_stats(
                database,
                self.records(database),
                sum(store.bytes_on_disk(database) for store in self.stores),
            )
            for database in self.databases()
        ]
