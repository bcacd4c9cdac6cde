"""Errors raised by Sailcast.

SailcastError
├── UsageError             a caller mistake, raised before anything is sent
│   ├── InvalidRoomName    empty, too long, not a string, or not encodable
│   ├── InvalidSocketId    empty or not a string
│   ├── PayloadTooLarge    the encoded message exceeds the size limit
│   ├── NotSerializable    data orjson cannot encode
│   └── PublisherClosed    the publisher was closed
├── ConfigError            a bad flag or SAILCAST_* variable (names it)
├── NoSuchSocket           no gateway holds that socket id
├── LimitExceeded          a gateway limit refused the operation (rooms per socket…)
├── MalformedEnvelope      a message on the wire that does not parse
└── TransportError         NATS failed (cause chained)
    └── GatewayTimeout     a gateway did not answer in time
"""

from __future__ import annotations


class SailcastError(Exception):
    """Root of every error Sailcast raises on purpose."""


class UsageError(SailcastError, ValueError):
    """The caller passed something that can never work."""


class InvalidRoomName(UsageError):
    pass


class InvalidSocketId(UsageError):
    pass


class PayloadTooLarge(UsageError):
    pass


class NotSerializable(UsageError, TypeError):
    pass


class PublisherClosed(UsageError):
    pass


class ConfigError(SailcastError, ValueError):
    pass


class NoSuchSocket(SailcastError, LookupError):
    """Sails' NO_SUCH_SOCKET, but cluster-wide: no gateway holds this socket."""

    def __init__(self, socket_id: str) -> None:
        super().__init__(f"no connected socket has id {socket_id!r}")
        self.socket_id = socket_id


class LimitExceeded(SailcastError):
    """A configured limit (SAILCAST_MAX_ROOMS_PER_SOCKET, …) refused the operation."""


class MalformedEnvelope(SailcastError, ValueError):
    pass


class TransportError(SailcastError, ConnectionError):
    pass


class GatewayTimeout(TransportError, TimeoutError):
    pass
