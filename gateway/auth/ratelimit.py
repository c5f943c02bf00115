"""Per-token rate limits (SPEC 4 ``rate_limit``): a token bucket of lines per second.

Pure: no I/O and no clock of its own; every call is given ``now_ns``. The write pipeline owns
the one ``RateLimiter`` of a gateway and asks it about each request's accepted lines.

The bucket holds at most one second of the token's rate (the burst). A request of ``cost`` lines
is admitted when the bucket holds that many, or, for a request larger than the burst, when the
bucket is full; admission takes ``cost`` out, so a large request leaves the bucket in debt and
the token waits until it is paid off. A refused request takes nothing. Retry-After is the whole
number of seconds until the same request would be admitted (at least 1).

Arithmetic is exact: the level is kept in line-nanoseconds (one line = 10**9 units) and refills
by ``rate`` units per nanosecond, so no rounding ever admits a line too many. A clock that steps
back refills nothing (and never drains the bucket).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

NS_PER_S = 1_000_000_000
_UNITS_PER_LINE = NS_PER_S


@dataclass(frozen=True, slots=True)
class RateDecision:
    """The answer for one request: admitted, or refused with the wait until it would be."""

    admitted: bool
    wait_ns: int = 0  # 0 when admitted

    @property
    def retry_after_s(self) -> int:
        """Whole seconds to wait before retrying, at least 1 (0 when admitted)."""
        if self.admitted:
            return 0
        return max(1, -(-self.wait_ns // NS_PER_S))


class TokenBucket:
    """One token's bucket: ``rate`` lines per second, burst of one second (``rate`` lines)."""

    __slots__ = ("_level", "_rate", "_updated_ns")

    def __init__(self, rate: int, now_ns: int) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be a positive number of lines per second, not {rate}")
        self._rate = rate
        self._level = self.capacity_units  # a new bucket starts full
        self._updated_ns = now_ns

    @property
    def rate(self) -> int:
        """Lines per second."""
        return self._rate

    @property
    def burst(self) -> int:
        """The most lines the bucket holds: one second of the rate."""
        return self._rate

    @property
    def capacity_units(self) -> int:
        """The burst in internal units (line-nanoseconds)."""
        return self._rate * _UNITS_PER_LINE

    def level(self, now_ns: int) -> float:
        """Lines available at ``now_ns`` (negative while in debt); for tests and messages."""
        self._refill(now_ns)
        return self._level / _UNITS_PER_LINE

    def set_rate(self, rate: int, now_ns: int) -> None:
        """Change the rate (a policy reload); what is in the bucket stays, up to the new burst."""
        if rate <= 0:
            raise ValueError(f"rate must be a positive number of lines per second, not {rate}")
        self._refill(now_ns)
        self._rate = rate
        self._level = min(self._level, self.capacity_units)

    def check(self, cost: int, now_ns: int) -> RateDecision:
        """Whether ``cost`` lines would be admitted now, without taking them."""
        self._refill(now_ns)
        need = min(cost * _UNITS_PER_LINE, self.capacity_units)
        if self._level >= need:
            return RateDecision(True)
        # Ceiling division: the first whole nanosecond at which the level reaches `need`.
        return RateDecision(False, -(-(need - self._level) // self._rate))

    def admit(self, cost: int, now_ns: int) -> RateDecision:
        """Admit ``cost`` lines and take them out of the bucket, or refuse and take nothing."""
        if cost < 0:
            raise ValueError(f"cost must not be negative, not {cost}")
        decision = self.check(cost, now_ns)
        if decision.admitted:
            self._level -= cost * _UNITS_PER_LINE
        return decision

    def refund(self, cost: int, now_ns: int) -> None:
        """Give back lines that were admitted but not kept (the write failed afterwards)."""
        self._refill(now_ns)
        self._level = min(self.capacity_units, self._level + cost * _UNITS_PER_LINE)

    def _refill(self, now_ns: int) -> None:
        elapsed = now_ns - self._updated_ns
        if elapsed <= 0:
            return  # the same instant, or a clock that stepped back: nothing to add
        self._level = min(self.capacity_units, self._level + elapsed * self._rate)
        self._updated_ns = now_ns


class RateLimiter:
    """The buckets of every rate-limited token, by token name.

    With `run --workers N` every worker has its own limiter enforcing 1/N of each rate (rounded
    up), so the gateway as a whole never lets a token exceed its rate.
    """

    def __init__(self, workers: int = 1) -> None:
        self._buckets: dict[str, TokenBucket] = {}
        self._workers = workers

    def _share(self, rate: int) -> int:
        """This process's part of a token's rate: with N workers each enforces rate / N."""
        return max(1, -(-rate // self._workers))

    def _bucket(self, name: str, rate: int, now_ns: int) -> TokenBucket:
        rate = self._share(rate)
        bucket = self._buckets.get(name)
        if bucket is None:
            bucket = self._buckets[name] = TokenBucket(rate, now_ns)
        elif bucket.rate != rate:
            bucket.set_rate(rate, now_ns)
        return bucket

    def check(self, name: str, rate: int, cost: int, now_ns: int) -> RateDecision:
        """Whether token ``name`` (limited to ``rate``) may send ``cost`` lines now; takes none."""
        return self._bucket(name, rate, now_ns).check(cost, now_ns)

    def admit(self, name: str, rate: int, cost: int, now_ns: int) -> RateDecision:
        """Admit and charge ``cost`` lines for token ``name``, or refuse and charge nothing."""
        return self._bucket(name, rate, now_ns).admit(cost, now_ns)

    def refund(self, name: str, cost: int, now_ns: int) -> None:
        """Give back ``cost`` lines to token ``name`` (its write failed after admission)."""
        bucket = self._buckets.get(name)
        if bucket is not None:
            bucket.refund(cost, now_ns)

    def update(self, limits: Mapping[str, int], now_ns: int) -> None:
        """After a policy reload: new rates apply from now; unlimited tokens' buckets go."""
        for name in [name for name in self._buckets if name not in limits]:
            del self._buckets[name]
        for name, bucket in self._buckets.items():
            share = self._share(limits[name])
            if bucket.rate != share:
                bucket.set_rate(share, now_ns)

    def __contains__(self, name: object) -> bool:
        return name in self._buckets
