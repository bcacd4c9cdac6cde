"""Rate limits for client-initiated work: token buckets per socket and per client IP.

A token bucket: `rate_per_s` tokens a second, at most `burst` saved up. Pure
arithmetic on a monotonic clock passed in, so it is exact to test and costs one small
object per socket. `KeyedBuckets` shares one bucket among the sockets of one key (the
client's IP, as `--trust-proxy` decides it) and forgets it with the last of them.
`InboundLimiter` is what one connection checks before it reads each inbound packet.
"""

from __future__ import annotations


class TokenBucket:
    __slots__ = ("_burst", "_rate", "_stamp", "_tokens")

    def __init__(self, rate_per_s: float, burst: float, now: float) -> None:
        self._rate = rate_per_s
        self._burst = burst
        self._tokens = burst
        self._stamp = now

    def _refill(self, now: float) -> None:
        elapsed = now - self._stamp
        if elapsed > 0:
            self._tokens = min(self._burst, self._tokens + elapsed * self._rate)
            self._stamp = now

    def take(self, now: float) -> bool:
        """Spend one token if there is one; False means: over the rate, refuse."""
        self._refill(now)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def reserve(self, now: float) -> float:
        """Spend one token, going into debt if there is none; the seconds until the
        debt is paid (0.0: there was a token)."""
        self._refill(now)
        self._tokens -= 1.0
        return 0.0 if self._tokens >= 0 else -self._tokens / self._rate

    def at_least_half_full(self) -> bool:
        return self._tokens * 2 >= self._burst


class KeyedBuckets:
    """One bucket per key, shared by every holder of that key; dropped with the last."""

    __slots__ = ("_burst", "_held", "_rate")

    def __init__(self, rate_per_s: float, burst: float) -> None:
        self._rate = rate_per_s
        self._burst = burst
        self._held: dict[str, tuple[TokenBucket, int]] = {}

    def acquire(self, key: str, now: float) -> TokenBucket:
        bucket, holders = self._held.get(key) or (TokenBucket(self._rate, self._burst, now), 0)
        self._held[key] = (bucket, holders + 1)
        return bucket

    def release(self, key: str) -> None:
        held = self._held.get(key)
        if held is None:
            return
        if held[1] <= 1:
            del self._held[key]
        else:
            self._held[key] = (held[0], held[1] - 1)

    def __len__(self) -> int:
        return len(self._held)


class InboundLimiter:
    """The packet rate of one connection: its own bucket and its IP's shared one.

    `wait_s(now)` spends a token of each bucket (going into debt when there is none)
    and says how long the connection must wait before the packet is handled (0.0:
    now). Waiting is the backpressure: the connection is not read meanwhile, so a
    flooding client is held by TCP and costs the gateway nothing.

    `flooding_s(now)` is how long the connection has kept its own bucket from
    refilling to half its burst (0.0 when it has not): a sustained flood, as opposed
    to a burst. Waits caused by the IP's bucket alone do not count: they may be an
    innocent neighbour's behind the same NAT.
    """

    __slots__ = ("_ip", "_own", "_since")

    def __init__(self, own: TokenBucket | None, ip: TokenBucket | None) -> None:
        self._own = own
        self._ip = ip
        self._since: float | None = None

    def wait_s(self, now: float) -> float:
        own, ip = self._own, self._ip
        wait = 0.0
        if own is not None:
            wait = own.reserve(now)
            if own.at_least_half_full():
                self._since = None
            elif wait and self._since is None:
                self._since = now
        if ip is not None:
            wait = max(wait, ip.reserve(now))
        return wait

    def flooding_s(self, now: float) -> float:
        return 0.0 if self._since is None else now - self._since
