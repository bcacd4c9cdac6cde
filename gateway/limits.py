"""Per-socket rate limiting for client-initiated work (virtual requests).

A token bucket per socket: `rate_per_s` tokens a second, at most `burst` saved up.
Pure arithmetic on a monotonic clock passed in, so it is exact to test and costs one
small object per socket.
"""

from __future__ import annotations


class TokenBucket:
    __slots__ = ("_burst", "_rate", "_stamp", "_tokens")

    def __init__(self, rate_per_s: float, burst: float, now: float) -> None:
        self._rate = rate_per_s
        self._burst = burst
        self._tokens = burst
        self._stamp = now

    def take(self, now: float) -> bool:
        """Spend one token if there is one; False means: over the rate, refuse."""
        elapsed = now - self._stamp
        if elapsed > 0:
            self._tokens = min(self._burst, self._tokens + elapsed * self._rate)
            self._stamp = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False
