"""An in-process broker: the same Protocol as NatsBroker, with a `MemoryBus` standing
in for the NATS server. It serves unit tests of the gateway core (several gateways and
a test client on one bus, no processes) and any single-process use.

Semantics follow NATS where the gateway relies on them: exact-subject pub/sub, a
message published by a connection reaches its own subscriptions too (NATS echo),
headers as nats-server delivers them (the raw block, `gateway.broker.headers`),
request/reply with "no responders" (TransportError) and a timeout (GatewayTimeout)
mapped as NatsBroker maps them, and nothing is delivered to a disconnected broker.
Delivery is synchronous: `publish` returns once every subscriber's handler has run,
in subscription order, so `flush` has nothing left to wait for and tests need no
sleeps. Tests can take a broker's connection away (`disconnect` / `reconnect`, which
raise the connection-state events) and make `subscribe` fail (`fail_subscribe`).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from gateway.broker import Broker, BrokerEvent, EventListener, Handler
from gateway.broker.headers import encode_headers
from shared.errors import GatewayTimeout, TransportError

log = logging.getLogger(__name__)


class MemoryBus:
    """The "server": which broker subscribes to which subject, and pending requests."""

    def __init__(self) -> None:
        self._subscribers: dict[str, list[MemoryBroker]] = {}
        self._inboxes: dict[str, asyncio.Future[bytes]] = {}
        self._inbox_ids = itertools.count(1)

    def subscription_count(self) -> int:
        """Subscriptions the bus holds, over all brokers (nats-server's `subscriptions`)."""
        return sum(len(b) for b in self._subscribers.values())

    def interest(self, subject: str) -> bool:
        return any(b.connected for b in self._subscribers.get(subject, ()))

    def _add(self, subject: str, broker: MemoryBroker) -> None:
        self._subscribers.setdefault(subject, []).append(broker)

    def _remove(self, subject: str, broker: MemoryBroker) -> None:
        subs = self._subscribers.get(subject)
        if subs is not None and broker in subs:
            subs.remove(broker)
            if not subs:
                del self._subscribers[subject]

    def deliver(
        self, subject: str, data: bytes, reply: str = "", headers: bytes | None = None
    ) -> int:
        """Hand a message (with its raw header block, if any) to every connected
        subscriber; returns how many got it."""
        future = self._inboxes.pop(subject, None)
        if future is not None:
            if not future.done():
                future.set_result(data)
            return 1
        got = 0
        subject_b, reply_b = subject.encode(), reply.encode()
        for broker in list(self._subscribers.get(subject, ())):
            if broker.connected:
                broker._receive(subject_b, reply_b, data, headers)
                got += 1
        return got

    def _new_inbox(self) -> tuple[str, asyncio.Future[bytes]]:
        inbox = f"_INBOX.{next(self._inbox_ids)}"
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._inboxes[inbox] = future
        return inbox, future

    def _drop_inbox(self, inbox: str) -> None:
        self._inboxes.pop(inbox, None)


def _no_handler(subject: bytes, reply: bytes, data: bytes, headers: bytes | None) -> None:
    log.debug("message on %s before a handler was set", subject[:200])


async def _ignore(event: BrokerEvent) -> None:
    return None


class MemoryBroker:
    """One connection to a MemoryBus (its own if none is given)."""

    def __init__(self, bus: MemoryBus | None = None) -> None:
        self.bus = bus if bus is not None else MemoryBus()
        self._subjects: set[str] = set()
        self._handler: Handler = _no_handler
        self._listener: EventListener = _ignore
        self._connected = True
        self._closed = False
        self._held: list[tuple[str, bytes, str, bytes | None]] = []
        self.fail_subscribe: Callable[[str], bool] = lambda subject: False
        """Tests: subjects whose subscribe raises TransportError (as a closed or
        refusing NATS connection does)."""

    # -- the Protocol ------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._connected and not self._closed

    @property
    def subscriptions(self) -> frozenset[str]:
        return frozenset(self._subjects)

    def set_handler(self, handler: Handler) -> None:
        self._handler = handler

    def set_listener(self, listener: EventListener) -> None:
        self._listener = listener

    async def subscribe(self, subject: str) -> None:
        if subject in self._subjects:
            return
        if self._closed:
            raise TransportError(f"broker is closed; cannot subscribe to {subject[:120]}")
        if self.fail_subscribe(subject):
            raise TransportError(f"subscribe to {subject[:120]} failed (refused by the test)")
        self._subjects.add(subject)
        self.bus._add(subject, self)

    async def unsubscribe(self, subject: str) -> None:
        if subject in self._subjects:
            self._subjects.discard(subject)
            self.bus._remove(subject, self)

    async def publish(
        self,
        subject: str,
        data: bytes,
        reply: str = "",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if self._closed:
            raise TransportError(f"publish to {subject[:120]} failed: broker is closed")
        block = encode_headers(headers) if headers else None  # as nats-server delivers them
        if not self._connected:  # nats-py buffers while reconnecting: so do we
            self._held.append((subject, data, reply, block))
            return
        self.bus.deliver(subject, data, reply, block)

    async def request(self, subject: str, data: bytes, timeout: float) -> bytes:
        if not self.connected:
            raise TransportError(f"request on {subject[:120]} failed: not connected")
        if not self.bus.interest(subject):
            raise TransportError(f"nobody answers on {subject[:120]}")
        inbox, future = self.bus._new_inbox()
        try:
            self.bus.deliver(subject, data, inbox)
            return await asyncio.wait_for(future, timeout)
        except TimeoutError as exc:
            raise GatewayTimeout(f"no answer on {subject[:120]} within {timeout}s") from exc
        finally:
            self.bus._drop_inbox(inbox)

    async def flush(self, timeout: float = 2.0) -> None:
        if not self.connected:
            raise TransportError("flush failed: not connected")

    async def force_reconnect(self) -> None:
        if not self._closed:
            await self.disconnect()
            await self.reconnect()

    async def drain(self) -> None:
        await self.close()

    async def close(self) -> None:
        for subject in list(self._subjects):
            await self.unsubscribe(subject)
        self._closed = True
        self._held.clear()

    # -- for tests ---------------------------------------------------------------------
    async def disconnect(self) -> None:
        """The connection drops: nothing is delivered to us, publishes are held."""
        if self._connected:
            self._connected = False
            await self._listener(BrokerEvent.DISCONNECTED)

    async def reconnect(self) -> None:
        """Back: subscriptions are still ours (as nats-py re-sends them), held
        publishes go out, then the listener hears RECONNECTED."""
        if not self._connected and not self._closed:
            self._connected = True
            held, self._held = self._held, []
            for subject, data, reply, block in held:
                self.bus.deliver(subject, data, reply, block)
            await self._listener(BrokerEvent.RECONNECTED)

    def _receive(self, subject: bytes, reply: bytes, data: bytes, headers: bytes | None) -> None:
        try:
            self._handler(subject, reply, data, headers)
        except Exception:  # as NatsBroker: one bad message never stops delivery
            log.exception("message handler failed on %s", subject[:200])


if TYPE_CHECKING:

    def _conforms(broker: MemoryBroker) -> Broker:  # mypy proves MemoryBroker is a Broker
        return broker
