"""NATS interest that follows local membership: subscribe on the first member, unsubscribe
a little after the last one leaves (re-checked when the linger ends, so a quick
leave/join does not churn subscriptions). Modelled on centrifuge's node.go.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from gateway.broker import Broker, Handler

log = logging.getLogger(__name__)


class Interest:
    def __init__(
        self,
        broker: Broker,
        subject_of: Callable[[str], str],
        handler_for: Callable[[str], Handler],
        still_wanted: Callable[[str], bool],
        linger_s: float,
    ) -> None:
        self._broker = broker
        self._subject_of = subject_of
        self._handler_for = handler_for
        self._still_wanted = still_wanted
        self._linger_s = linger_s
        self._subs: dict[str, int] = {}
        self._pending: dict[str, asyncio.Future[int]] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def count(self) -> int:
        return len(self._subs)

    def __contains__(self, key: str) -> bool:
        return key in self._subs

    async def want(self, key: str) -> None:
        """Return once the subscription for key has been sent to NATS."""
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        if key in self._subs:
            return
        pending = self._pending.get(key)
        if pending is None:
            pending = asyncio.ensure_future(
                self._broker.subscribe(self._subject_of(key), self._handler_for(key))
            )
            self._pending[key] = pending
            try:
                self._subs[key] = await pending
            finally:
                self._pending.pop(key, None)
            return
        await asyncio.shield(pending)

    def unwant(self, key: str, *, now: bool = False) -> None:
        """Schedule the unsubscribe; it happens only if nobody wanted the key since."""
        if key in self._timers:
            return
        loop = asyncio.get_running_loop()
        delay = 0.0 if now else self._linger_s
        self._timers[key] = loop.call_later(delay, self._expire, key)

    def _expire(self, key: str) -> None:
        self._timers.pop(key, None)
        if self._still_wanted(key):
            return
        if key in self._pending:  # its SUB is still on the way: decide once it is in
            self.unwant(key)
            return
        sid = self._subs.pop(key, None)
        if sid is None:
            return
        task = asyncio.ensure_future(self._unsubscribe(sid))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _unsubscribe(self, sid: int) -> None:
        try:
            await self._broker.unsubscribe(sid)
        except Exception:
            log.warning("unsubscribe of sid %s failed", sid, exc_info=True)

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
