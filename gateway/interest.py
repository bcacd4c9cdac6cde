"""NATS interest that follows local membership: subscribe on the first member, unsubscribe
a little after the last one leaves (re-checked when the linger ends, so a quick
leave/join does not churn subscriptions). Modelled on centrifuge's node.go
(addSubscription / removeSubscription), including its rollback: a subscribe that fails
leaves nothing behind, and the caller undoes the membership that asked for it.

Timers go through an injected `Scheduler` (the event loop by default), so the linger is
unit-tested on a manual clock instead of wall time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from gateway.broker import Broker

log = logging.getLogger(__name__)


class Timer(Protocol):
    def cancel(self) -> None: ...


class Scheduler(Protocol):
    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        """Run `callback` once, `delay` seconds from now (unless cancelled)."""


class LoopScheduler:
    """The running event loop's clock."""

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        return asyncio.get_running_loop().call_later(delay, callback)


class Interest:
    def __init__(
        self,
        broker: Broker,
        subject_of: Callable[[str], str],
        still_wanted: Callable[[str], bool],
        linger_s: float,
        scheduler: Scheduler | None = None,
        *,
        on_start: Callable[[str], Awaitable[None]] | None = None,
        on_end: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self._broker = broker
        self._subject_of = subject_of
        self._still_wanted = still_wanted
        self._linger_s = linger_s
        self._scheduler = scheduler or LoopScheduler()
        self._subscribed: set[str] = set()
        self._pending: dict[str, asyncio.Future[None]] = {}
        self._timers: dict[str, Timer] = {}
        self._leaving: dict[str, asyncio.Task[None]] = {}
        self._on_start = on_start
        """Awaited after a key's SUB, before `want` returns (the room directory's write;
        it must not raise)."""
        self._on_end = on_end
        """Awaited after a key's UNSUB (the directory's delete; must not raise)."""

    @property
    def count(self) -> int:
        return len(self._subscribed)

    def __contains__(self, key: str) -> bool:
        return key in self._subscribed

    async def want(self, key: str) -> None:
        """Return once the subscription for key has been sent to NATS. Raises
        TransportError (and keeps no trace of the key) when the subscribe failed;
        every caller waiting on the same subscribe gets the same error."""
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        if key in self._subscribed:
            return
        leaving = self._leaving.get(key)
        if leaving is not None:  # its UNSUB must go first, or it would undo this SUB
            await leaving
        pending = self._pending.get(key)
        if pending is not None:
            await asyncio.shield(pending)
            return
        pending = asyncio.ensure_future(self._subscribe(key))
        self._pending[key] = pending
        try:
            await pending
            self._subscribed.add(key)
        finally:
            self._pending.pop(key, None)

    async def _subscribe(self, key: str) -> None:
        await self._broker.subscribe(self._subject_of(key))
        if self._on_start is not None:
            await self._on_start(key)

    def unwant(self, key: str, *, now: bool = False) -> None:
        """Schedule the unsubscribe; it happens only if nobody wanted the key since."""
        if key in self._timers:
            return
        delay = 0.0 if now else self._linger_s
        self._timers[key] = self._scheduler.call_later(delay, lambda: self._expire(key))

    def _expire(self, key: str) -> None:
        self._timers.pop(key, None)
        if self._still_wanted(key):
            return
        if key in self._pending:  # its SUB is still on the way: decide once it is in
            self.unwant(key)
            return
        if key not in self._subscribed:
            return
        self._subscribed.discard(key)
        self._leaving[key] = asyncio.ensure_future(self._unsubscribe(key))

    async def _unsubscribe(self, key: str) -> None:
        try:
            await self._broker.unsubscribe(self._subject_of(key))
        except Exception:
            log.warning("unsubscribe of %s failed", key[:200], exc_info=True)
        try:
            if self._on_end is not None:
                await self._on_end(key)
        finally:
            self._leaving.pop(key, None)

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
