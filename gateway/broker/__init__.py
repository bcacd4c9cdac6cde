"""The broker seam: what the gateway needs from its message bus, keyed by subject.

As centrifuge's `broker.go`: interest is expressed per subject (`subscribe(subject)` /
`unsubscribe(subject)`, both idempotent), and every message on any subscribed subject
goes to ONE handler, registered once, which dispatches by the subject's kind
(`shared.subjects.Subjects.parse`). No subscription ids or per-subscription closures
cross this seam: a subject is the key, and a subscription costs the broker a dict entry.
Connection-state changes arrive through one typed channel (`BrokerEvent`).

Implementations: `gateway.broker.nats_broker.NatsBroker` (production, the only module
touching nats-py internals) and `gateway.broker.memory.MemoryBroker` (in-process, for
unit tests of the gateway core and single-process use).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from enum import Enum
from typing import Protocol

Handler = Callable[[bytes, bytes, bytes, bytes | None], None]
"""Called with (subject, reply, data, headers) for every message on a subscribed subject.
`headers` is the message's raw NATS header block (`NATS/1.0\r\nName: value\r\n…`) as
the server sent it, or None for a message without headers (every core-path message):
nothing is parsed here, so a message without headers costs what it did before, and the
one consumer that reads headers (the history feed: `gateway.broker.headers`) parses only
the two it needs. It runs inline in the broker's reader: it must not block, and should
not raise (a broker logs and swallows what it raises, so one bad message never stops
delivery)."""


class BrokerEvent(Enum):
    DISCONNECTED = "disconnected"
    """The connection to the bus is lost; the broker is reconnecting by itself."""
    RECONNECTED = "reconnected"
    """Back, with every subscription re-established."""


EventListener = Callable[[BrokerEvent], Awaitable[None]]


class Broker(Protocol):
    @property
    def connected(self) -> bool: ...

    def set_handler(self, handler: Handler) -> None:
        """Register THE message handler (once; a second call replaces it)."""

    def set_listener(self, listener: EventListener) -> None:
        """Register THE connection-state listener (once; a second call replaces it)."""

    async def subscribe(self, subject: str) -> None:
        """Subscribe (no-op if already subscribed). Returns once the subscription is
        ahead of anything published after it on this connection; raises TransportError
        if the broker cannot take it."""

    async def unsubscribe(self, subject: str) -> None:
        """Unsubscribe (no-op if not subscribed). Never raises for a closed connection."""

    async def publish(
        self,
        subject: str,
        data: bytes,
        reply: str = "",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """`headers` (rarely used by the gateway itself) go out as NATS headers (HPUB)."""

    async def request(self, subject: str, data: bytes, timeout: float) -> bytes:
        """One answer's body; TransportError when nobody listens on `subject`,
        GatewayTimeout when nobody answers within `timeout` seconds."""

    async def flush(self, timeout: float = 2.0) -> None: ...

    async def force_reconnect(self) -> None:
        """Leave the current server for another (a hung one); never raises."""

    async def drain(self) -> None:
        """Unsubscribe everything, deliver what is in flight, then close."""

    async def close(self) -> None:
        """Never raises."""


__all__ = ["Broker", "BrokerEvent", "EventListener", "Handler"]
