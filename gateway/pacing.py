"""Fanout in slices, so that writing to sockets never starves the NATS reader.

Delivery runs inline in the broker's reader (gateway.node). A burst whose payload x
members product is large kept the event loop writing for seconds (issue 16 #3: 30
broadcasts of ~900 KB to 500 members): meanwhile the NATS client read nothing, so its
PONGs and the answers to the gateway's own readiness round trip waited behind the burst
in the socket; the round trip failed three times in a row and the gateway left the
server as hung ("NATS server unresponsive"), or nats-py declared the connection stale.
The messages in flight were lost with the connection. nats-server itself never saw a
slow consumer: the gateway dropped its own connection.

So each loop tick hands sockets at most SLICE_COST_BYTES of frames (payload x
recipients), SLICE_PAYLOAD_BYTES of distinct payload (what one socket can get in a tick,
well under `--max-buffered-bytes`, so a socket that reads is never cut for a burst) and
SLICE_S of time. A message that fits goes out inline, as before (nothing added on the
hot path but the accounting); the rest wait in a backlog, in arrival order, with their
recipients fixed on arrival, as inline delivery would have them, and are delivered a
slice per tick, a message bigger than a slice in chunks of recipients. Between slices
the loop runs the NATS reader, pings and timers. Sockets that cannot keep up are cut by
their own bounds (counted) as before. The backlog is bounded (BACKLOG_MAX_BYTES of
payload); a message arriving when it is full is dropped and counted
(`drops_total{reason="fanout_backlog"}`): the gateway cannot write that fast, and NATS
would otherwise buffer it until it evicted the gateway as a slow consumer.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable, Collection
from typing import Final

from gateway.engine.api import OutboundPacket
from gateway.fanout import Fanout, Variants

SLICE_COST_BYTES: Final = 8 * 1024 * 1024
"""Frame bytes (payload x recipients) handed to sockets per loop tick."""
SLICE_PAYLOAD_BYTES: Final = 1024 * 1024
"""Distinct payload per tick: the most one socket can be handed in one tick (a first
message larger than this still goes, alone)."""
SLICE_S: Final = 0.005
"""Time per tick spent on fanout before the rest waits for the next tick."""
BACKLOG_MAX_BYTES: Final = 64 * 1024 * 1024
"""Payload waiting for a slice (nats-server's own per-client pending limit is 64 MB)."""


class _Pending:
    __slots__ = ("next", "omit", "packet", "recipients", "size")

    def __init__(
        self,
        packet: OutboundPacket | Variants,
        recipients: list[str],
        omit: frozenset[str],
        size: int,
    ) -> None:
        self.packet = packet
        self.recipients = recipients
        self.omit = omit
        self.size = size
        self.next = 0  # recipients before this one have had it


class Pacer:
    """Delivers through `fanout` within per-tick budgets (module docstring)."""

    def __init__(
        self,
        fanout: Fanout,
        on_drop: Callable[[], None],
        *,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._fanout = fanout
        self._on_drop = on_drop
        self._clock = clock
        self._backlog: collections.deque[_Pending] = collections.deque()
        self._backlog_bytes = 0
        self._draining = False
        self._open = False  # a slice is open in this tick
        self._started = 0.0
        self._cost = 0
        self._payload = 0

    @property
    def backlog(self) -> int:
        """Messages waiting for a slice."""
        return len(self._backlog)

    def submit(
        self,
        packet: OutboundPacket | Variants,
        recipients: Collection[str],
        omit: frozenset[str],
        size: int,
    ) -> None:
        """Deliver `packet` (`size` bytes of payload) to `recipients`, now if this tick's
        budget allows and nothing waits, else in order in a later slice."""
        if not self._backlog and self._fits(size, len(recipients)):
            self._fanout.deliver(packet, recipients, omit)
            return
        if self._backlog_bytes + size > BACKLOG_MAX_BYTES:
            self._on_drop()
            return
        self._backlog.append(_Pending(packet, list(recipients), omit, size))
        self._backlog_bytes += size
        if not self._draining:
            self._draining = True
            asyncio.get_running_loop().call_soon(self._drain)

    def _slice(self) -> None:
        if not self._open:
            self._open = True
            self._started = self._clock()
            self._cost = self._payload = 0
            asyncio.get_running_loop().call_soon(self._close)

    def _close(self) -> None:
        self._open = False

    def _spent(self, size: int) -> bool:
        """This tick's slice cannot take a message of `size` more."""
        return bool(self._payload) and (
            self._payload + size > SLICE_PAYLOAD_BYTES
            or self._cost >= SLICE_COST_BYTES
            or self._clock() - self._started > SLICE_S
        )

    def _fits(self, size: int, count: int) -> bool:
        self._slice()
        cost = size * count
        if self._spent(size) or self._cost + cost > SLICE_COST_BYTES:
            return False
        self._cost += cost
        self._payload += size
        return True

    def _drain(self) -> None:
        """One slice of the backlog; the next one in a later tick."""
        self._slice()
        backlog = self._backlog
        while backlog:
            item = backlog[0]
            if self._spent(item.size):
                break
            room = max(1, (SLICE_COST_BYTES - self._cost) // max(1, item.size))
            start = item.next
            end = min(len(item.recipients), start + room)
            whole = not start and end == len(item.recipients)
            chunk = item.recipients if whole else item.recipients[start:end]
            self._fanout.deliver(item.packet, chunk, item.omit)
            self._cost += item.size * (end - start)
            self._payload += item.size
            if end < len(item.recipients):
                item.next = end
                break  # this slice is full
            backlog.popleft()
            self._backlog_bytes -= item.size
        if backlog:
            asyncio.get_running_loop().call_soon(self._drain)
        else:
            self._draining = False
