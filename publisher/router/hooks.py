"""What the connection hooks see: `ConnectCheck` for `before_connect` (accept with
`Allow` to say who the socket is, refuse with `Reject`), `Connected` for
`after_connect`, `Disconnected` for `after_disconnect`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shared.vrequest import Handshake

if TYPE_CHECKING:
    from publisher.client import Publisher


class Reject(Exception):
    """Raise from a `before_connect` hook to refuse a socket; the client sees `message`."""

    def __init__(self, message: str = "Unauthorized") -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True)
class Allow:
    """Return from a `before_connect` hook to accept a socket and say who it is:

        return Allow(user_id=user.id, info={"name": user.name}, rooms=["team:7"])

    `user_id` (a string or an integer) puts the socket in its user's room
    (`broadcast_to_user` reaches it); `info` (a small JSON object) is its presence
    info; `rooms` are joined before the client sees its connect, so a broadcast
    published after it connected reaches it; `data` is what every request of the
    socket sees as `req.claims` (what a hook returning plain data gives). The gateway
    validates them and refuses the socket, saying why, when it cannot use them
    (a reserved `sailcast:` room, info over its size limit, too many rooms)."""

    user_id: str | int | None = None
    info: Mapping[str, Any] | None = None
    rooms: Iterable[str] = field(default=())
    data: Any = None


@dataclass(frozen=True, slots=True)
class ConnectCheck:
    """What a `before_connect` hook decides on: the socket's handshake."""

    socket_id: str
    gateway_id: str
    handshake: Handshake
    pub: Publisher


@dataclass(frozen=True, slots=True)
class Connected:
    """What an `after_connect` hook is told: a socket is connected, its user room and
    rooms at connect in effect (a broadcast from the hook reaches it). Not told for a
    socket that recovered its session: it never left."""

    socket_id: str
    gateway_id: str
    user_id: str | None
    info: Mapping[str, Any] | None
    rooms: tuple[str, ...]
    """The rooms joined at connect: the user room first (when there is a user)."""
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
