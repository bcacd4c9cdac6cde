"""Virtual requests and connection hooks on the wire (docs/protocol.md, "Workers").

A *virtual request* is what sails.io.js sends for `io.socket.get('/user/5', cb)`: a
Socket.IO event named after the HTTP method with `{method, url, headers, data}` and an
ack. The gateway forwards it as one JSON object to `<p>.vreq`, where a queue group of
workers (publisher.router) answers with status, headers and body; the gateway turns
that into the ack Sails sends, the JWR `{body, headers, statusCode}`.

Connection hooks use the same style: `<p>.hook.connect` asks the workers whether a
socket may connect (Sails `beforeConnect`) and may answer who it is and the rooms it
joins at connect, `<p>.hook.after_connect` tells them a socket has connected (its
identity and rooms in effect), `<p>.hook.disconnect` tells them a socket has gone
(Sails `afterDisconnect`). Every body is a `shared.envelope` request
(`{"v":1,"k":<kind>, ...}`) and every answer a reply (`{"ok":...}`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from shared.envelope import decode_reply, decode_request, encode_reply, encode_request
from shared.errors import MalformedEnvelope, NotSerializable

KIND_VREQ: Final = "vreq"
KIND_CONNECT: Final = "connect"
KIND_DISCONNECT: Final = "disconnect"
KIND_AFTER_CONNECT: Final = "after_connect"

METHODS: Final = ("get", "post", "put", "patch", "delete", "options", "head")
"""The Socket.IO events Sails binds as virtual requests (the event name is the method)."""


@dataclass(frozen=True, slots=True)
class Handshake:
    """What a socket presented when it connected; fixed for the socket's lifetime.

    `headers`: lower-case names (the `cookie` may be set later from a response, as Sails
    does); `query`: the handshake query string, one value per name; `address`: the
    peer's IP address; `ip`, `ips`: the client's address and the forwarded chain
    (farthest first) as the gateway's `--trust-proxy` allows (empty: no proxy
    trusted, req.ip is `address`); `auth`: the Socket.IO v4 auth payload, if any;
    `claims`: what the connection check granted (verified JWT claims, or the data a
    worker's before-connect hook answered), None when no check runs.
    """

    headers: Mapping[str, str] = field(default_factory=dict)
    query: Mapping[str, str] = field(default_factory=dict)
    address: str = ""
    auth: Any = None
    claims: Any = None
    ip: str = ""
    ips: tuple[str, ...] = ()

    @property
    def origin(self) -> str | None:
        return self.headers.get("origin")

    @property
    def cookie(self) -> str | None:
        return self.headers.get("cookie")

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "headers": dict(self.headers),
            "query": dict(self.query),
            "address": self.address,
        }
        if self.ip:
            out["ip"] = self.ip
        if self.ips:
            out["ips"] = list(self.ips)
        if self.auth is not None:
            out["auth"] = self.auth
        if self.claims is not None:
            out["claims"] = self.claims
        return out

    @classmethod
    def from_wire(cls, obj: object) -> Handshake:
        if not isinstance(obj, dict):
            raise MalformedEnvelope("handshake must be an object")
        address, ip, ips = obj.get("address", ""), obj.get("ip", ""), obj.get("ips", [])
        if not isinstance(address, str) or not isinstance(ip, str):
            raise MalformedEnvelope("handshake.address and handshake.ip must be strings")
        if not isinstance(ips, list) or not all(isinstance(a, str) for a in ips):
            raise MalformedEnvelope("handshake.ips must be a list of strings")
        return cls(
            headers=_str_map(obj.get("headers", {}), "handshake.headers"),
            query=_str_map(obj.get("query", {}), "handshake.query"),
            address=address,
            auth=obj.get("auth"),
            claims=obj.get("claims"),
            ip=ip,
            ips=tuple(ips),
        )


@dataclass(frozen=True, slots=True)
class VirtualRequest:
    """One virtual request as a worker receives it (see publisher.router.Request)."""

    method: str
    """Lower-case, the Socket.IO event name (`get`, `post`, …)."""
    url: str
    headers: Mapping[str, str]
    body: Any
    socket_id: str
    gateway_id: str
    handshake: Handshake
    request_id: str = ""
    """The gateway's id of this request (the client's `x-request-id`, or one it made),
    for logs and tracing: beside `headers`, which hold only what the client sent, as in
    Sails."""


@dataclass(frozen=True, slots=True)
class VirtualResponse:
    status: int
    headers: Mapping[str, str]
    body: Any


def encode_vrequest(req: VirtualRequest) -> bytes:
    return encode_request(
        KIND_VREQ,
        method=req.method,
        url=req.url,
        headers=dict(req.headers),
        body=req.body,
        socket=req.socket_id,
        gw=req.gateway_id,
        handshake=req.handshake.to_wire(),
        rid=req.request_id,
    )


def decode_vrequest(data: bytes) -> VirtualRequest:
    req = decode_request(data)
    if req["k"] != KIND_VREQ:
        raise MalformedEnvelope(f"expected a {KIND_VREQ!r} request, got {req['k']!r}")
    method, url, socket_id = req.get("method"), req.get("url"), req.get("socket")
    if method not in METHODS:
        raise MalformedEnvelope(f"unknown method {method!r}")
    if not isinstance(url, str) or not isinstance(socket_id, str) or not socket_id:
        raise MalformedEnvelope("url and socket must be strings")
    gateway_id, request_id = req.get("gw", ""), req.get("rid", "")
    return VirtualRequest(
        method=method,
        url=url,
        headers=_str_map(req.get("headers", {}), "headers"),
        body=req.get("body"),
        socket_id=socket_id,
        gateway_id=gateway_id if isinstance(gateway_id, str) else "",
        handshake=Handshake.from_wire(req.get("handshake", {})),
        request_id=request_id if isinstance(request_id, str) else "",
    )


def encode_vresponse(resp: VirtualResponse) -> bytes:
    """The worker's answer; NotSerializable when the body is not JSON."""
    try:
        return encode_reply(
            True, statusCode=resp.status, headers=dict(resp.headers), body=resp.body
        )
    except TypeError as exc:
        raise NotSerializable(f"response body is not JSON-serializable: {exc}") from exc


def decode_vresponse(data: bytes) -> VirtualResponse:
    rep = decode_reply(data)
    if not rep["ok"]:
        raise MalformedEnvelope(f"worker refused the request: {rep.get('message', rep)}")
    status = rep.get("statusCode")
    if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 999:
        raise MalformedEnvelope(f"statusCode must be an integer 100-999, got {status!r}")
    headers = rep.get("headers", {})
    if not isinstance(headers, dict):
        raise MalformedEnvelope("headers must be an object")
    return VirtualResponse(status=status, headers=headers, body=rep.get("body"))


# -- connection hooks ---------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ConnectAnswer:
    """A worker's before-connect answer. `user`, `info` and `rooms` (all optional; an
    answer without them is an anonymous socket, as before) are passed on as answered:
    the gateway validates them (gateway/connect_identity.py) and refuses the socket,
    saying why, when they cannot be used."""

    allow: bool
    claims: Any = None
    message: str = ""
    user: Any = None
    """The socket's user id (a string or an integer), None: anonymous."""
    info: Any = None
    """The socket's presence info (a JSON object), None: none."""
    rooms: Any = None
    """Rooms to join before the client sees its connect (a list of names), None: none."""


def encode_connect_question(socket_id: str, gateway_id: str, handshake: Handshake) -> bytes:
    return encode_request(
        KIND_CONNECT, socket=socket_id, gw=gateway_id, handshake=handshake.to_wire()
    )


def decode_connect_question(data: bytes) -> tuple[str, str, Handshake]:
    req = decode_request(data)
    if req["k"] != KIND_CONNECT or not isinstance(req.get("socket"), str):
        raise MalformedEnvelope("not a connect question")
    return req["socket"], str(req.get("gw", "")), Handshake.from_wire(req.get("handshake", {}))


def encode_connect_answer(answer: ConnectAnswer) -> bytes:
    try:
        if answer.allow:
            who = {
                k: v
                for k, v in (("user", answer.user), ("info", answer.info), ("rooms", answer.rooms))
                if v is not None
            }
            return encode_reply(True, claims=answer.claims, **who)
        return encode_reply(False, error="rejected", message=answer.message)
    except TypeError as exc:
        raise NotSerializable(f"before_connect data is not JSON-serializable: {exc}") from exc


def decode_connect_answer(data: bytes) -> ConnectAnswer:
    rep = decode_reply(data)
    message = rep.get("message", "")
    return ConnectAnswer(
        allow=bool(rep["ok"]),
        claims=rep.get("claims"),
        message=message if isinstance(message, str) else str(message),
        user=rep.get("user"),
        info=rep.get("info"),
        rooms=rep.get("rooms"),
    )


@dataclass(frozen=True, slots=True)
class ConnectNotice:
    """`<p>.hook.after_connect`: a socket is connected and registered, its user room and
    rooms at connect joined. Not sent for a recovered socket (it never left)."""

    socket_id: str
    gateway_id: str
    user_id: str | None
    info: Mapping[str, Any] | None
    rooms: tuple[str, ...]
    """The rooms joined at connect (the user room first, when there is a user)."""
    handshake: Handshake


def encode_after_connect(notice: ConnectNotice) -> bytes:
    return encode_request(
        KIND_AFTER_CONNECT,
        socket=notice.socket_id,
        gw=notice.gateway_id,
        user=notice.user_id,
        info=dict(notice.info) if notice.info is not None else None,
        rooms=list(notice.rooms),
        handshake=notice.handshake.to_wire(),
    )


def decode_after_connect(data: bytes) -> ConnectNotice:
    req = decode_request(data)
    socket_id, user, info = req.get("socket"), req.get("user"), req.get("info")
    rooms = req.get("rooms", [])
    if req["k"] != KIND_AFTER_CONNECT or not isinstance(socket_id, str):
        raise MalformedEnvelope("not an after-connect notice")
    if user is not None and not isinstance(user, str):
        raise MalformedEnvelope("user must be a string or null")
    if info is not None and not isinstance(info, dict):
        raise MalformedEnvelope("info must be an object or null")
    if not isinstance(rooms, list) or not all(isinstance(r, str) for r in rooms):
        raise MalformedEnvelope("rooms must be a list of strings")
    return ConnectNotice(
        socket_id=socket_id,
        gateway_id=str(req.get("gw", "")),
        user_id=user,
        info=info,
        rooms=tuple(rooms),
        handshake=Handshake.from_wire(req.get("handshake", {})),
    )


@dataclass(frozen=True, slots=True)
class DisconnectNotice:
    socket_id: str
    gateway_id: str
    reason: str
    rooms: tuple[str, ...]
    """The rooms the socket was in when it went (its own-id room excluded)."""
    handshake: Handshake


def encode_disconnect(notice: DisconnectNotice) -> bytes:
    return encode_request(
        KIND_DISCONNECT,
        socket=notice.socket_id,
        gw=notice.gateway_id,
        reason=notice.reason,
        rooms=list(notice.rooms),
        handshake=notice.handshake.to_wire(),
    )


def decode_disconnect(data: bytes) -> DisconnectNotice:
    req = decode_request(data)
    socket_id, rooms = req.get("socket"), req.get("rooms", [])
    if req["k"] != KIND_DISCONNECT or not isinstance(socket_id, str):
        raise MalformedEnvelope("not a disconnect notice")
    if not isinstance(rooms, list) or not all(isinstance(r, str) for r in rooms):
        raise MalformedEnvelope("rooms must be a list of strings")
    return DisconnectNotice(
        socket_id=socket_id,
        gateway_id=str(req.get("gw", "")),
        reason=str(req.get("reason", "")),
        rooms=tuple(rooms),
        handshake=Handshake.from_wire(req.get("handshake", {})),
    )


def _str_map(value: object, what: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise MalformedEnvelope(f"{what} must be an object")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise MalformedEnvelope(f"{what} must map strings to strings")
    return value
