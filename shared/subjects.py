"""The NATS subject grammar and the room-name ↔ subject-token encoding.

Sails room names are arbitrary strings; NATS subject tokens may not contain `.`,
`*`, `>` or whitespace. Every room therefore maps to one token through an injective
escape: the bytes `[A-Za-z0-9_-]` stand for themselves and every other UTF-8 byte
becomes `=XX` (two upper-case hex digits). `=` is itself escaped, so the mapping is
reversible, and no token can contain a wildcard or a separator. Common names
(`lobby`, socket ids) stay readable in NATS tooling.
"""

from __future__ import annotations

import re
from enum import Enum
from functools import lru_cache
from typing import Final, NamedTuple

from shared.errors import ConfigError, InvalidRoomName, InvalidSocketId

MAX_ROOM_NAME_BYTES: Final = 1024
"""Keeps `PUB <subject> <reply> <size>` well under NATS' 4 KiB control line."""

_SAFE: Final = re.compile(r"[A-Za-z0-9_-]+")
_SAFE_BYTES: Final = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_TOKEN: Final = re.compile(r"(?:[A-Za-z0-9_-]|=[0-9A-F]{2})+")
_PREFIX: Final = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")
_GATEWAY_ID: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")

WORKER_QUEUE: Final = "sailcast-workers"
"""NATS queue group of the workers serving virtual requests and hooks: each message goes
to one member, so workers share the load and any of them can come and go."""


@lru_cache(maxsize=65536)
def _encode(name: str) -> str:
    try:
        raw = name.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidRoomName(f"room name {name!r} is not valid unicode text") from exc
    if len(raw) > MAX_ROOM_NAME_BYTES:
        raise InvalidRoomName(
            f"room name of {len(raw)} bytes exceeds {MAX_ROOM_NAME_BYTES} bytes: {name[:40]!r}…"
        )
    if _SAFE.fullmatch(name):
        return name
    return "".join(chr(b) if b in _SAFE_BYTES else f"={b:02X}" for b in raw)


def room_token(name: str) -> str:
    """Encode a room name as one NATS subject token (injective, wildcard-free)."""
    if not isinstance(name, str):
        raise InvalidRoomName(f"room name must be a string, got {type(name).__name__}")
    if not name:
        raise InvalidRoomName("room name must not be empty")
    return _encode(name)


def room_name(token: str) -> str:
    """Invert `room_token`; raises InvalidRoomName for anything it cannot have made."""
    if _SAFE.fullmatch(token) and len(token) <= MAX_ROOM_NAME_BYTES:
        return token  # the common case (`lobby`, socket ids) stands for itself
    if not _TOKEN.fullmatch(token):
        raise InvalidRoomName(f"{token!r} is not an encoded room token")
    out = bytearray()
    i = 0
    while i < len(token):
        ch = token[i]
        if ch == "=":
            out.append(int(token[i + 1 : i + 3], 16))
            i += 3
        else:
            out.append(ord(ch))
            i += 1
    try:
        name = out.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRoomName(f"{token!r} does not decode to UTF-8") from exc
    if room_token(name) != token:  # e.g. "=41" where "A" was required: not canonical
        raise InvalidRoomName(f"{token!r} is not the canonical encoding of {name!r}")
    return name


def check_socket_id(socket_id: object) -> str:
    if not isinstance(socket_id, str) or not socket_id:
        raise InvalidSocketId(f"socket id must be a non-empty string, got {socket_id!r}")
    return socket_id


def check_gateway_id(gateway_id: str) -> str:
    if not _GATEWAY_ID.fullmatch(gateway_id):
        raise ConfigError(
            f"gateway id {gateway_id!r} must match [A-Za-z0-9_-]{{1,64}} (SAILCAST_GATEWAY_ID)"
        )
    return gateway_id


class SubjectKind(Enum):
    """What a subject carries; the gateway's one message handler dispatches on it."""

    ROOM = "r"
    SOCKET = "s"
    BLAST = "blast"
    MULTI_ROOM = "mr"
    GATEWAYS = "gw.all"
    HEARTBEAT = "gw.hb"
    GATEWAY = "gw.id"
    VIRTUAL_REQUESTS = "vreq"
    HOOK_CONNECT = "hook.connect"
    HOOK_DISCONNECT = "hook.disconnect"
    CLIENT_EVENT = "ev"
    HOOK_AFTER_CONNECT = "hook.after_connect"


class Parsed(NamedTuple):
    """A subject read back: its kind and its decoded token (room name, socket id or
    gateway id; empty for the subjects that have none)."""

    kind: SubjectKind
    name: str = ""


_NAMED_KINDS: Final = {
    "r": SubjectKind.ROOM,
    "s": SubjectKind.SOCKET,
    "gw.id": SubjectKind.GATEWAY,
    "ev": SubjectKind.CLIENT_EVENT,
}
_FIXED_KINDS: Final = {
    k.value: k
    for k in SubjectKind
    if k not in (SubjectKind.ROOM, SubjectKind.SOCKET, SubjectKind.CLIENT_EVENT)
}


class Subjects:
    """Every subject Sailcast uses, under one prefix (default `sailcast`).

    `<p>.r.<room>`   room messages (broadcast); gateways subscribe while they hold a member
    `<p>.h.<room>`   a history room's messages, as published: the history stream stores
                     them and re-publishes each on `<p>.r.<room>` (shared/history.py)
    `<p>.s.<socket>` requests aimed at one socket; only its gateway subscribes
    `<p>.blast`      messages to every socket
    `<p>.mr`         broadcasts to many rooms, the room list sent once; every gateway
    `<p>.gw.all`     requests every gateway answers (room-membership operations)
    `<p>.gw.hb`      gateway heartbeats: how gateways know each other
    `<p>.gw.id.<id>` requests to one gateway (readiness round trip)
    `<p>.vreq`       virtual requests (sails.io.js `io.socket.get` …) for the workers; queue group
    `<p>.hook.connect`     "may this socket connect?" asked of the workers; queue group
    `<p>.hook.disconnect`  "this socket has gone" told to the workers; queue group
    `<p>.hook.after_connect` "this socket is connected" told to the workers; queue group
    `<p>.ev.<event>` a client's own event (`socket.emit("typing", …)`) for the workers that
                     declared it; queue group (shared/client_events.py)
    """

    __slots__ = (
        "_parsed",
        "blast",
        "client_events",
        "gateways",
        "heartbeat",
        "history_all",
        "hook_after_connect",
        "hook_connect",
        "hook_disconnect",
        "multi_room",
        "prefix",
        "virtual_requests",
    )

    def __init__(self, prefix: str = "sailcast") -> None:
        if not _PREFIX.fullmatch(prefix):
            raise ConfigError(
                f"subject prefix {prefix!r} must be dot-separated [A-Za-z0-9_-] tokens "
                "(SAILCAST_PREFIX)"
            )
        self.prefix = prefix
        self.blast = f"{prefix}.blast"
        self.multi_room = f"{prefix}.mr"
        self.gateways = f"{prefix}.gw.all"
        self.heartbeat = f"{prefix}.gw.hb"
        self.virtual_requests = f"{prefix}.vreq"
        self.hook_connect = f"{prefix}.hook.connect"
        self.hook_disconnect = f"{prefix}.hook.disconnect"
        self.hook_after_connect = f"{prefix}.hook.after_connect"
        self.history_all = f"{prefix}.h.>"
        """What the history stream captures."""
        self.client_events = f"{prefix}.ev.*"
        """Every client event: what a worker declaring all of them subscribes to."""
        self._parsed: dict[bytes | str, Parsed] = {}

    def room(self, name: str) -> str:
        return f"{self.prefix}.r.{room_token(name)}"

    def history(self, name: str) -> str:
        """Where a publisher sends a history room's messages (never subscribed to)."""
        return f"{self.prefix}.h.{room_token(name)}"

    def socket(self, socket_id: str) -> str:
        return f"{self.prefix}.s.{room_token(check_socket_id(socket_id))}"

    def client_event(self, name: str) -> str:
        """The subject of one client event; the name is encoded as a room name is."""
        return f"{self.prefix}.ev.{room_token(name)}"

    def gateway(self, gateway_id: str) -> str:
        return f"{self.prefix}.gw.id.{check_gateway_id(gateway_id)}"

    def parse(self, subject: bytes | str) -> Parsed | None:
        """Invert the builders above: the kind of a subject under this prefix and its
        decoded name; None for anything they cannot have made. Cached (one dict lookup
        when seen before): the gateway parses the subject of every message it gets."""
        parsed = self._parsed.get(subject)
        if parsed is None:
            parsed = _parse(self.prefix, subject)
            if parsed is not None:
                if len(self._parsed) >= PARSED_CACHE_MAX:
                    self._parsed.clear()  # bounded: a gateway may see millions of rooms
                self._parsed[subject] = parsed
        return parsed


PARSED_CACHE_MAX: Final = 65536


def _parse(prefix: str, subject: bytes | str) -> Parsed | None:
    try:
        text = subject.decode("ascii") if isinstance(subject, bytes) else subject
    except UnicodeDecodeError:
        return None
    if not text.startswith(prefix) or text[len(prefix) : len(prefix) + 1] != ".":
        return None
    rest = text[len(prefix) + 1 :]
    fixed = _FIXED_KINDS.get(rest)
    if fixed is not None:
        return Parsed(fixed)
    head, _, token = rest.rpartition(".")
    kind = _NAMED_KINDS.get(head)
    if kind is None or not token:
        return None
    try:
        if kind is SubjectKind.GATEWAY:
            return Parsed(kind, check_gateway_id(token))
        return Parsed(kind, room_name(token))
    except (InvalidRoomName, ConfigError):
        return None
