"""Users as addresses: who a socket is, and the reserved rooms that follow from it.

A socket may carry a user id (a JWT claim, or what a worker's `before_connect` answers)
and a small presence `info` object. Each socket with a user id is a member of that
user's room, `sailcast:user:<id>`, from before its client sees the connection until it
goes: `broadcast_to_user` is a broadcast to those rooms, `sockets_of` their members.
Every room under `sailcast:` is reserved: the gateway puts sockets in them, never a
join or leave request, so no client can be made a member of another user's room.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import orjson

from shared.errors import InvalidRoomName, ReservedRoom, UsageError

RESERVED_PREFIX: Final = "sailcast:"
"""Rooms under this prefix belong to the gateway (users' rooms, and any added later)."""
USER_ROOM_PREFIX: Final = "sailcast:user:"
MAX_USER_ID_CHARS: Final = 256
DEFAULT_INFO_MAX_BYTES: Final = 1024


class InvalidUser(UsageError):
    """A user id or presence info that cannot be used (empty, too long, not JSON)."""


def user_id_of(value: object) -> str | None:
    """A user id from a claim or a hook's answer: strings as they are, integers as
    their decimal text (`sub: 42` and `"42"` are the same user), None for none."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise InvalidUser(f"a user id must be a string or an integer, got {type(value).__name__}")
    uid = str(value)
    if not uid or len(uid) > MAX_USER_ID_CHARS:
        raise InvalidUser(f"a user id must be 1 to {MAX_USER_ID_CHARS} characters")
    return uid


def user_room(user_id: str) -> str:
    """The room every socket of `user_id` is in (reserved: `sailcast:user:<id>`)."""
    return USER_ROOM_PREFIX + user_id


def user_of_room(room: str) -> str | None:
    """The user a user room stands for; None for any other room."""
    return room[len(USER_ROOM_PREFIX) :] if room.startswith(USER_ROOM_PREFIX) else None


def is_reserved(room: str) -> bool:
    return room.startswith(RESERVED_PREFIX)


def check_not_reserved(rooms: Any) -> None:
    """ReservedRoom if a worker names a reserved room where it may not (join, leave,
    rooms at connect): only the gateway puts sockets in users' rooms."""
    for room in rooms:
        if isinstance(room, str) and is_reserved(room):
            raise ReservedRoom(
                f"room {room[:80]!r} is reserved (rooms under {RESERVED_PREFIX!r} are "
                "managed by the gateway; address a user with broadcast_to_user)"
            )


def presence_info(value: object, max_bytes: int = DEFAULT_INFO_MAX_BYTES) -> dict[str, Any] | None:
    """Validate a socket's presence info: a JSON object of at most `max_bytes` encoded
    (it travels in every members answer and presence event), or None."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise InvalidUser(f"presence info must be a JSON object, got {type(value).__name__}")
    try:
        size = len(orjson.dumps(value))
    except TypeError as exc:
        raise InvalidUser(f"presence info is not JSON-serializable: {exc}") from exc
    if size > max_bytes:
        raise InvalidUser(f"presence info of {size} bytes exceeds {max_bytes} bytes")
    return dict(value)


__all__ = [
    "DEFAULT_INFO_MAX_BYTES",
    "MAX_USER_ID_CHARS",
    "RESERVED_PREFIX",
    "USER_ROOM_PREFIX",
    "InvalidRoomName",
    "InvalidUser",
    "ReservedRoom",
    "check_not_reserved",
    "is_reserved",
    "presence_info",
    "user_id_of",
    "user_of_room",
    "user_room",
]
