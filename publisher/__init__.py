"""Publish Sailcast events from application workers (no web framework needed).

    async with await Publisher.connect("nats://127.0.0.1:4222") as pub:
        await pub.sockets.join(socket_id, "lobby")
        await pub.sockets.broadcast("lobby", "chat", {"text": "hi"}, omit=socket_id)

`SyncPublisher` offers the same methods for threads, Django views and Celery tasks
(`SyncSockets`, `SyncModel`); it connects on first use. `pub.model("user")` is Sails'
resourceful pub/sub (`define`, `to_one`, `to_many` declare the models); `Router`
answers sails.io.js virtual requests. `__all__` is the public API, pinned by
tests/unit/test_public_api.py.
"""

from publisher.client import Publisher
from publisher.models import Model, ModelRegistry, define, to_many, to_one
from publisher.router import (
    Allow,
    ConnectCheck,
    Connected,
    Disconnected,
    HttpError,
    Reject,
    Request,
    Response,
    Router,
)
from publisher.sockets import Sockets
from publisher.sync import SyncModel, SyncPublisher, SyncSockets
from shared.config import NatsSettings
from shared.errors import (
    ConfigError,
    FailedPublish,
    GatewayTimeout,
    InvalidRoomName,
    InvalidSocketId,
    LimitExceeded,
    NoSuchSocket,
    NotSerializable,
    PayloadTooLarge,
    PublisherClosed,
    PublishFailed,
    ReservedRoom,
    SailcastError,
    TransportError,
    UsageError,
)

__all__ = [
    "Allow",
    "ConfigError",
    "ConnectCheck",
    "Connected",
    "Disconnected",
    "FailedPublish",
    "GatewayTimeout",
    "HttpError",
    "InvalidRoomName",
    "InvalidSocketId",
    "LimitExceeded",
    "Model",
    "ModelRegistry",
    "NatsSettings",
    "NoSuchSocket",
    "NotSerializable",
    "PayloadTooLarge",
    "PublishFailed",
    "Publisher",
    "PublisherClosed",
    "Reject",
    "Request",
    "ReservedRoom",
    "Response",
    "Router",
    "SailcastError",
    "Sockets",
    "SyncModel",
    "SyncPublisher",
    "SyncSockets",
    "TransportError",
    "UsageError",
    "define",
    "to_many",
    "to_one",
]
