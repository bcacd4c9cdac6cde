"""Presence on the wire: the deltas gateways exchange on `<p>.pr.<room>`, and the
events clients get (docs/protocol.md, "Presence"; docs/presence.md).

A presence room's state has no central store. Each gateway holding members of the room
states facts about ITSELF only: which presence keys it holds in the room (a user, or an
anonymous socket), with their info, and how many sockets. Every holder merges those
facts (key → the gateways holding it), so a user's second tab, wherever it is, is not a
second join, and `leave` comes when the last gateway stops holding the key.

- `PresenceDelta`: the keys whose local state changed in one coalescing window.
- `PresenceState`: the sender's whole local state for the room, replacing what it said
  before; large ones come in parts (`first` … `last`), applied at the last one.
  `hello` asks every holder (or those named in `to`) to answer with their own state.
- `PresenceHello`: "send me your state" without facts of its own (a gap was seen).

`(inc, seq)` orders one gateway's messages: `inc` is the sender process' incarnation,
`seq` a per-gateway counter; `prev` is the `seq` of the sender's previous message for
the same room, so a receiver sees a lost message as a gap and asks for a state. Old or
repeated messages are recognised by their order and ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

import orjson

from shared.errors import MalformedEnvelope
from shared.version import WIRE_VERSION

USER_KEY_PREFIX: Final = "u:"
SOCKET_KEY_PREFIX: Final = "s:"

EVENT_PRESENCE: Final = "presence"
"""`{"room", "joins": [{"user_id", "info", "socket_id"?}], "leaves": [{"user_id",
"socket_id"?}]}`: one per room per coalescing window to its members."""
EVENT_STATE: Final = "presence_state"
"""`{"room", "members": [{"user_id", "info", "socket_id"?}]}`: to a socket new in the
room, after its first window."""
EVENT_COUNT: Final = "presence_count"
"""`{"room", "sockets", "users"}`: count-only rooms, when it changed (and once to a socket
new in the room)."""

Info = dict[str, Any] | None


def user_key(user_id: str) -> str:
    return USER_KEY_PREFIX + user_id


def socket_key(socket_id: str) -> str:
    """An anonymous socket is a presence key of its own."""
    return SOCKET_KEY_PREFIX + socket_id


def is_user_key(key: str) -> bool:
    return key.startswith(USER_KEY_PREFIX)


def member_entry(key: str, info: Info, *, with_info: bool = True) -> dict[str, Any]:
    """What a client sees of one key: `user_id` (null for an anonymous socket), `info`,
    and `socket_id` for an anonymous socket."""
    if is_user_key(key):
        out: dict[str, Any] = {"user_id": key[len(USER_KEY_PREFIX) :]}
    else:
        out = {"user_id": None, "socket_id": key[len(SOCKET_KEY_PREFIX) :]}
    if with_info:
        out["info"] = info
    return out


class PresenceKind(StrEnum):
    DELTA = "d"
    STATE = "s"
    HELLO = "h"


@dataclass(frozen=True, slots=True)
class Fact:
    """The sender holds `key` in the room, with this info (None: none, or count-only)."""

    key: str
    info: Info = None


@dataclass(frozen=True, slots=True)
class PresenceDelta:
    gw: str
    inc: int
    seq: int
    prev: int
    sockets: int
    """The sender's local sockets in the room after this delta."""
    add: tuple[Fact, ...] = ()
    remove: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PresenceState:
    gw: str
    inc: int
    seq: int
    prev: int
    """0 on a first part; the previous part's `seq` on the others."""
    sockets: int
    facts: tuple[Fact, ...] = ()
    first: bool = True
    last: bool = True
    hello: bool = False


@dataclass(frozen=True, slots=True)
class PresenceHello:
    gw: str
    to: tuple[str, ...] = ()
    """The gateways asked to answer; empty: every holder."""


PresenceMessage = PresenceDelta | PresenceState | PresenceHello


def _facts(facts: tuple[Fact, ...]) -> list[list[Any]]:
    return [[f.key, f.info] for f in facts]


def encode_presence(msg: PresenceMessage) -> bytes:
    body: dict[str, Any] = {"v": WIRE_VERSION, "gw": msg.gw}
    if isinstance(msg, PresenceHello):
        body["t"] = PresenceKind.HELLO.value
        if msg.to:
            body["to"] = list(msg.to)
        return orjson.dumps(body)
    body.update(inc=msg.inc, seq=msg.seq, prev=msg.prev, n=msg.sockets)
    if isinstance(msg, PresenceDelta):
        body["t"] = PresenceKind.DELTA.value
        body["add"] = _facts(msg.add)
        body["del"] = list(msg.remove)
    else:
        body["t"] = PresenceKind.STATE.value
        body["add"] = _facts(msg.facts)
        body["first"], body["last"] = msg.first, msg.last
        if msg.hello:
            body["hello"] = True
    return orjson.dumps(body)


def fact_size(fact: Fact) -> int:
    """Encoded bytes of one fact (to cut a state into parts under NATS' payload limit)."""
    return len(orjson.dumps([fact.key, fact.info]))


def decode_presence(body: bytes) -> PresenceMessage:
    """Raises MalformedEnvelope for anything that is not a presence message."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedEnvelope(f"invalid JSON presence message: {exc}") from exc
    if not isinstance(obj, dict) or obj.get("v") != WIRE_VERSION:
        raise MalformedEnvelope(f"not a v{WIRE_VERSION} presence message: {str(obj)[:80]!r}")
    gw, kind = obj.get("gw"), obj.get("t")
    if not isinstance(gw, str) or not gw:
        raise MalformedEnvelope("a presence message names its gateway")
    if kind == PresenceKind.HELLO:
        to = obj.get("to", [])
        if not isinstance(to, list) or not all(isinstance(g, str) for g in to):
            raise MalformedEnvelope("to must be a list of gateway ids")
        return PresenceHello(gw, tuple(to))
    inc, seq, prev, n = (_count(obj.get(k), k) for k in ("inc", "seq", "prev", "n"))
    facts = _decode_facts(obj.get("add", []))
    if kind == PresenceKind.DELTA:
        remove = obj.get("del", [])
        if not isinstance(remove, list) or not all(isinstance(k, str) and k for k in remove):
            raise MalformedEnvelope("del must be a list of keys")
        return PresenceDelta(gw, inc, seq, prev, n, facts, tuple(remove))
    if kind == PresenceKind.STATE:
        first, last = obj.get("first", True), obj.get("last", True)
        if not isinstance(first, bool) or not isinstance(last, bool):
            raise MalformedEnvelope("first and last must be booleans")
        return PresenceState(gw, inc, seq, prev, n, facts, first, last, obj.get("hello") is True)
    raise MalformedEnvelope(f"unknown presence message kind {str(kind)[:20]!r}")


def _count(value: object, name: str) -> int:
    if type(value) is not int or value < 0:
        raise MalformedEnvelope(f"{name} must be a non-negative integer")
    return value


def _decode_facts(value: object) -> tuple[Fact, ...]:
    if not isinstance(value, list):
        raise MalformedEnvelope("add must be a list of [key, info] pairs")
    out: list[Fact] = []
    for item in value:
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)):
            raise MalformedEnvelope("add must be a list of [key, info] pairs")
        key, info = item
        if not key or not (info is None or isinstance(info, dict)):
            raise MalformedEnvelope("a fact is a non-empty key and an object or null")
        out.append(Fact(key, info))
    return tuple(out)


__all__ = [
    "EVENT_COUNT",
    "EVENT_PRESENCE",
    "EVENT_STATE",
    "SOCKET_KEY_PREFIX",
    "USER_KEY_PREFIX",
    "Fact",
    "Info",
    "PresenceDelta",
    "PresenceHello",
    "PresenceKind",
    "PresenceMessage",
    "PresenceState",
    "decode_presence",
    "encode_presence",
    "fact_size",
    "is_user_key",
    "member_entry",
    "socket_key",
    "user_key",
]
