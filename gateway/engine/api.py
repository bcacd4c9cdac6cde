"""The engine seam: all the rest of the gateway knows of a client connection.

The engine package (`gateway.engine`) speaks Engine.IO v3/v4 and Socket.IO v2/v4 to
clients. Everything outside it sees a connection only through `Connection` and learns
what clients do only through `EngineEvents`; nothing outside the package imports
aiohttp's websocket types, engineio or socketio for that purpose.

Why this shape: the fanout path hands one prebuilt `OutboundPacket` to many
connections (built and framed once per message, never per recipient); membership and
NATS interest live in the core (`gateway.node`), which must be unit-testable with
recording connections and no sockets at all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol


def takes_trailing_argument(offsets: bool, protocol: int, last_is_string: bool) -> bool:
    """Whether an event to a socket that takes positions (`Connection.offsets`) needs one
    more trailing argument (its offset, or `null`): always on v3, where the recovery
    add-on pops one trailing argument of every event; on v4 when the last argument is a
    string, which socket.io-client would otherwise take for an offset. The one rule
    behind both the fanout's packet variants and `Connection.emit`."""
    return offsets and (protocol == 3 or last_is_string)


class Transport(StrEnum):
    POLLING = "polling"
    WEBSOCKET = "websocket"


class CloseReason(StrEnum):
    """Why a connection ended; also the `reason` label of the disconnect metric."""

    CLIENT = "client"
    """The client said goodbye (Socket.IO DISCONNECT or Engine.IO CLOSE)."""
    SERVER = "server"
    """We disconnected it on purpose (a worker's `sockets.disconnect`)."""
    PING = "ping"
    """It stopped answering heartbeats."""
    TRANSPORT_CLOSE = "transport_close"
    """Its transport went away without a goodbye."""
    TRANSPORT_ERROR = "transport_error"
    """It sent something the protocol does not allow (malformed, too large)."""
    SLOW_CLIENT = "slow_client"
    """It stopped reading and went over its outbound bound."""
    GOING_AWAY = "going_away"
    """This gateway is draining: the transport was dropped so the client reconnects."""


class OutboundPacket(Protocol):
    """A Socket.IO packet encoded once, shareable by every recipient (the engine
    builds it, `gateway.engine.event_packet`): the text a polling recipient is sent and
    the websocket frame every websocket recipient is sent (the same for v3 and v4)."""

    @property
    def text(self) -> str: ...

    @property
    def frame(self) -> bytes: ...


@dataclass(frozen=True, slots=True)
class HandshakeRequest:
    """What the opening HTTP request said: all the core and the hooks may read of it.

    `headers` have lower-case names, and are the client's: the HTTP exchange's own
    (`connection`, `upgrade`, `sec-websocket-*`, `content-*`, `transfer-encoding`) are
    not kept, and the whole request's headers were within --max-header-bytes; `query` is
    the raw query string; `remote` is the TCP peer address (proxies are resolved later,
    by the --trust-proxy rules)."""

    path: str
    query: str
    headers: Mapping[str, str]
    remote: str
    scheme: str = "http"
    protocol: int = 4
    """Engine.IO protocol version the client speaks (3: socket.io-client 2 / sails.io.js)."""


class Connection(Protocol):
    """One connected Socket.IO client, as the core sees it."""

    @property
    def sid(self) -> str:
        """The Socket.IO socket id (what clients see as `socket.id`)."""

    @property
    def protocol(self) -> int:
        """Engine.IO protocol version: 3 or 4."""

    @property
    def transport(self) -> Transport: ...

    offsets: bool
    """This client takes stream positions (issue 11, docs/recovery.md "Positions and the
    live path"): every history event it is sent carries `"<epoch>:<seq>"` as its last
    argument, and a non-history event that socket.io-client would mistake for one carries
    a trailing `null` instead (v4: when its last argument is a string; v3 add-on: every
    event). False (the default): packets exactly as before."""

    @property
    def pid(self) -> str:
        """The socket's private session id for connection-state recovery ("" when it
        has none): sent in the CONNECT reply (v4) and presented by the client on its
        next connect to get the same socket back (docs/recovery.md)."""

    @property
    def closed(self) -> bool:
        """True once closing began: sends are dropped from then on."""

    def send(self, packet: OutboundPacket) -> None:
        """Queue or write a prebuilt packet; never blocks, never raises. Over the
        socket's bound the connection is cut (CloseReason.SLOW_CLIENT)."""

    def emit(self, event: str, data: Any) -> None:
        """One event to this connection alone (not the fanout path)."""

    async def disconnect(self, reason: str | None = None) -> None:
        """Socket.IO disconnect: the client is told and does not reconnect. With a
        `reason`, the event `sailcast:disconnect` `{"reason": reason}` goes out just
        before the DISCONNECT packet, in the same write (websocket) or the same last
        payload (polling)."""

    async def going_away(self) -> None:
        """Drop the transport as a restarting server would: the client reconnects."""

    def restore(self, sid: str, pid: str) -> None:
        """Give the socket its id and recovery pid before it is registered (called from
        `EngineEvents.connected`): a recovered session's old ones, or a fresh pid. The
        CONNECT reply then says `{"sid": sid, "pid": pid}` (v4)."""

    def evict(self) -> None:
        """A takeover: its client is back on another connection. Drop the transport
        and do NOT report a disconnect (`EngineEvents.disconnected` is not called):
        the socket lives on elsewhere."""


class ConnectRefused(Exception):
    """Raised by `EngineEvents.connected` to refuse a socket; the client sees
    `message` as its connect error."""

    def __init__(self, message: str, reason: str = "unauthorized") -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ClientEvent:
    """A client's `emit(event, *args)`; `wants_ack` when it passed a callback."""

    sid: str
    event: str
    args: tuple[Any, ...]
    wants_ack: bool


class EngineEvents(Protocol):
    """What the engine tells the gateway. Implemented by gateway.app."""

    async def connected(
        self, conn: Connection, request: HandshakeRequest, auth: Any
    ) -> Sequence[OutboundPacket] | None:
        """A Socket.IO CONNECT; raise ConnectRefused to refuse it. The socket is
        routable (reachable by the fanout) once this returns. The packets returned (a
        recovered session's missed events) are sent right after the CONNECT reply,
        with nothing in between: return synchronously after the socket became a member
        of its rooms, so no live message can overtake them."""

    async def disconnected(self, sid: str, reason: CloseReason) -> None:
        """The connection ended, for whatever reason; called once per connected sid."""

    async def event(self, event: ClientEvent) -> Any:
        """A client event; the return value is the ack's payload when one was asked
        (None: no ack is sent; a tuple: one ack argument per element)."""
