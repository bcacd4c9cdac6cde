"""Publish Sailcast events from application workers (no web framework needed).

    async with await Publisher.connect("nats://127.0.0.1:4222") as pub:
        await pub.sockets.join(socket_id, "lobby")
        await pub.sockets.broadcast("lobby", "chat", {"text": "hi"}, omit=socket_id)

`SyncPublisher` offers the same methods for threads, Django views and Celery tasks.
"""

from publisher.client import Publisher
from publisher.sockets import Sockets
from publisher.sync import SyncPublisher
from shared.config import NatsSettings
from shared.errors import (
    GatewayTimeout,
    InvalidRoomName,
    InvalidSocketId,
    LimitExceeded,
    NoSuchSocket,
    NotSerializable,
    PayloadTooLarge,
    PublisherClosed,
    SailcastError,
    TransportError,
    UsageError,
)

__all__ = [
    "GatewayTimeout",
    "InvalidRoomName",
    "InvalidSocketId",
    "LimitExceeded",
    "NatsSettings",
    "NoSuchSocket",
    "NotSerializable",
    "PayloadTooLarge",
    "Publisher",
    "PublisherClosed",
    "SailcastError",
    "Sockets",
    "SyncPublisher",
    "TransportError",
    "UsageError",
]
