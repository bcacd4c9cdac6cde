"""Test doubles for units with no I/O: a manual clock (the Scheduler timers take) and a
connection that records what the gateway core sent it."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import Any

from gateway.engine.api import Transport


class _Timer:
    __slots__ = ("callback", "cancelled")

    def __init__(self, callback: Callable[[], None]) -> None:
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class ManualClock:
    """Time moves only when a test calls `advance`: timers due by then run in order.
    Serves as a monotonic clock (call it), a scheduler (`call_later`) and the part of an
    event loop a timer schedule needs (`time`, `call_at`)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self._timers: list[tuple[float, int, _Timer]] = []
        self._order = itertools.count()

    def __call__(self) -> float:
        return self.now

    def call_later(self, delay: float, callback: Callable[[], None]) -> _Timer:
        timer = _Timer(callback)
        heapq.heappush(self._timers, (self.now + delay, next(self._order), timer))
        return timer

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], None]) -> _Timer:
        return self.call_later(when - self.now, callback)

    def advance(self, seconds: float) -> None:
        until = self.now + seconds
        while self._timers and self._timers[0][0] <= until:
            when, _, timer = heapq.heappop(self._timers)
            self.now = max(self.now, when)
            if not timer.cancelled:
                timer.callback()
        self.now = until

    @property
    def pending(self) -> int:
        return sum(1 for _, _, t in self._timers if not t.cancelled)


class RecordingConnection:
    """A `gateway.engine.api.Connection` that keeps every packet it was sent."""

    def __init__(self, sid: str, protocol: int = 4) -> None:
        self._sid = sid
        self._protocol = protocol
        self.offsets = False
        self.sent: list[Any] = []
        self.emitted: list[tuple[str, Any]] = []
        self.disconnected = False
        self.disconnect_reason: str | None = None
        """The reason its client was told (`sailcast:disconnect`), if any."""
        self.went_away = False
        self.evicted = False
        self._pid = ""

    @property
    def sid(self) -> str:
        return self._sid

    @property
    def pid(self) -> str:
        return self._pid

    def restore(self, sid: str, pid: str) -> None:
        self._sid, self._pid = sid, pid

    def evict(self) -> None:
        self.evicted = True

    @property
    def protocol(self) -> int:
        return self._protocol

    @property
    def transport(self) -> Transport:
        return Transport.WEBSOCKET

    @property
    def closed(self) -> bool:
        return self.disconnected or self.went_away or self.evicted

    def send(self, packet: Any) -> None:
        self.sent.append(packet)

    def emit(self, event: str, data: Any) -> None:
        self.emitted.append((event, data))

    async def disconnect(self, reason: str | None = None) -> None:
        self.disconnected = True
        self.disconnect_reason = reason

    async def going_away(self) -> None:
        self.went_away = True
