"""Token buckets: a steady rate with a burst allowance, exact on a fake clock; shared per
key (a client IP); and the inbound limiter that tells a flood from a burst."""

from __future__ import annotations

import pytest

from gateway.limits import InboundLimiter, KeyedBuckets, TokenBucket


def test_burst_then_steady_rate() -> None:
    b = TokenBucket(rate_per_s=10, burst=5, now=0.0)
    assert [b.take(0.0) for _ in range(6)] == [True] * 5 + [False]
    assert b.take(0.05) is False  # half a token
    assert b.take(0.1) is True  # one token after 0.1 s
    assert b.take(0.1) is False


def test_tokens_never_exceed_the_burst() -> None:
    b = TokenBucket(rate_per_s=100, burst=3, now=0.0)
    assert sum(b.take(1000.0) for _ in range(10)) == 3


def test_reserve_goes_into_debt_and_says_how_long_to_wait() -> None:
    b = TokenBucket(rate_per_s=10, burst=2, now=0.0)
    assert [b.reserve(0.0) for _ in range(2)] == [0.0, 0.0]
    assert b.reserve(0.0) == pytest.approx(0.1)  # one token owed
    assert b.reserve(0.0) == pytest.approx(0.2)  # two owed
    assert b.reserve(0.3) == pytest.approx(0.0)  # debt paid, a token spent


def test_keyed_buckets_share_one_bucket_per_key_until_the_last_holder_goes() -> None:
    keyed = KeyedBuckets(rate_per_s=1, burst=2)
    a = keyed.acquire("10.0.0.1", 0.0)
    assert keyed.acquire("10.0.0.1", 0.0) is a
    assert keyed.acquire("10.0.0.2", 0.0) is not a
    assert len(keyed) == 2
    keyed.release("10.0.0.1")
    assert len(keyed) == 2
    keyed.release("10.0.0.1")
    keyed.release("10.0.0.2")
    keyed.release("10.0.0.9")  # unknown: nothing to do
    assert len(keyed) == 0


def test_inbound_limiter_waits_for_the_slower_bucket() -> None:
    ip = TokenBucket(rate_per_s=10, burst=1, now=0.0)
    first = InboundLimiter(TokenBucket(100, 10, 0.0), ip)
    second = InboundLimiter(TokenBucket(100, 10, 0.0), ip)
    assert first.wait_s(0.0) == 0.0
    assert second.wait_s(0.0) == pytest.approx(0.1)  # the IP's bucket is empty
    assert second.flooding_s(1.0) == 0.0  # an IP wait is not the socket's flood


def test_inbound_limiter_tells_a_sustained_flood_from_a_burst() -> None:
    limiter = InboundLimiter(TokenBucket(rate_per_s=10, burst=4, now=0.0), None)
    assert [limiter.wait_s(0.0) for _ in range(4)] == [0.0] * 4  # the burst
    assert limiter.wait_s(0.0) > 0  # over: the flood clock starts
    now = 0.0
    for tick in range(1, 51):  # kept at the rate for 5 s: the bucket never refills to half
        now = tick / 10
        limiter.wait_s(now)
    assert limiter.flooding_s(now) == pytest.approx(5.0)
    assert limiter.wait_s(now + 1.0) == 0.0  # quiet long enough to refill half
    assert limiter.flooding_s(now + 1.0) == 0.0


def test_no_buckets_no_wait() -> None:
    limiter = InboundLimiter(None, None)
    assert limiter.wait_s(0.0) == 0.0
    assert limiter.flooding_s(100.0) == 0.0
