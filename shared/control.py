"""The control protocol: requests a worker (or a gateway) sends to gateways, their
replies, and the gateways' heartbeats (see docs/protocol.md, checked against this).

One frozen dataclass per message, one enum of request kinds, one of error codes, and
the codec for all of them here, so the gateway (`gateway.node`) and the publisher
(`publisher.client`, `publisher.sockets`) cannot drift apart. The bytes are the ones the
untyped dicts produced before: `{"v":1,"k":<kind>,...}` for requests, `{"ok":...}` for
replies, `{"id":...}` for heartbeats.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar, Final, TypeVar

import orjson

from shared.errors import MalformedEnvelope, SailcastError, UsageError
from shared.subjects import room_token
from shared.version import WIRE_VERSION


class RequestKind(StrEnum):
    """`k` of a control request. The first five go to one socket (`<p>.s.<socket>`),
    the others to every gateway (`<p>.gw.all`); `ping` also to one gateway's own
    subject (`<p>.gw.id.<id>`), the readiness round trip and the publisher's probe.
    `evict` is sent by a gateway recovering the socket's session (gateway/recovery/),
    not by workers. `members` and `count` (read-only) go to one gateway's own subject,
    or to a socket's subject for the room named after it (shared/directory.py); `dism`
    (disconnect a room's members) to every gateway. New kinds go at the end."""

    JOIN = "join"
    LEAVE = "leave"
    ROOMS = "rooms"
    DISCONNECT = "disconnect"
    EVICT = "evict"
    ADD_MEMBERS = "addm"
    REMOVE_MEMBERS = "remm"
    LEAVE_ALL = "leaveall"
    PING = "ping"
    MEMBERS = "members"
    COUNT = "count"
    DISCONNECT_MEMBERS = "dism"


class ErrorCode(StrEnum):
    """`error` of a refused request."""

    NO_SUCH_SOCKET = "no_such_socket"
    """The socket is not (or no longer) connected to the gateway that got the request."""
    LIMIT = "limit"
    """A gateway limit (`--max-rooms-per-socket`) refused it; nothing was applied."""
    BAD_REQUEST = "bad_request"
    """The request does not parse or names a room that cannot be a subject token."""
    UNKNOWN_KIND = "unknown_kind"
    """A well-formed request of a kind this gateway does not know (a newer publisher)."""
    INTERNAL = "internal"
    """The gateway failed applying it (a bug, or NATS refused a subscription)."""


class UnknownKind(MalformedEnvelope):
    """A request that parses but whose `k` is not a RequestKind."""

    def __init__(self, kind: str) -> None:
        super().__init__(f"unknown request kind {kind!r}")
        self.kind = kind


# -- requests ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Join:
    """Add one socket to rooms; answered `Done` once NATS interest precedes the reply."""

    kind: ClassVar[RequestKind] = RequestKind.JOIN
    rooms: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Leave:
    kind: ClassVar[RequestKind] = RequestKind.LEAVE
    rooms: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Rooms:
    """Which rooms one socket is in; answered `RoomsOf`."""

    kind: ClassVar[RequestKind] = RequestKind.ROOMS


MAX_DISCONNECT_REASON_CHARS: Final = 256
"""The longest reason a forced disconnect may give its client (`sailcast:disconnect`)."""


def disconnect_reason(value: object) -> str | None:
    """A disconnect's reason as the client will see it, checked: None (no reason, no
    `sailcast:disconnect` event) or 1 to MAX_DISCONNECT_REASON_CHARS characters.
    UsageError naming the value otherwise (the gateway maps it to a malformed request)."""
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_DISCONNECT_REASON_CHARS:
        shown = repr(value)[:80]
        raise UsageError(
            f"a disconnect reason must be a string of 1 to {MAX_DISCONNECT_REASON_CHARS} "
            f"characters, got {shown} ({type(value).__name__})"
        )
    return value


@dataclass(frozen=True, slots=True)
class Disconnect:
    """Disconnect one socket; with a `reason`, its client is sent the event
    `sailcast:disconnect` `{"reason": ...}` just before the Socket.IO DISCONNECT."""

    kind: ClassVar[RequestKind] = RequestKind.DISCONNECT
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Evict:
    """A takeover: the socket's client came back on another connection (possibly on
    another gateway) before this one noticed it had gone. The gateway holding the
    socket closes that connection without telling workers it left (no
    after-disconnect notice: the socket lives on) and stops writing its session."""

    kind: ClassVar[RequestKind] = RequestKind.EVICT


@dataclass(frozen=True, slots=True)
class AddMembers:
    """Every local member of `src` joins `dst`; each gateway answers `Applied`."""

    kind: ClassVar[RequestKind] = RequestKind.ADD_MEMBERS
    src: str
    dst: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RemoveMembers:
    kind: ClassVar[RequestKind] = RequestKind.REMOVE_MEMBERS
    src: str
    dst: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class LeaveAll:
    """Every local member of `src` leaves all its rooms but its own-id room."""

    kind: ClassVar[RequestKind] = RequestKind.LEAVE_ALL
    src: str


@dataclass(frozen=True, slots=True)
class Ping:
    """Nothing to apply: on `gw.all` answered `Applied` (without `n`), on a gateway's
    own subject answered `Pong`."""

    kind: ClassVar[RequestKind] = RequestKind.PING


MAX_MEMBERS_LIMIT: Final = 10_000
"""The most members one `members` request may ask a gateway for."""


@dataclass(frozen=True, slots=True)
class Members:
    """A room's local members on one gateway, sorted by socket id, after the socket id
    `after` (None: from the first), at most `limit`; answered `MembersOf`."""

    kind: ClassVar[RequestKind] = RequestKind.MEMBERS
    room: str
    after: str | None = None
    limit: int = 1000


@dataclass(frozen=True, slots=True)
class Count:
    """How many local members a room has on one gateway, and their distinct users;
    answered `CountOf`."""

    kind: ClassVar[RequestKind] = RequestKind.COUNT
    room: str


@dataclass(frozen=True, slots=True)
class DisconnectMembers:
    """Every local member of `room` is disconnected as `Disconnect` does (with the same
    optional `reason`); each gateway answers `Applied` with how many it disconnected.
    A user's sockets: `room` is their user room (shared.users.user_room)."""

    kind: ClassVar[RequestKind] = RequestKind.DISCONNECT_MEMBERS
    room: str
    reason: str | None = None


SocketRequest = Join | Leave | Rooms | Disconnect | Evict
ClusterRequest = AddMembers | RemoveMembers | LeaveAll | Ping | DisconnectMembers
PresenceQuery = Members | Count
Request = SocketRequest | ClusterRequest | PresenceQuery

SOCKET_KINDS: Final = frozenset(
    {
        RequestKind.JOIN,
        RequestKind.LEAVE,
        RequestKind.ROOMS,
        RequestKind.DISCONNECT,
        RequestKind.EVICT,
    }
)


def encode_request(req: Request) -> bytes:
    body: dict[str, Any] = {"v": WIRE_VERSION, "k": req.kind.value}
    if isinstance(req, Join | Leave):
        body["rooms"] = list(req.rooms)
    elif isinstance(req, AddMembers | RemoveMembers):
        body["src"] = req.src
        body["dst"] = list(req.dst)
    elif isinstance(req, LeaveAll):
        body["src"] = req.src
    elif isinstance(req, Members):
        body["room"] = req.room
        if req.after is not None:
            body["after"] = req.after
        body["limit"] = req.limit
    elif isinstance(req, Count | DisconnectMembers):
        body["room"] = req.room
    if isinstance(req, Disconnect | DisconnectMembers) and req.reason is not None:
        body["reason"] = req.reason
    return orjson.dumps(body)


def decode_request(body: bytes) -> Request:
    """Parse and check a request; every room name is checked before anything changes
    (one that cannot be a subject token would otherwise be half-joined).

    Raises UnknownKind for a well-formed request of an unknown kind and
    MalformedEnvelope for anything else that is wrong."""
    obj = _object(body, "request")
    kind = obj.get("k")
    if obj.get("v") != WIRE_VERSION or not isinstance(kind, str):
        raise MalformedEnvelope(f"not a v{WIRE_VERSION} request: {str(obj)[:80]!r}")
    try:
        known = RequestKind(kind)
    except ValueError:
        raise UnknownKind(kind) from None
    if known is RequestKind.JOIN:
        return Join(_rooms(obj.get("rooms"), "rooms"))
    if known is RequestKind.LEAVE:
        return Leave(_rooms(obj.get("rooms"), "rooms"))
    if known is RequestKind.ROOMS:
        return Rooms()
    if known is RequestKind.DISCONNECT:
        return Disconnect(_reason(obj.get("reason")))
    if known is RequestKind.EVICT:
        return Evict()
    if known is RequestKind.PING:
        return Ping()
    if known is RequestKind.MEMBERS:
        return _members(obj)
    if known is RequestKind.COUNT:
        return Count(_room(obj.get("room"), "room"))
    if known is RequestKind.DISCONNECT_MEMBERS:
        return DisconnectMembers(_room(obj.get("room"), "room"), _reason(obj.get("reason")))
    src = _room(obj.get("src"), "src")
    if known is RequestKind.LEAVE_ALL:
        return LeaveAll(src)
    dst = _rooms(obj.get("dst"), "dst")
    if known is RequestKind.ADD_MEMBERS:
        return AddMembers(src, dst)
    return RemoveMembers(src, dst)


def _members(obj: dict[str, Any]) -> Members:
    after, limit = obj.get("after"), obj.get("limit", 1000)
    if after is not None and (not isinstance(after, str) or not after):
        raise MalformedEnvelope("after must be a non-empty string")
    if type(limit) is not int or not 1 <= limit <= MAX_MEMBERS_LIMIT:
        raise MalformedEnvelope(f"limit must be an integer from 1 to {MAX_MEMBERS_LIMIT}")
    return Members(_room(obj.get("room"), "room"), after, limit)


def _rooms(value: object, what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(x, str) and x for x in value):
        raise MalformedEnvelope(f"{what} must be a list of non-empty strings")
    for room in value:
        _check_room(room)
    return tuple(value)


def _room(value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise MalformedEnvelope(f"{what} must be a non-empty string")
    _check_room(value)
    return value


def _reason(value: object) -> str | None:
    try:
        return disconnect_reason(value)
    except UsageError as exc:
        raise MalformedEnvelope(str(exc)) from exc


def _check_room(room: str) -> None:
    try:
        room_token(room)
    except SailcastError as exc:
        raise MalformedEnvelope(str(exc)) from exc


# -- replies -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Done:
    """`join`, `leave`, `disconnect` applied: `{"ok":true}`."""

    def to_json(self) -> dict[str, Any]:
        return {"ok": True}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Done:
        return cls()


@dataclass(frozen=True, slots=True)
class RoomsOf:
    """The answer to `rooms`: sorted, the socket's own-id room included."""

    rooms: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"ok": True, "rooms": list(self.rooms)}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> RoomsOf:
        rooms = obj.get("rooms")
        if not isinstance(rooms, list) or not all(isinstance(r, str) for r in rooms):
            raise MalformedEnvelope("rooms must be a list of strings")
        return cls(tuple(rooms))


@dataclass(frozen=True, slots=True)
class Applied:
    """One gateway's answer to a request on `gw.all`: who answers (`gw`), the gateways
    it has heard from (`peers`, itself included: whose answers the caller waits for),
    the members affected (`n`, absent for `ping`) and the joins `addm` refused over
    `--max-rooms-per-socket` (absent when none)."""

    gw: str
    peers: tuple[str, ...]
    n: int | None = None
    refused: int = 0

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ok": True}
        if self.n is not None:
            out["n"] = self.n
        out["gw"] = self.gw
        out["peers"] = list(self.peers)
        if self.refused:
            out["refused"] = self.refused
        return out

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Applied:
        gw, peers, n, refused = obj.get("gw"), obj.get("peers"), obj.get("n"), obj.get("refused")
        if not isinstance(gw, str) or not isinstance(peers, list):
            raise MalformedEnvelope("a gateway's answer names its id and its peers")
        if not all(isinstance(p, str) for p in peers):
            raise MalformedEnvelope("peers must be a list of strings")
        if n is not None and type(n) is not int:
            raise MalformedEnvelope("n must be an integer")
        if refused is not None and type(refused) is not int:
            raise MalformedEnvelope("refused must be an integer")
        return cls(gw, tuple(peers), n, refused or 0)


@dataclass(frozen=True, slots=True)
class Pong:
    """A gateway's answer to `ping` on its own subject."""

    gw: str

    def to_json(self) -> dict[str, Any]:
        return {"ok": True, "gw": self.gw}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Pong:
        gw = obj.get("gw")
        if not isinstance(gw, str):
            raise MalformedEnvelope("a pong names its gateway")
        return cls(gw)


@dataclass(frozen=True, slots=True)
class Refused:
    """`{"ok":false,"error":<code>,"message":...}`; on `gw.all` a known kind's refusal
    also carries `gw` and `peers`."""

    error: ErrorCode
    message: str | None = None
    gw: str | None = None
    peers: tuple[str, ...] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ok": False, "error": self.error.value}
        if self.message is not None:
            out["message"] = self.message
        if self.gw is not None:
            out["gw"] = self.gw
        if self.peers is not None:
            out["peers"] = list(self.peers)
        return out

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Refused:
        error, message, gw, peers = (obj.get(k) for k in ("error", "message", "gw", "peers"))
        try:
            code = ErrorCode(str(error))
        except ValueError:
            raise MalformedEnvelope(f"unknown error code {str(error)[:40]!r}") from None
        if message is not None and not isinstance(message, str):
            message = str(message)
        if gw is not None and not isinstance(gw, str):
            raise MalformedEnvelope("gw must be a string")
        if peers is not None and not (
            isinstance(peers, list) and all(isinstance(p, str) for p in peers)
        ):
            raise MalformedEnvelope("peers must be a list of strings")
        return cls(code, message, gw, None if peers is None else tuple(peers))


@dataclass(frozen=True, slots=True)
class Member:
    """One socket in a room: its id, its user id and presence info (None: anonymous)."""

    socket_id: str
    user_id: str | None = None
    info: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"sid": self.socket_id}
        if self.user_id is not None:
            out["uid"] = self.user_id
        if self.info is not None:
            out["info"] = self.info
        return out

    @classmethod
    def from_json(cls, obj: object) -> Member:
        if not isinstance(obj, dict):
            raise MalformedEnvelope("a member is a JSON object")
        sid, uid, info = obj.get("sid"), obj.get("uid"), obj.get("info")
        if not isinstance(sid, str) or not sid:
            raise MalformedEnvelope("a member names its socket id")
        if uid is not None and not isinstance(uid, str):
            raise MalformedEnvelope("a member's uid is a string")
        if info is not None and not isinstance(info, dict):
            raise MalformedEnvelope("a member's info is a JSON object")
        return cls(sid, uid, info)


@dataclass(frozen=True, slots=True)
class MembersOf:
    """One gateway's answer to `members`: its id, members sorted by socket id, and
    `more` when it has members after the last one listed (a page cut by `limit` or by
    the reply's size)."""

    gw: str
    members: tuple[Member, ...]
    more: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": True,
            "gw": self.gw,
            "members": [m.to_json() for m in self.members],
            "more": self.more,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> MembersOf:
        gw, members = obj.get("gw"), obj.get("members")
        if not isinstance(gw, str) or not isinstance(members, list):
            raise MalformedEnvelope("a members answer names its gateway and lists members")
        return cls(gw, tuple(Member.from_json(m) for m in members), obj.get("more") is True)


@dataclass(frozen=True, slots=True)
class CountOf:
    """One gateway's answer to `count`: its members (`sockets`) and their distinct
    user ids (`users`, sorted; anonymous sockets have none)."""

    gw: str
    sockets: int
    users: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"ok": True, "gw": self.gw, "sockets": self.sockets, "users": list(self.users)}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> CountOf:
        gw, sockets, users = obj.get("gw"), obj.get("sockets"), obj.get("users", [])
        if not isinstance(gw, str) or type(sockets) is not int:
            raise MalformedEnvelope("a count answer names its gateway and a socket count")
        if not isinstance(users, list) or not all(isinstance(u, str) for u in users):
            raise MalformedEnvelope("users must be a list of strings")
        return cls(gw, sockets, tuple(users))


Reply = Done | RoomsOf | Applied | Pong | Refused | MembersOf | CountOf
R = TypeVar("R", Done, RoomsOf, Applied, Pong, MembersOf, CountOf)


def encode_reply(reply: Reply) -> bytes:
    return orjson.dumps(reply.to_json())


def decode_reply(body: bytes, expected: type[R]) -> R | Refused:
    """A reply as the request's kind expects it (`expected`), or a refusal."""
    obj = _object(body, "reply")
    ok = obj.get("ok")
    if ok is False:
        return Refused.from_json(obj)
    if ok is not True:
        raise MalformedEnvelope(f"not a reply: {str(obj)[:80]!r}")
    return expected.from_json(obj)


# -- heartbeats --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """On `<p>.gw.hb` every heartbeat interval: `hello` asks every peer to answer at
    once (a gateway starting), `down` says the sender is stopping."""

    id: str
    hello: bool = False
    down: bool = False


def encode_heartbeat(beat: Heartbeat) -> bytes:
    body: dict[str, Any] = {"id": beat.id}
    if beat.hello:
        body["hello"] = True
    if beat.down:
        body["down"] = True
    return orjson.dumps(body)


def decode_heartbeat(body: bytes) -> Heartbeat | None:
    """A heartbeat, or None for JSON that is not one (ignored, as before); raises
    MalformedEnvelope only for a body that is not JSON at all."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedEnvelope(f"invalid JSON heartbeat: {exc}") from exc
    if not isinstance(obj, dict):
        return None
    peer = obj.get("id")
    if not isinstance(peer, str):
        return None
    return Heartbeat(peer, hello=bool(obj.get("hello")), down=bool(obj.get("down")))


def _object(body: bytes, what: str) -> dict[str, Any]:
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedEnvelope(f"invalid JSON {what}: {exc}") from exc
    if not isinstance(obj, dict):
        raise MalformedEnvelope(f"a {what} is a JSON object, got {str(obj)[:80]!r}")
    return obj
