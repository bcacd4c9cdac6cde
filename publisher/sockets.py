"""`pub.sockets`: the `sails.sockets` verbs, cluster-wide and acknowledged.

Differences from Sails, on purpose (docs/sails-compat.md): join/leave return only once
the socket's gateway applied them; an unknown socket id raises NoSuchSocket; a socket
in several target rooms receives a broadcast once; omit works in every form; the
room-membership operations return once every gateway has applied them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any, Final, Protocol

from shared.control import (
    AddMembers,
    Applied,
    ClusterRequest,
    Disconnect,
    Done,
    Join,
    Leave,
    LeaveAll,
    RemoveMembers,
    Rooms,
    RoomsOf,
    SocketRequest,
)
from shared.envelope import (
    KIND_BLAST,
    KIND_BROADCAST,
    KIND_MULTI_ROOM,
    MULTI_ROOM_MIN_ROOMS,
    encode_args,
    encode_data,
)
from shared.errors import InvalidRoomName, LimitExceeded, UsageError
from shared.history import HistoryRules
from shared.subjects import Subjects, check_socket_id, room_token
from shared.users import check_not_reserved, user_id_of, user_room

ROOM_SUBJECT_CACHE: Final = 65536
"""Room subjects a publisher keeps ready (each at most a few hundred bytes)."""
SHOWN_CHARS: Final = 80
"""How much of a bad room argument an error message quotes."""


DEFAULT_EVENT: Final = "message"
"""Sails' `sails.sockets.DEFAULT_EVENT_NAME`."""

OneOrMany = str | Iterable[str]
UserIds = str | int | Iterable[str | int]
"""One user id or many (`broadcast_to_user`)."""
Outgoing = tuple[str, bytes, dict[str, str] | None]
"""One message to send: (subject, body, headers). Headers None: a core publish; a dict
(empty without a msg_id): a history room's copy, stored through JetStream
(publisher/stored.py)."""
MSG_ID_HEADER: Final = "Nats-Msg-Id"


def as_rooms(rooms: OneOrMany, what: str = "rooms") -> list[str]:
    """One name or many → a de-duplicated list in caller order, each name checked."""
    out = [rooms] if isinstance(rooms, str) else _unique(rooms, what)
    for name in out:
        room_token(name)
    return out


def own_rooms(rooms: OneOrMany, what: str = "rooms") -> list[str]:
    """`as_rooms` for rooms a worker puts sockets in or takes them out of: never a
    reserved `sailcast:` room (ReservedRoom; shared.users)."""
    out = as_rooms(rooms, what)
    check_not_reserved(out)
    return out


def user_rooms(user_ids: UserIds) -> list[str]:
    """One user id or many (strings or integers, as shared.users reads them) → their
    user rooms, de-duplicated in caller order."""
    items = [user_ids] if isinstance(user_ids, str | int) else list(user_ids)
    rooms = []
    for uid in items:
        user = user_id_of(uid)
        if user is None:
            raise UsageError("a user id must not be None")
        rooms.append(user_room(user))
    if not rooms:
        raise UsageError("no user id given")
    return list(dict.fromkeys(rooms))


def _unique(rooms: Iterable[str], what: str) -> list[str]:
    """Many names → de-duplicated in caller order. Anything that is not an iterable of
    strings raises InvalidRoomName naming the value (bytes would iterate as ints); the
    names themselves are checked where they are encoded (`room_token`)."""
    if isinstance(rooms, bytes | bytearray | memoryview) or not isinstance(rooms, Iterable):
        raise InvalidRoomName(
            f"{what} must be a room name or a list of room names, got {_shown(rooms)}"
        )
    out = list(rooms)
    for name in out:
        if not isinstance(name, str):
            raise InvalidRoomName(f"room names must be strings, got {_shown(name)} in {what}")
    out = list(dict.fromkeys(out))
    if not out:
        raise InvalidRoomName(f"no room given in {what}")
    return out


def _shown(value: object) -> str:
    """A bad argument as an error message shows it: its repr, cut short, and its type."""
    text = repr(value)
    if len(text) > SHOWN_CHARS:
        text = text[: SHOWN_CHARS - 1] + "…"
    return f"{text} ({type(value).__name__})"


def _check_msg_id(msg_id: object) -> None:
    """A msg_id travels as a NATS header value: one non-empty line."""
    if not isinstance(msg_id, str) or not msg_id or "\r" in msg_id or "\n" in msg_id:
        raise UsageError(f"msg_id must be a non-empty one-line string, got {_shown(msg_id)}")


def as_socket_ids(ids: OneOrMany | None) -> list[str]:
    if ids is None:
        return []
    items = [ids] if isinstance(ids, str) else list(ids)
    return [check_socket_id(i) for i in dict.fromkeys(items)]


def event_and_data(event: Any, data: Any) -> tuple[str, Any]:
    """Sails' short form `broadcast(rooms, data)`: a non-string event is the data."""
    if not isinstance(event, str) and data is None:
        return DEFAULT_EVENT, event
    if not isinstance(event, str):
        raise UsageError(f"event name must be a string, got {type(event).__name__}")
    return event or DEFAULT_EVENT, data


class Wire(Protocol):
    """What the verbs need of their publisher (`publisher.client.Publisher` is one): the
    subjects, the size limit and the three ways of sending. Named here so this module
    does not import the client that builds it."""

    subjects: Subjects
    max_payload_bytes: int

    async def publish_raw(self, subject: str, body: bytes, kind: str) -> None: ...

    async def publish_stored(
        self, subject: str, body: bytes, kind: str, headers: dict[str, str], *, wait: bool = False
    ) -> asyncio.Future[None] | None: ...

    async def ask_socket(self, socket_id: str, req: SocketRequest) -> Done | RoomsOf: ...

    def raise_stored_failures(self) -> None: ...

    async def ask_all_gateways(self, req: ClusterRequest) -> list[Applied]: ...


class Sockets:
    def __init__(self, pub: Wire) -> None:
        self._pub = pub
        self._room_subjects: dict[str, str] = {}
        self._history = HistoryRules()
        self._history_on = False
        """Any rule at all: without one, a broadcast does not look rooms up."""
        self._history_subjects: dict[str, str | None] = {}

    def use_history(self, rules: HistoryRules) -> None:
        """Route by these rules from now on (the publisher reads them from the history
        stream: publisher/stored.py); rooms without a rule keep the core path."""
        if rules != self._history:
            self._history = rules
            self._history_subjects = {}
        self._history_on = bool(rules)

    @property
    def history_rules(self) -> HistoryRules:
        return self._history

    def _history_subject(self, name: str) -> str | None:
        """The history subject of a room with a rule; None: the room keeps no history."""
        try:
            return self._history_subjects[name]
        except KeyError:
            pass
        subject = self._pub.subjects.history(name) if self._history.rule_for(name) else None
        if len(self._history_subjects) >= ROOM_SUBJECT_CACHE:
            self._history_subjects.clear()
        self._history_subjects[name] = subject
        return subject

    def _room_subject(self, name: str) -> str:
        """The room's subject (checking the name), kept for the rooms a worker uses
        again and again: encoding it was a tenth of a publish."""
        subject = self._room_subjects.get(name) if type(name) is str else None
        if subject is None:
            subject = self._pub.subjects.room(name)
            if len(self._room_subjects) >= ROOM_SUBJECT_CACHE:
                self._room_subjects.clear()  # bounded: a worker may address millions
            self._room_subjects[name] = subject
        return subject

    # -- per-socket ------------------------------------------------------------------
    async def join(self, socket_ids: OneOrMany, rooms: OneOrMany) -> None:
        """Add the socket(s) to the room(s); in effect on their gateway when this returns.
        ReservedRoom for a `sailcast:` room (users' rooms are the gateway's)."""
        await self._each_socket(Join(tuple(own_rooms(rooms))), socket_ids)

    async def leave(self, socket_ids: OneOrMany, rooms: OneOrMany) -> None:
        await self._each_socket(Leave(tuple(own_rooms(rooms))), socket_ids)

    async def rooms(self, socket_id: str) -> list[str]:
        """The rooms a socket is in, its own-id room included (Sails 0.12 socketRooms,
        but cluster-wide)."""
        reply = await self._pub.ask_socket(check_socket_id(socket_id), Rooms())
        return list(reply.rooms) if isinstance(reply, RoomsOf) else []

    async def disconnect(self, socket_id: str) -> None:
        """Disconnect one socket, wherever it is connected."""
        await self._pub.ask_socket(check_socket_id(socket_id), Disconnect())

    async def _each_socket(self, req: SocketRequest, socket_ids: OneOrMany) -> None:
        ids = as_socket_ids(socket_ids)
        if not ids:
            raise UsageError(f"{req.kind.value}: no socket id given")
        if len(ids) == 1:
            await self._pub.ask_socket(ids[0], req)
            return
        results = await asyncio.gather(
            *(self._pub.ask_socket(i, req) for i in ids), return_exceptions=True
        )
        for r in results:
            if isinstance(r, BaseException):
                raise r

    # -- messages --------------------------------------------------------------------
    def prepare_broadcast(
        self,
        rooms: OneOrMany,
        event: Any = DEFAULT_EVENT,
        data: Any = None,
        *,
        omit: OneOrMany | None = None,
        msg_id: str | None = None,
        wait_stored: bool = False,
    ) -> list[Outgoing]:
        """Validate and encode a broadcast: the messages to publish. Pure, so every
        caller mistake raises here, before anything is sent (`wait_stored` says how the
        caller waits, not what is sent: it is taken here so both publishers' broadcast
        have these parameters). Below MULTI_ROOM_MIN_ROOMS
        rooms, a copy per room subject; from there on, one message on the multi-room
        subject. A room with a history rule gets its own copy on its history subject
        instead (`_prepare_with_history`)."""
        event, data = event_and_data(event, data)
        if msg_id is not None:
            _check_msg_id(msg_id)
        # one room name is the common case: no list to de-duplicate; the subject
        # encoding checks every name (room_token) exactly once
        kind = KIND_BROADCAST
        if isinstance(rooms, str):
            targets = [rooms]
            if self._history_on:
                stored = self._history_subject(rooms)
                if stored is not None:
                    return self._prepare_with_history(
                        targets, [(rooms, stored)], [], event, data, omit, msg_id
                    )
            subjects = [self._room_subject(rooms)]
        else:
            targets = _unique(rooms, "rooms")
            if self._history_on:
                history, core = self._split(targets)
                if history:
                    return self._prepare_with_history(
                        targets, history, core, event, data, omit, msg_id
                    )
            if len(targets) >= MULTI_ROOM_MIN_ROOMS:  # once, O(R) bytes: docs/protocol.md
                for room in targets:
                    room_token(room)
                kind, subjects = KIND_MULTI_ROOM, [self._pub.subjects.multi_room]
            else:
                room_subject = self._room_subject
                subjects = [room_subject(room) for room in targets]
        body = encode_data(
            kind,
            encode_args(event, data),
            ts=time.time(),
            rooms=targets,
            omit=as_socket_ids(omit) if omit is not None else (),
            max_bytes=self._pub.max_payload_bytes,
        )
        return [(subject, body, None) for subject in subjects]

    def _split(self, targets: list[str]) -> tuple[list[tuple[str, str]], list[str]]:
        """(history rooms with their history subjects, the other rooms), in order."""
        history: list[tuple[str, str]] = []
        core: list[str] = []
        for room in targets:
            stored = self._history_subject(room)
            if stored is None:
                core.append(room)
            else:
                history.append((room, stored))
        return history, core

    def _prepare_with_history(
        self,
        targets: list[str],
        history: list[tuple[str, str]],
        core: list[str],
        event: str,
        data: Any,
        omit: OneOrMany | None,
        msg_id: str | None,
    ) -> list[Outgoing]:
        """A copy per history room on its history subject, each listing every target
        room, so a gateway's "first room" rule still gives a socket in several of them
        the message once. The other rooms go as they would alone: a copy per room, or
        one multi-room message from MULTI_ROOM_MIN_ROOMS of them on. A multi-room
        message reaches every member of its rooms, so then the copies list those rooms
        first (their members get it from the multi-room message); otherwise the history
        rooms come first, so a socket also in a core room gets the stored copy (which a
        recovery can replay). With a msg_id and several rooms, each copy's id is
        `<msg_id>:<room>`."""
        args = encode_args(event, data)
        now = time.time()
        omitted = as_socket_ids(omit) if omit is not None else ()
        limit = self._pub.max_payload_bytes
        out: list[Outgoing] = []
        history_rooms = [room for room, _ in history]
        if len(core) >= MULTI_ROOM_MIN_ROOMS:
            for room in core:
                room_token(room)
            multi = encode_data(
                KIND_MULTI_ROOM, args, ts=now, rooms=core, omit=omitted, max_bytes=limit
            )
            out.append((self._pub.subjects.multi_room, multi, None))
            order = core + history_rooms
        else:
            order = history_rooms + core
        body = encode_data(KIND_BROADCAST, args, ts=now, rooms=order, omit=omitted, max_bytes=limit)
        several = len(targets) > 1
        for room, subject in history:
            headers = {}
            if msg_id is not None:
                headers[MSG_ID_HEADER] = f"{msg_id}:{room}" if several else msg_id
            out.append((subject, body, headers))
        if len(core) < MULTI_ROOM_MIN_ROOMS:
            out.extend((self._room_subject(room), body, None) for room in core)
        return out

    def prepare_blast(
        self, event: Any = DEFAULT_EVENT, data: Any = None, *, omit: OneOrMany | None = None
    ) -> list[Outgoing]:
        """Blasts are never stored: they reach every socket, in no room's history."""
        event, data = event_and_data(event, data)
        body = encode_data(
            KIND_BLAST,
            encode_args(event, data),
            ts=time.time(),
            omit=as_socket_ids(omit),
            max_bytes=self._pub.max_payload_bytes,
        )
        return [(self._pub.subjects.blast, body, None)]

    async def broadcast(
        self,
        rooms: OneOrMany,
        event: Any = DEFAULT_EVENT,
        data: Any = None,
        *,
        omit: OneOrMany | None = None,
        msg_id: str | None = None,
        wait_stored: bool = False,
    ) -> None:
        """Send `event` with `data` to every socket in the room(s), once each, except
        `omit`. A socket id is a room: broadcasting to it messages that socket.

        A room with history (the gateways' `--history` rules) is stored through
        JetStream: this returns once it is sent, and its PubAck is checked in the
        background (a failure goes to on_error and is raised as PublishFailed by the
        next `pub.flush()`, which waits for every ack, or the next broadcast or blast,
        which then sends nothing). `wait_stored=True` returns only once
        JetStream confirmed it, raising TransportError if it could not. `msg_id` makes a
        retry safe: within the duplicate window a message with the same id is stored,
        and delivered, once (rooms without history ignore it)."""
        pub = self._pub
        outgoing = self.prepare_broadcast(rooms, event, data, omit=omit, msg_id=msg_id)
        pub.raise_stored_failures()
        acks: list[asyncio.Future[None]] = []
        for subject, body, headers in outgoing:
            if headers is None:
                await pub.publish_raw(subject, body, "broadcast")
            else:
                ack = await pub.publish_stored(
                    subject, body, "broadcast", headers, wait=wait_stored
                )
                if ack is not None:
                    acks.append(ack)
        if acks:
            results = await asyncio.gather(*acks, return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException):
                    raise result

    async def blast(
        self, event: Any = DEFAULT_EVENT, data: Any = None, *, omit: OneOrMany | None = None
    ) -> None:
        """Send to every connected socket on every gateway, except `omit`."""
        outgoing = self.prepare_blast(event, data, omit=omit)
        self._pub.raise_stored_failures()  # as broadcast: stored ones that failed before
        for subject, body, _ in outgoing:
            await self._pub.publish_raw(subject, body, "blast")

    # -- room membership, cluster-wide -----------------------------------------------
    async def add_room_members_to_rooms(self, source_room: str, dest_rooms: OneOrMany) -> None:
        """Every member of source_room (on any gateway) joins dest_rooms."""
        src = as_rooms(source_room, "source_room")[0]
        dst = own_rooms(dest_rooms, "dest_rooms")
        answers = await self._pub.ask_all_gateways(AddMembers(src, tuple(dst)))
        refused = sum(a.refused for a in answers)
        if refused:
            raise LimitExceeded(
                f"{refused} join(s) of members of {src!r} refused: they would be in more "
                "rooms than the gateway's --max-rooms-per-socket (the others were applied)"
            )

    async def remove_room_members_from_rooms(self, source_room: str, dest_rooms: OneOrMany) -> None:
        src = as_rooms(source_room, "source_room")[0]
        dst = own_rooms(dest_rooms, "dest_rooms")
        await self._pub.ask_all_gateways(RemoveMembers(src, tuple(dst)))

    async def leave_all(self, room: str) -> None:
        """Every member of room leaves all its rooms, except its own-id room."""
        await self._pub.ask_all_gateways(LeaveAll(as_rooms(room, "room")[0]))

    # -- users (shared.users) --------------------------------------------------------
    def prepare_broadcast_to_user(
        self,
        user_ids: UserIds,
        event: Any = DEFAULT_EVENT,
        data: Any = None,
        *,
        omit: OneOrMany | None = None,
        wait_stored: bool = False,
    ) -> list[Outgoing]:
        """`prepare_broadcast` to the users' rooms (pure: every mistake raises here)."""
        return self.prepare_broadcast(user_rooms(user_ids), event, data, omit=omit)

    async def broadcast_to_user(
        self,
        user_ids: UserIds,
        event: Any = DEFAULT_EVENT,
        data: Any = None,
        *,
        omit: OneOrMany | None = None,
        wait_stored: bool = False,
    ) -> None:
        """Send `event` with `data` to every socket of the user(s) — every tab, on every
        gateway — once each, except `omit`: one broadcast to their user rooms (one
        message on the multi-room subject for many users)."""
        await self.broadcast(user_rooms(user_ids), event, data, omit=omit, wait_stored=wait_stored)
