"""Token buckets: a steady rate with a burst allowance, exact on a fake clock."""

from __future__ import annotations

from gateway.limits import TokenBucket


def test_burst_then_steady_rate() -> None:
    b = TokenBucket(rate_per_s=10, burst=5, now=0.0)
    assert [b.take(0.0) for _ in range(6)] == [True] * 5 + [False]
    assert b.take(0.05) is False  # half a token
    assert b.take(0.1) is True  # one token after 0.1 s
    assert b.take(0.1) is False


def test_tokens_never_exceed_the_burst() -> None:
    b = TokenBucket(rate_per_s=100, burst=3, now=0.0)
    assert sum(b.take(1000.0) for _ in range(10)) == 3
