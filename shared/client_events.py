"""Client events on the wire (docs/protocol.md, "Client events"): a Socket.IO client's
own `socket.emit("typing", data, ack)`, forwarded by its gateway to the workers that
declared that event (`@router.event("typing")`, or an ASGI app through the bridge).

Each event name has its own subject, `<p>.ev.<token of the name>`, on which the
workers that declared it subscribe in the queue group `sailcast-workers`; so an event
nobody declared finds no responder and the gateway refuses it at once (counted). The
request is a `shared.envelope` request of kind `event`; the answer a reply whose `args`
are the arguments of the client's ack.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from shared.envelope import decode_reply, decode_request, encode_reply, encode_request
from shared.errors import MalformedEnvelope, NotSerializable
from shared.vrequest import METHODS, Handshake

KIND_EVENT: Final = "event"
MAX_EVENT_NAME_BYTES: Final = 200
RESERVED_EVENTS: Final = frozenset(
    {
        "connect",
        "connect_error",
        "disconnect",
        "disconnecting",
        "newListener",
        "removeListener",
        *METHODS,  # sails.io.js virtual requests
    }
)
"""Names no worker can declare: Socket.IO's own and the virtual-request methods."""


def check_event_name(name: object) -> str:
    """A name a client may emit and a worker may declare, or MalformedEnvelope."""
    if not isinstance(name, str) or not name:
        raise MalformedEnvelope("an event name must be a non-empty string")
    if len(name.encode()) > MAX_EVENT_NAME_BYTES:
        raise MalformedEnvelope(f"an event name is at most {MAX_EVENT_NAME_BYTES} bytes")
    if name in RESERVED_EVENTS:
        raise MalformedEnvelope(f"{name!r} is reserved")
    return name


@dataclass(frozen=True, slots=True)
class SocketEvent:
    """One client event as a worker receives it."""

    event: str
    args: tuple[Any, ...]
    """What the client emitted after the name (its ack callback excluded)."""
    socket_id: str
    gateway_id: str
    handshake: Handshake = field(default_factory=Handshake)
    ack: bool = False
    """Whether the client waits for an answer (passed an ack callback)."""


@dataclass(frozen=True, slots=True)
class EventAnswer:
    """The worker's answer: `args` for the client's ack, or a refusal reason."""

    args: tuple[Any, ...] = ()
    error: str = ""
    message: str = ""


def encode_socket_event(ev: SocketEvent) -> bytes:
    try:
        return encode_request(
            KIND_EVENT,
            event=ev.event,
            args=list(ev.args),
            socket=ev.socket_id,
            gw=ev.gateway_id,
            handshake=ev.handshake.to_wire(),
            ack=ev.ack,
        )
    except TypeError as exc:
        raise NotSerializable(f"event arguments are not JSON: {exc}") from exc


def decode_socket_event(data: bytes) -> SocketEvent:
    req = decode_request(data)
    if req["k"] != KIND_EVENT:
        raise MalformedEnvelope(f"expected an {KIND_EVENT!r} request, got {req['k']!r}")
    args, socket_id = req.get("args", []), req.get("socket")
    if not isinstance(args, list):
        raise MalformedEnvelope("args must be a list")
    if not isinstance(socket_id, str) or not socket_id:
        raise MalformedEnvelope("socket must be a non-empty string")
    gateway_id = req.get("gw", "")
    return SocketEvent(
        event=check_event_name(req.get("event")),
        args=tuple(args),
        socket_id=socket_id,
        gateway_id=gateway_id if isinstance(gateway_id, str) else "",
        handshake=Handshake.from_wire(req.get("handshake", {})),
        ack=req.get("ack") is True,
    )


def encode_event_answer(answer: EventAnswer) -> bytes:
    try:
        if answer.error:
            return encode_reply(False, error=answer.error, message=answer.message)
        return encode_reply(True, args=list(answer.args))
    except TypeError as exc:
        raise NotSerializable(f"ack arguments are not JSON: {exc}") from exc


def decode_event_answer(data: bytes) -> EventAnswer:
    rep = decode_reply(data)
    if not rep["ok"]:
        error, message = rep.get("error", "failed"), rep.get("message", "")
        return EventAnswer(
            error=error if isinstance(error, str) and error else "failed",
            message=message if isinstance(message, str) else str(message),
        )
    args = rep.get("args", [])
    if not isinstance(args, list):
        raise MalformedEnvelope("args must be a list")
    return EventAnswer(args=tuple(args))
