"""Heartbeats on shared timers: one deque and one loop timer per interval, not a
sleeping task or a timer handle per connection.

The interval is the same for every entry of a schedule, so entries fall due in the
order they were added: appending keeps the deque sorted. An entry whose connection
was rescheduled, closed or collected is skipped when it comes up: the connection
checks the time it was told against the one it holds, and the schedule keeps only a
weak reference (it keeps nothing alive).
"""

from __future__ import annotations

import asyncio
import collections
import weakref
from collections.abc import Callable
from typing import Final, Generic, Protocol, TypeVar

EARLY_S: Final = 0.005
"""An entry this close to due when the timer fires goes out with the others."""

T = TypeVar("T")


class Timer(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    """What a schedule needs of an event loop (injected in unit tests)."""

    def time(self) -> float: ...

    def call_at(self, when: float, callback: Callable[[], None]) -> Timer: ...


class PingSchedule(Generic[T]):
    """Calls `due(item, at)` about `interval_s` after `add(item)` returned `at`."""

    __slots__ = ("_clock", "_due", "_entries", "_interval_s", "_timer")

    def __init__(
        self, interval_s: float, due: Callable[[T, float], None], *, clock: Clock | None = None
    ) -> None:
        self._interval_s = interval_s
        self._due = due
        self._clock = clock
        self._entries: collections.deque[tuple[float, weakref.ref[T]]] = collections.deque()
        self._timer: Timer | None = None

    def __len__(self) -> int:
        return len(self._entries)

    def _loop(self) -> Clock:
        return self._clock if self._clock is not None else asyncio.get_running_loop()

    def add(self, item: T) -> float:
        """Schedule `item`; returns the time it falls due (the item keeps it to
        recognise its own entry)."""
        clock = self._loop()
        at = clock.time() + self._interval_s
        self._entries.append((at, weakref.ref(item)))
        if self._timer is None:
            self._timer = clock.call_at(at, self.fire)
        return at

    def fire(self) -> None:
        self._timer = None
        clock = self._loop()
        entries = self._entries
        horizon = clock.time() + EARLY_S
        while entries and entries[0][0] <= horizon:
            at, ref = entries.popleft()
            item = ref()
            if item is not None:
                self._due(item, at)
        if entries and self._timer is None:
            self._timer = clock.call_at(entries[0][0], self.fire)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._entries.clear()
