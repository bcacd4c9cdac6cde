"""The HTTP API's methods: each a publisher operation, its JSON fields the Python
argument names, each field checked by the publisher's own validators so that a 400
names the field. The operations themselves are `publisher.sockets.Sockets`'s: this
module only translates (docs/api.openapi.json documents the same table; a unit test
holds the two together)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final

from publisher.sockets import DEFAULT_EVENT, Sockets, as_rooms, as_socket_ids, user_rooms
from shared.errors import SailcastError, UsageError
from shared.subjects import check_socket_id


class Kind(Enum):
    """What a field holds; the OpenAPI document's schema of each is in the test."""

    ROOMS = "rooms"  # a room name or a list of them
    ROOM = "room"  # one room name
    SOCKET_IDS = "socket_ids"  # a socket id or a list of them
    SOCKET_ID = "socket_id"  # one socket id
    EVENT = "event"  # an event name
    DATA = "data"  # any JSON value
    USER_IDS = "user_ids"  # a user id (string or integer) or a list of them


class FieldError(UsageError):
    """A request field that can never work: 400, naming the field."""

    def __init__(self, field: str, message: str, code: str = "invalid_field") -> None:
        super().__init__(message)
        self.field = field
        self.code = code


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    kind: Kind
    required: bool = True


Call = Callable[[Sockets, Mapping[str, Any]], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Method:
    name: str
    fields: tuple[Field, ...]
    call: Call
    summary: str

    def parse(self, body: object) -> dict[str, Any]:
        """The body's fields checked and converted; FieldError naming the first bad one."""
        if not isinstance(body, dict):
            raise FieldError("", f"{self.name}: the body must be a JSON object", "invalid_body")
        known = {f.name for f in self.fields}
        for name in body:
            if name not in known:
                raise FieldError(
                    name,
                    f"{self.name}: unknown field {name!r} (fields: {', '.join(sorted(known))})",
                    "unknown_field",
                )
        out: dict[str, Any] = {}
        for f in self.fields:
            if f.name not in body:
                if f.required:
                    raise FieldError(
                        f.name, f"{self.name}: field {f.name!r} is required", "missing_field"
                    )
                continue
            out[f.name] = _check(f, body[f.name])
        return out


def _check(f: Field, value: Any) -> Any:
    """One field through the publisher's validator for it."""
    try:
        if f.kind is Kind.ROOMS:
            if not isinstance(value, str | list):
                raise UsageError(f"must be a room name or a list of room names, got {value!r}")
            return as_rooms(value, f.name)
        if f.kind is Kind.ROOM:
            if not isinstance(value, str):
                raise UsageError(f"must be one room name (a string), got {value!r}")
            return as_rooms(value, f.name)[0]
        if f.kind is Kind.SOCKET_IDS:
            if not isinstance(value, str | list):
                raise UsageError(f"must be a socket id or a list of socket ids, got {value!r}")
            return as_socket_ids(value)
        if f.kind is Kind.SOCKET_ID:
            return check_socket_id(value)
        if f.kind is Kind.USER_IDS:
            if isinstance(value, bool) or not isinstance(value, str | int | list):
                raise UsageError(f"must be a user id or a list of user ids, got {value!r}")
            user_rooms(value)  # checked; the call converts them again
            return value
        if f.kind is Kind.EVENT:
            if not isinstance(value, str):
                raise UsageError(f"must be a string, got {value!r}")
            return value
    except SailcastError as exc:
        raise FieldError(f.name, f"field {f.name!r}: {exc}", _code(exc)) from None
    return value  # Kind.DATA: any JSON value


def _code(exc: Exception) -> str:
    """InvalidRoomName → invalid_room_name."""
    name = type(exc).__name__
    if name == "UsageError":
        return "invalid_field"
    return "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")


async def _broadcast(s: Sockets, a: Mapping[str, Any]) -> None:
    # wait_stored: a 200 means a history room's copy is stored, and a failure is this
    # call's own (pipelined, it would surface in some later request)
    await s.broadcast(
        a["rooms"],
        a.get("event", DEFAULT_EVENT),
        a.get("data"),
        omit=a.get("omit"),
        wait_stored=True,
    )


async def _blast(s: Sockets, a: Mapping[str, Any]) -> None:
    await s.blast(a.get("event", DEFAULT_EVENT), a.get("data"), omit=a.get("omit"))


async def _join(s: Sockets, a: Mapping[str, Any]) -> None:
    await s.join(a["socket_ids"], a["rooms"])


async def _leave(s: Sockets, a: Mapping[str, Any]) -> None:
    await s.leave(a["socket_ids"], a["rooms"])


async def _leave_all(s: Sockets, a: Mapping[str, Any]) -> None:
    await s.leave_all(a["room"])


async def _add_members(s: Sockets, a: Mapping[str, Any]) -> None:
    await s.add_room_members_to_rooms(a["source_room"], a["dest_rooms"])


async def _remove_members(s: Sockets, a: Mapping[str, Any]) -> None:
    await s.remove_room_members_from_rooms(a["source_room"], a["dest_rooms"])


async def _rooms(s: Sockets, a: Mapping[str, Any]) -> list[str]:
    return await s.rooms(a["socket_id"])


async def _disconnect(s: Sockets, a: Mapping[str, Any]) -> None:
    await s.disconnect(a["socket_id"])


async def _broadcast_to_user(s: Sockets, a: Mapping[str, Any]) -> None:
    await s.broadcast_to_user(
        a["user_ids"],
        a.get("event", DEFAULT_EVENT),
        a.get("data"),
        omit=a.get("omit"),
        wait_stored=True,
    )


_MESSAGE = (
    Field("event", Kind.EVENT, required=False),
    Field("data", Kind.DATA, required=False),
    Field("omit", Kind.SOCKET_IDS, required=False),
)
_MEMBERS = (Field("source_room", Kind.ROOM), Field("dest_rooms", Kind.ROOMS))
_SOCKETS = (Field("socket_ids", Kind.SOCKET_IDS), Field("rooms", Kind.ROOMS))

METHODS: Final[Mapping[str, Method]] = {
    m.name: m
    for m in (
        Method(
            "broadcast",
            (Field("rooms", Kind.ROOMS), *_MESSAGE),
            _broadcast,
            "Send an event to every socket in the rooms, once each, except omit",
        ),
        Method("blast", _MESSAGE, _blast, "Send an event to every connected socket"),
        Method("join", _SOCKETS, _join, "The sockets join the rooms (in effect on return)"),
        Method("leave", _SOCKETS, _leave, "The sockets leave the rooms"),
        Method(
            "leave_all",
            (Field("room", Kind.ROOM),),
            _leave_all,
            "Every member of the room leaves all its rooms but its own-id room",
        ),
        Method(
            "add_room_members_to_rooms",
            _MEMBERS,
            _add_members,
            "Every member of source_room joins dest_rooms, on every gateway",
        ),
        Method(
            "remove_room_members_from_rooms",
            _MEMBERS,
            _remove_members,
            "Every member of source_room leaves dest_rooms, on every gateway",
        ),
        Method(
            "rooms",
            (Field("socket_id", Kind.SOCKET_ID),),
            _rooms,
            "The rooms a socket is in, its own-id room included",
        ),
        Method(
            "disconnect",
            (Field("socket_id", Kind.SOCKET_ID),),
            _disconnect,
            "Disconnect one socket, wherever it is connected",
        ),
        Method(
            "broadcast_to_user",
            (Field("user_ids", Kind.USER_IDS), *_MESSAGE),
            _broadcast_to_user,
            "Send an event to every socket of the users, on every gateway, except omit",
        ),
    )
}
"""Every method but `batch` (gateway/api.py), which runs a list of these."""
