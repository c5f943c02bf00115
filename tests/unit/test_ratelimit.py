"""The per-token token bucket (gateway.auth.ratelimit): burst, debt, Retry-After, invariants."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.auth.ratelimit import NS_PER_S, RateDecision, RateLimiter, TokenBucket

T0 = 1_700_000_000 * NS_PER_S

rates = st.integers(min_value=1, max_value=1_000_000)
costs = st.integers(min_value=0, max_value=3_000_000)
steps = st.lists(
    st.tuples(st.integers(min_value=0, max_value=3 * NS_PER_S), costs), min_size=1, max_size=40
)


def test_new_bucket_is_full() -> None:
    """A token's first request may use the whole burst: one second of its rate."""
    bucket = TokenBucket(100, T0)
    assert True is bucket.admit(100, T0).admitted


def test_burst_is_one_second_of_rate() -> None:
    """After the burst is used, the next line is refused at the same instant."""
    bucket = TokenBucket(100, T0)
    bucket.admit(100, T0)
    assert False is bucket.admit(1, T0).admitted


def test_refills_at_the_rate() -> None:
    """Half a second later, half the burst is available again."""
    bucket = TokenBucket(100, T0)
    bucket.admit(100, T0)
    assert 50.0 == bucket.level(T0 + NS_PER_S // 2)


def test_never_holds_more_than_the_burst() -> None:
    """An idle hour does not save up more than one second of lines."""
    bucket = TokenBucket(100, T0)
    assert 100.0 == bucket.level(T0 + 3600 * NS_PER_S)


def test_request_larger_than_burst_is_admitted_when_full() -> None:
    """A request above the burst passes when the bucket is full."""
    bucket = TokenBucket(100, T0)
    assert True is bucket.admit(250, T0).admitted


def test_request_larger_than_burst_leaves_debt() -> None:
    """The large request takes all its lines, leaving the bucket in debt."""
    bucket = TokenBucket(100, T0)
    bucket.admit(250, T0)
    assert -150.0 == bucket.level(T0)


def test_debt_is_paid_off_before_the_next_request() -> None:
    """In debt by 150 lines at 100/s, one line waits 1.51 s: Retry-After 2."""
    bucket = TokenBucket(100, T0)
    bucket.admit(250, T0)
    decision = bucket.admit(1, T0)
    assert (False, 1_510_000_000, 2) == (
        decision.admitted,
        decision.wait_ns,
        decision.retry_after_s,
    )


def test_request_larger_than_burst_waits_for_a_full_bucket() -> None:
    """A large request when the bucket is not full waits until it is."""
    bucket = TokenBucket(100, T0)
    bucket.admit(30, T0)
    assert 300_000_000 == bucket.admit(500, T0).wait_ns


def test_refused_request_takes_nothing() -> None:
    """A refused request leaves the bucket as it was."""
    bucket = TokenBucket(100, T0)
    bucket.admit(60, T0)
    bucket.admit(50, T0)
    assert 40.0 == bucket.level(T0)


def test_retry_after_is_at_least_one_second() -> None:
    """A wait of a few nanoseconds still reads Retry-After: 1."""
    assert 1 == RateDecision(False, 3).retry_after_s


def test_retry_after_rounds_up_to_whole_seconds() -> None:
    """Retry-After is the wait rounded up: 2.000000001 s -> 3."""
    assert 3 == RateDecision(False, 2 * NS_PER_S + 1).retry_after_s


def test_admitted_decision_has_no_retry_after() -> None:
    """An admitted request has Retry-After 0 (no header is sent)."""
    assert 0 == RateDecision(True).retry_after_s


def test_clock_stepping_back_adds_nothing() -> None:
    """A clock that steps back neither refills nor drains the bucket."""
    bucket = TokenBucket(100, T0)
    bucket.admit(100, T0)
    assert 0.0 == bucket.level(T0 - 10 * NS_PER_S)


def test_clock_stepping_back_does_not_delay_refill() -> None:
    """After a step back, refill resumes from the latest time seen, not the earlier one."""
    bucket = TokenBucket(100, T0)
    bucket.admit(100, T0)
    bucket.level(T0 - 10 * NS_PER_S)
    assert 100.0 == bucket.level(T0 + NS_PER_S)


def test_check_takes_nothing() -> None:
    """check answers without charging the bucket."""
    bucket = TokenBucket(100, T0)
    bucket.check(100, T0)
    assert 100.0 == bucket.level(T0)


def test_refund_gives_lines_back_up_to_the_burst() -> None:
    """A refund returns admitted lines, never beyond a full bucket."""
    bucket = TokenBucket(100, T0)
    bucket.admit(70, T0)
    bucket.refund(500, T0)
    assert 100.0 == bucket.level(T0)


def test_lower_rate_clips_what_is_saved() -> None:
    """A reload that lowers the rate lowers the burst at once."""
    bucket = TokenBucket(100, T0)
    bucket.set_rate(10, T0)
    assert 10.0 == bucket.level(T0)


@pytest.mark.parametrize("rate", [0, -5])
def test_rate_must_be_positive(rate: int) -> None:
    """A bucket needs a positive rate."""
    with pytest.raises(ValueError, match="positive"):
        TokenBucket(rate, T0)


def test_limiter_keeps_one_bucket_per_token() -> None:
    """One token using up its burst does not affect another."""
    limiter = RateLimiter()
    limiter.admit("a", 10, 10, T0)
    assert (False, True) == (
        limiter.admit("a", 10, 1, T0).admitted,
        limiter.admit("b", 10, 10, T0).admitted,
    )


def test_limiter_follows_a_changed_rate() -> None:
    """A token whose rate_limit changed (policy reload) is checked against the new rate."""
    limiter = RateLimiter()
    limiter.admit("a", 10, 10, T0)
    assert 1_000_000 == limiter.check("a", 1000, 1, T0).wait_ns


def test_limiter_update_forgets_tokens_no_longer_limited() -> None:
    """update (a policy reload) drops the buckets of tokens without a limit now."""
    limiter = RateLimiter()
    limiter.admit("a", 10, 1, T0)
    limiter.admit("b", 10, 1, T0)
    limiter.update({"b": 10}, T0)
    assert (False, True) == ("a" in limiter, "b" in limiter)


def test_limiter_update_applies_a_new_rate_from_then_on() -> None:
    """A raised limit refills at the new rate from the reload on."""
    limiter = RateLimiter()
    limiter.admit("a", 10, 10, T0)
    limiter.update({"a": 1000}, T0)
    assert True is limiter.admit("a", 1000, 500, T0 + NS_PER_S // 2).admitted


def test_limiter_refund_of_unknown_token_is_harmless() -> None:
    """Refunding a token without a bucket does nothing."""
    limiter = RateLimiter()
    limiter.refund("nobody", 5, T0)
    assert "nobody" not in limiter


# -- properties -----------------------------------------------------------------------------------


@given(rate=rates, plan=steps)
def test_level_never_exceeds_the_burst(rate: int, plan: list[tuple[int, int]]) -> None:
    """Whatever the traffic, the bucket never holds more than one second of lines."""
    bucket = TokenBucket(rate, T0)
    now = T0
    for gap, cost in plan:
        now += gap
        bucket.admit(cost, now)
        assert bucket.level(now) <= rate


@given(rate=rates, plan=steps)
def test_admitted_lines_are_bounded(rate: int, plan: list[tuple[int, int]]) -> None:
    """Lines admitted over a span never exceed rate x span plus the larger of burst and request."""
    bucket = TokenBucket(rate, T0)
    now, admitted, largest = T0, 0, 0
    for gap, cost in plan:
        now += gap
        if bucket.admit(cost, now).admitted:
            admitted += cost
            largest = max(largest, cost)
    assert admitted * NS_PER_S <= rate * (now - T0) + max(rate, largest) * NS_PER_S


@given(rate=rates, plan=steps, cost=costs)
def test_retry_after_is_exact(rate: int, plan: list[tuple[int, int]], cost: int) -> None:
    """A refused request is admitted exactly wait_ns later, and not one nanosecond sooner."""
    bucket = TokenBucket(rate, T0)
    now = T0
    for gap, step_cost in plan:
        now += gap
        bucket.admit(step_cost, now)
    decision = bucket.check(cost, now)
    if decision.admitted:
        return
    assert (False, True) == (
        bucket.check(cost, now + decision.wait_ns - 1).admitted,
        bucket.check(cost, now + decision.wait_ns).admitted,
    )


@given(rate=rates, plan=steps, cost=costs)
def test_retry_after_seconds_suffice(rate: int, plan: list[tuple[int, int]], cost: int) -> None:
    """Retrying after Retry-After whole seconds (with no other traffic) is admitted."""
    bucket = TokenBucket(rate, T0)
    now = T0
    for gap, step_cost in plan:
        now += gap
        bucket.admit(step_cost, now)
    decision = bucket.admit(cost, now)
    if not decision.admitted:
        assert bucket.admit(cost, now + decision.retry_after_s * NS_PER_S).admitted


@given(rate=rates, cost=st.integers(min_value=1, max_value=3_000_000))
def test_full_bucket_admits_any_request(rate: int, cost: int) -> None:
    """A full bucket admits a request of any size (large ones go into debt)."""
    assert TokenBucket(rate, T0).admit(cost, T0).admitted


@given(rate=rates, plan=steps, cost=costs)
def test_refused_request_changes_nothing(rate: int, plan: list[tuple[int, int]], cost: int) -> None:
    """A refused admit leaves the same level as a plain check would."""
    bucket = TokenBucket(rate, T0)
    now = T0
    for gap, step_cost in plan:
        now += gap
        bucket.admit(step_cost, now)
    before = bucket.level(now)
    if not bucket.admit(cost, now).admitted:
        assert before == bucket.level(now)


def test_each_of_n_workers_enforces_its_share_of_the_rate() -> None:
    """With `--workers 2`, each worker's limiter admits half (rounded up) of a token's rate,
    so the gateway as a whole stays within it."""
    now = 10 * NS_PER_S
    limiter = RateLimiter(workers=2)
    assert limiter.admit("t", 1000, 500, now).admitted
    assert not limiter.admit("t", 1000, 1, now).admitted
    odd = RateLimiter(workers=2)
    assert odd.admit("t", 3, 2, now).admitted
    assert not odd.admit("t", 3, 1, now).admitted
    limiter.update({"t": 4000}, now + NS_PER_S)  # a reload applies the share of the new rate
    assert limiter.admit("t", 4000, 2000, now + 2 * NS_PER_S).admitted
    assert not limiter.admit("t", 4000, 1, now + 2 * NS_PER_S).admitted
