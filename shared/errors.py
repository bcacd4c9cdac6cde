"""Errors raised by Sailcast.

SailcastError
├── UsageError             a caller mistake, raised before anything is sent
│   ├── InvalidRoomName    empty, too long, not a string, or not encodable
│   │   └── ReservedRoom   a `sailcast:` room (users' rooms) named where a worker may not
│   ├── InvalidSocketId    empty or not a string
│   ├── PayloadTooLarge    the encoded message exceeds the size limit
│   ├── NotSerializable    data orjson cannot encode
│   └── PublisherClosed    the publisher was closed
├── ConfigError            a bad flag or SAILCAST_* variable (names it)
├── NoSuchSocket           no gateway holds that socket id
├── LimitExceeded          a gateway limit refused the operation (rooms per socket…)
├── MalformedEnvelope      a message on the wire that does not parse
└── TransportError         NATS failed (cause chained)
    ├── GatewayTimeout     a gateway did not answer in time
    └── PublishFailed      queued messages never reached NATS (count, which, why)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

FAILURES_IN_MESSAGE: Final = 3
"""How many failed messages a PublishFailed's message names (all are in `failures`)."""


class SailcastError(Exception):
    """Root of every error Sailcast raises on purpose."""


class UsageError(SailcastError, ValueError):
    """The caller passed something that can never work."""


class InvalidRoomName(UsageError):
    pass


class ReservedRoom(InvalidRoomName):
    """A room under `sailcast:` (shared.users) named in a join or leave: those rooms
    are the gateway's to manage, so no client can be put in another user's room."""


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


@dataclass(frozen=True, slots=True)
class FailedPublish:
    """One message that failed after its call returned: what it was and why.

    Either it never reached NATS (a SyncPublisher's queued message; `error` a
    TransportError), or it was held through a NATS outage and published once the hold
    gave up waiting for some gateways to be back (`error` a GatewayTimeout naming them):
    the gateways that were back got it, the clients of those named may not have."""

    kind: str
    """Either "broadcast" or "blast"."""
    event: str
    room: str | None
    """The room this publish was for (a broadcast to fewer than MULTI_ROOM_MIN_ROOMS
    rooms is one publish per room; from there on one publish, whose rooms are listed
    here comma-separated); None for a blast."""
    error: Exception
    """The cause (a TransportError, nats-py's exception chained)."""
    failed_at: float
    """time.time() when it failed."""

    def __str__(self) -> str:
        target = f"to {self.room!r}" if self.room is not None else "to everyone"
        return f"{self.kind} {self.event!r} {target}: {self.error}"


class PublishFailed(TransportError):
    """Queued messages failed: `count` of them (exact), `failures` the first of them
    (at most a bounded number, in order)."""

    def __init__(self, count: int, failures: Sequence[FailedPublish]) -> None:
        self.count = count
        self.failures = tuple(failures)
        shown = "; ".join(str(f) for f in self.failures[:FAILURES_IN_MESSAGE])
        more = count - min(count, FAILURES_IN_MESSAGE)
        super().__init__(
            f"{count} queued publish(es) never reached NATS: {shown}"
            + (f" (and {more} more)" if more else "")
        )

    def __reduce__(self) -> tuple[type[PublishFailed], tuple[int, tuple[FailedPublish, ...]]]:
        # picklable (Celery sends a task's exception to its result backend)
        return type(self), (self.count, self.failures)
