"""What the connection hooks see: `ConnectCheck` for `before_connect` (refuse with
`Reject`), `Disconnected` for `after_disconnect`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from shared.vrequest import Handshake

if TYPE_CHECKING:
    from publisher.client import Publisher


class Reject(Exception):
    """Raise from a `before_connect` hook to refuse a socket; the client sees `message`."""

    def __init__(self, message: str = "Unauthorized") -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True)
class ConnectCheck:
    """What a `before_connect` hook decides on: the socket's handshake."""

    socket_id: str
    gateway_id: str
    handshake: Handshake
    pub: Publisher


@dataclass(frozen=True, slots=True)
class Disconnected:
    """What an `after_disconnect` hook is told: who went, why, and from which rooms."""

    socket_id: str
    gateway_id: str
    reason: str
    rooms: tuple[str, ...]
    handshake: Handshake
    pub: Publisher
    message: str | None = None
    """The reason a worker's `sockets.disconnect(..., reason=...)` gave the client (then
    `reason` is "server disconnect"); None for any other disconnect."""
