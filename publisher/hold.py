"""Holding fire-and-forget messages through a NATS outage until the gateways are back.

NATS delivers a message only to the subscriptions that exist when it arrives. After an
outage every gateway re-subscribes when it reconnects, and so does the publisher:
whoever is first wins. nats-py flushes its reconnect buffer the moment it is back, so
what was published during the outage reached a server where no gateway had re-subscribed
yet and was dropped without a trace (issue 16 #1: ~1,000 messages of a 10 s outage).

So from the moment the connection is lost, broadcasts and blasts are held here instead
(in order, at most `max_bytes` of them: beyond that a publish raises TransportError at
its own call, as nats-py's full buffer did). Once reconnected, they are published when
every gateway heard from (a heartbeat on `<p>.gw.hb` within GATEWAY_SILENCE_S) before
the outage has shown it is back: by a heartbeat on the new connection (a gateway sends
one as soon as it has reconnected; nats-py re-sends its subscriptions before anything it
publishes, so the heartbeat proves they are in place) or by answering the `ping` on
`<p>.gw.all` sent after the reconnect (for those back before the publisher). The wait is
bounded by `timeout_s`: then the held messages are published anyway (the gateways that
are back get them) and each one is reported as a `FailedPublish` whose error, a
GatewayTimeout, names the gateways that were missing, whose clients may not get it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Final

from publisher.failures import failed_publish
from shared.errors import FailedPublish, GatewayTimeout, TransportError

log = logging.getLogger(__name__)

DEFAULT_HOLD_TIMEOUT_S: Final = 5.0
"""How long after a reconnect held messages wait for the gateways known before it."""
DEFAULT_HOLD_MAX_BYTES: Final = 2 * 1024 * 1024
"""What may be held (message bodies); as nats-py's own reconnect buffer, 2 MiB."""
GATEWAY_SILENCE_S: Final = 6.0
"""A gateway not heard from for this long is not waited for (3 heartbeats of 2 s, as
the gateways' own peer list: gateway.peers)."""
PING_EVERY_S: Final = 0.5
"""While waiting, how often the gateways are asked to show they are back."""

Report = Callable[[FailedPublish], None]
Publish = Callable[[str, bytes, str], Awaitable[None]]
Wait = Callable[[asyncio.Event, float], Awaitable[None]]
"""Wait until the event is set or `timeout` seconds have passed (on the hold's clock)."""


async def _wait(event: asyncio.Event, timeout: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout)


class OutageHold:
    """The held messages and the gateways they wait for. Not thread-safe: the
    publisher's event loop only."""

    def __init__(
        self,
        *,
        timeout_s: float,
        max_bytes: int,
        report: Report,
        clock: Callable[[], float] = time.monotonic,
        wait: Wait = _wait,
    ) -> None:
        """`clock` and `wait` are the hold's time: monotonic seconds and a timed wait for
        news (a test drives both by hand)."""
        self.timeout_s = timeout_s
        self._wait = wait
        self.max_bytes = max_bytes
        self._report = report
        self._clock = clock
        self._heard: dict[str, float] = {}
        """Gateway id → when we last heard from it (monotonic)."""
        self._held: collections.deque[tuple[str, bytes, str]] = collections.deque()
        self._held_bytes = 0
        self.active = False
        self._expected: set[str] = set()
        self._back: set[str] = set()
        self._changed = asyncio.Event()
        self._released = asyncio.Event()
        self._released.set()

    @property
    def held(self) -> int:
        return len(self._held)

    def gateways(self) -> list[str]:
        """The gateways heard from lately (what a hold starting now would wait for)."""
        now = self._clock()
        return sorted(g for g, t in self._heard.items() if now - t <= GATEWAY_SILENCE_S)

    def heard(self, gateway_id: str, *, down: bool = False) -> None:
        """A heartbeat or an answer from `gateway_id`; `down`: it is stopping for good."""
        if down:
            self._heard.pop(gateway_id, None)
            self._expected.discard(gateway_id)
        else:
            self._heard[gateway_id] = self._clock()
            if self.active:  # nothing arrives while disconnected: this came after it
                self._back.add(gateway_id)
        self._changed.set()

    def start(self) -> None:
        """The connection is lost: hold from now on (idempotent)."""
        if self.active:
            return
        self.active = True
        self._released.clear()
        self._expected = set(self.gateways())
        self._back = set()

    def put(self, subject: str, body: bytes, kind: str) -> None:
        """Hold one message; TransportError (nothing held) when the bound is reached."""
        if self._held_bytes + len(body) > self.max_bytes:
            raise TransportError(
                f"{kind} not sent: NATS is unreachable and the publisher already holds "
                f"{self._held_bytes} bytes (at most {self.max_bytes}) for when it is back"
            )
        self._held.append((subject, body, kind))
        self._held_bytes += len(body)

    async def release(
        self, publish: Publish, ping: Callable[[], Awaitable[None]], connected: Callable[[], bool]
    ) -> None:
        """Once reconnected: wait for the gateways (bounded), then publish what is held,
        in order. Returns early, still holding, if the connection is lost again."""
        self._back = set()
        deadline = self._clock() + self.timeout_s
        next_ping = 0.0
        while (missing := self._expected - self._back) and connected():
            now = self._clock()
            if now >= deadline:
                break
            if now >= next_ping:
                next_ping = now + PING_EVERY_S
                await ping()
            self._changed.clear()
            await self._wait(self._changed, min(deadline, next_ping) - now)
        if not connected():
            return
        error: GatewayTimeout | None = None
        if missing:
            error = GatewayTimeout(
                f"published {self.timeout_s}s after NATS came back although gateway(s) "
                f"{', '.join(sorted(missing))} had not shown they were back: their clients "
                "may have missed it"
            )
            log.error("%d held message(s) published unconfirmed: %s", len(self._held), error)
        while self._held:
            subject, body, kind = self._held[0]
            try:
                await publish(subject, body, kind)
            except TransportError:
                return  # lost again: the rest wait for the next reconnect
            self._held.popleft()
            self._held_bytes -= len(body)
            if error is not None:
                self._report(failed_publish(subject, body, kind, error))
        self.active = False
        self._expected = set()
        self._released.set()

    async def wait_released(self, timeout: float) -> bool:
        """True once nothing is held (at once if nothing is)."""
        try:
            await asyncio.wait_for(self._released.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def give_up(self, why: str) -> None:
        """Report every held message as failed and drop it (the publisher is closing)."""
        error = TransportError(why)
        while self._held:
            subject, body, kind = self._held.popleft()
            self._report(failed_publish(subject, body, kind, error))
        self._held_bytes = 0
        self.active = False
        self._released.set()
