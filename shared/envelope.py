"""The wire envelope: what a NATS message body holds (see docs/protocol.md).

A room, multi-room or blast message is `<meta JSON>\\n<args JSON>`. The args part is exactly the
Socket.IO event arguments `["event", data]`, serialized once by the publisher, so a
gateway builds the packet `42<args>` by concatenation instead of re-encoding the data.
orjson never emits a raw newline, so the first `\\n` always ends the meta part.

Requests and their replies are single JSON objects: `encode_request` / `decode_reply`
here are the generic layer under the worker protocol (shared.vrequest); the control
requests between publishers and gateways are typed in shared.control.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson

from shared.errors import MalformedEnvelope, NotSerializable, PayloadTooLarge, UsageError
from shared.version import WIRE_VERSION

DEFAULT_MAX_PAYLOAD_BYTES: Final = 1024 * 1024
RESERVED_EVENTS: Final = frozenset(
    {"connect", "connect_error", "disconnect", "disconnecting", "newListener", "removeListener"}
)
"""Names Socket.IO clients treat as their own lifecycle events; emitting them misleads."""

KIND_BROADCAST: Final = "bc"
KIND_BLAST: Final = "bl"
KIND_MULTI_ROOM: Final = "mr"
"""A broadcast to many rooms sent ONCE, on the multi-room subject every gateway reads,
with the room list once: O(R) bytes where R per-room copies each listing all R rooms
were O(R^2) (issue 18 item 7; docs/protocol.md, "Broadcasts to many rooms")."""
_KINDS: Final = frozenset({KIND_BROADCAST, KIND_BLAST, KIND_MULTI_ROOM})

MULTI_ROOM_MIN_ROOMS: Final = 8
"""From this many target rooms on, a publisher sends one multi-room message instead of
a copy per room. Below it the per-room copies (each listing every target room) cost at
most a few hundred bytes more and reach only the gateways holding one of the rooms;
above it they grow as R^2. Chosen by measurement (bench/multiroom.py)."""


@dataclass(slots=True)
class DataMessage:
    """A decoded room, multi-room or blast message; `args` is the raw `["event", data]`
    JSON.

    Not frozen, on purpose: one is built per NATS message on the fanout path, and a
    frozen dataclass costs four times as much to build. Treat it as read-only."""

    kind: str
    rooms: tuple[str, ...]
    omit: frozenset[str]
    ts: float | None
    args: bytes
    seq: int | None = None


def encode_args(event: str, data: Any) -> bytes:
    """Serialize the Socket.IO event arguments once, with the errors a caller needs."""
    if not isinstance(event, str) or not event:
        raise UsageError(f"event name must be a non-empty string, got {event!r}")
    if event in RESERVED_EVENTS:
        raise UsageError(f"event name {event!r} is reserved by Socket.IO clients")
    try:
        return orjson.dumps([event, data])
    except TypeError as exc:  # orjson.JSONEncodeError subclasses TypeError
        raise NotSerializable(f"data for event {event!r} is not JSON-serializable: {exc}") from exc


def encode_data(
    kind: str,
    args: bytes,
    *,
    ts: float,
    rooms: Iterable[str] = (),
    omit: Iterable[str] = (),
    max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
) -> bytes:
    meta: dict[str, Any] = {"v": WIRE_VERSION, "k": kind, "ts": ts}
    if rooms:  # lists go in as they are (the publisher's hot path passes lists)
        meta["r"] = rooms if type(rooms) is list else list(rooms)
    if omit:
        meta["o"] = omit if type(omit) is list else list(omit)
    body = orjson.dumps(meta) + b"\n" + args
    if len(body) > max_bytes:
        raise PayloadTooLarge(
            f"message of {len(body)} bytes exceeds the limit of {max_bytes} bytes"
        )
    return body


def decode_data(body: bytes) -> DataMessage:
    """Parse a room/blast message, checking everything a gateway will rely on: the args
    are parsed too, so nothing that is not JSON reaches a client."""
    nl = body.find(b"\n")
    if nl < 0:
        raise MalformedEnvelope("no meta/args separator")
    args_view = body[nl + 1 :]
    try:
        meta = orjson.loads(body[:nl])
        args = orjson.loads(args_view)
    except orjson.JSONDecodeError as exc:
        raise MalformedEnvelope(f"invalid JSON: {exc}") from exc
    if type(meta) is not dict or meta.get("v") != WIRE_VERSION:
        raise MalformedEnvelope(f"unsupported envelope meta {str(meta)[:80]!r}")
    kind = meta.get("k")
    if kind not in _KINDS:
        raise MalformedEnvelope(f"unknown message kind {kind!r}")
    if type(args) is not list or not args or type(args[0]) is not str:
        raise MalformedEnvelope("args must be a JSON array starting with the event name")
    if not args[0] or args[0] in RESERVED_EVENTS:
        raise MalformedEnvelope(f"event name {args[0]!r} is reserved by Socket.IO clients")
    rooms = meta.get("r")
    omit = meta.get("o")
    ts = meta.get("ts")
    if (
        (rooms is not None and not _str_list(rooms))
        or (omit is not None and not _str_list(omit))
        or not (ts is None or isinstance(ts, int | float))
    ):
        raise MalformedEnvelope("rooms/omit must be lists of strings and ts a number")
    if kind != KIND_BLAST and not rooms:
        raise MalformedEnvelope("a broadcast names no room")
    seq = meta.get("seq")
    return DataMessage(
        kind,
        tuple(rooms) if rooms else (),
        frozenset(omit) if omit else _NO_ONE,
        None if ts is None else float(ts),
        args_view,
        seq if type(seq) is int else None,
    )


_NO_ONE: Final[frozenset[str]] = frozenset()


def _str_list(value: object) -> bool:
    return type(value) is list and all(type(x) is str for x in value)


def encode_request(kind: str, **fields: Any) -> bytes:
    return orjson.dumps({"v": WIRE_VERSION, "k": kind, **fields})


def decode_request(body: bytes) -> dict[str, Any]:
    try:
        req = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedEnvelope(f"invalid JSON request: {exc}") from exc
    if (
        not isinstance(req, dict)
        or req.get("v") != WIRE_VERSION
        or not isinstance(req.get("k"), str)
    ):
        raise MalformedEnvelope(f"not a v{WIRE_VERSION} request: {str(req)[:80]!r}")
    return req


def encode_reply(ok: bool = True, **fields: Any) -> bytes:
    return orjson.dumps({"ok": ok, **fields})


def decode_reply(body: bytes) -> Mapping[str, Any]:
    try:
        rep = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedEnvelope(f"invalid JSON reply: {exc}") from exc
    if not isinstance(rep, dict) or not isinstance(rep.get("ok"), bool):
        raise MalformedEnvelope(f"not a reply: {str(rep)[:80]!r}")
    return rep
