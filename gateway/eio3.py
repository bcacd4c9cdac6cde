"""Engine.IO v3 / Socket.IO v2 clients on python-socketio's AsyncServer (opt-in).

Why: the official Sails client (sails.io.js 1.2.1) bundles socket.io-client 2.0.3,
which speaks Engine.IO protocol 3 (``EIO=3``) and Socket.IO protocol 4 ("socket.io
v2"). python-engineio 4 only accepts ``EIO=4`` and answers 400. Sails' own server
accepts both (socket.io 4 with ``allowEIO3``); so must we.

``enable_eio3(sio)`` teaches one server instance the v3 differences, and only those:

* handshake: ``EIO=3`` passes the version check; the open packet is unchanged.
* heartbeat: the *client* pings (``2``), the server answers ``3`` and never pings;
  a socket that sends nothing for pingInterval + pingTimeout is closed.
* framing: polling payloads are ``<length>:<packet>`` (length in UTF-16 units), or
  the XHR2 binary form; binary packets carry their type byte (``\\x04``) on the
  websocket and ``b4`` in base64; JSONP ``d=`` posts are unescaped as v3 does.
* Socket.IO: the server connects the default namespace by itself (v2 clients never
  send ``40``), CONNECT carries no ``{"sid"}`` payload, CONNECT_ERROR carries the
  bare reason, a namespace query is the auth payload, and the socket id is the
  Engine.IO sid (``/nsp#sid`` elsewhere): Sails compares ``socket.id`` across ends.

Outbound packets are translated when they leave the socket's queue (poll/websocket
writer), so a fanout that puts pre-encoded EIO4 packets straight into ``queue`` keeps
working for v3 clients. This is the only module that bends python-engineio internals
for v3; ``tests/integration/test_eio3.py`` pins each behaviour it relies on.
"""

from __future__ import annotations

import base64
import binascii
import contextvars
import importlib.metadata
import inspect
import json
import logging
import re
import time
import urllib.parse
from collections.abc import Callable, Iterable
from typing import Any, Final, Protocol

import engineio
from engineio import async_socket as eio_async_socket
from engineio import exceptions as eio_exceptions
from engineio import packet as eio_packet

from gateway import refusals

log = logging.getLogger(__name__)

__all__ = ["SocketIOServerLike", "enable_eio3", "is_eio3_socket"]

SUPPORTED_ENGINEIO_MAJOR: Final = 4
"""python-engineio major version whose internals this module was written against."""

MAX_PAYLOAD_PACKETS: Final = 1000
"""Most packets accepted in one v3 polling POST (the body size is capped anyway)."""

_ORIGINAL_QUERY_KEY: Final = "sailcast.eio3.query_string"
_EIO3_PARAM: Final = re.compile(r"(^|&)EIO=3(?=&|$)")
_ASTRAL: Final = re.compile("[\U00010000-\U0010ffff]")
_PACKET_TYPE_CHARS: Final = frozenset("0123456")
_MESSAGE_TYPE_BYTE: Final = b"\x04"
_JSONP_NEWLINE: Final = re.compile(r"(\\)?\\n")
_JSONP_ESCAPED_NEWLINE: Final = re.compile(r"\\\\n")
_SIO_CONNECT: Final = "0"
_SIO_CONNECT_ERROR: Final = "4"

_next_sio_sid: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "sailcast_eio3_next_sio_sid", default=None
)
"""The socket id python-socketio must give the namespace connect being handled."""


class SocketIOServerLike(Protocol):
    """What ``enable_eio3`` needs of a ``socketio.AsyncServer``: its Engine.IO server."""

    eio: Any


class Eio3ProtocolError(eio_exceptions.EngineIOError):  # type: ignore[misc]
    """A v3 client sent something that is not valid v3; the session is closed."""


def enable_eio3(sio_server: SocketIOServerLike) -> None:
    """Make ``sio_server`` accept Engine.IO v3 clients too; EIO4 is unaffected.

    Call it once, before serving (before or after ``attach``). Idempotent.
    Raises ``TypeError`` for a server that is not a plain ``engineio.AsyncServer``
    underneath, ``RuntimeError`` for an untested python-engineio major version.
    """
    eio = sio_server.eio
    if isinstance(eio, _Eio3Server):
        return
    if type(eio) is not engineio.AsyncServer:
        raise TypeError(f"enable_eio3 needs an engineio.AsyncServer, got {type(eio).__name__}")
    _check_engineio_version()
    # Narrow hook, this instance only: its class becomes a subclass with the v3
    # overrides, and its own copy of the driver table wraps request translation.
    eio.__class__ = _Eio3Server
    eio._async = {
        **eio._async,
        "translate_request": _wrap_translate_request(eio._async["translate_request"]),
    }


def is_eio3_socket(eio_socket: object) -> bool:
    """Whether an Engine.IO socket belongs to a v3 client (for metrics and logs)."""
    return isinstance(eio_socket, _Eio3Socket)


def _check_engineio_version() -> None:
    version = importlib.metadata.version("python-engineio")
    if int(version.split(".")[0]) != SUPPORTED_ENGINEIO_MAJOR:
        raise RuntimeError(
            f"gateway.eio3 was written for python-engineio {SUPPORTED_ENGINEIO_MAJOR}.x, "
            f"found {version}: re-run tests/integration/test_eio3.py and update it"
        )


# --- handshake -----------------------------------------------------------------------


def _relabel_eio3_handshake(environ: dict[str, Any]) -> None:
    """Let a v3 handshake past python-engineio's ``EIO=4``-only check.

    The real query string is kept aside and put back before any handler sees it.
    """
    query = environ.get("QUERY_STRING", "")
    if "EIO=3" not in query:
        return
    params = urllib.parse.parse_qs(query)
    if params.get("EIO") != ["3"] or "sid" in params:
        return
    environ[_ORIGINAL_QUERY_KEY] = query
    environ["QUERY_STRING"] = _EIO3_PARAM.sub(r"\g<1>EIO=4", query)


def _wrap_translate_request(translate: Callable[..., Any]) -> Callable[..., Any]:
    if inspect.iscoroutinefunction(translate):

        async def translate_async(*args: Any, **kwargs: Any) -> Any:
            environ = await translate(*args, **kwargs)
            _relabel_eio3_handshake(environ)
            return environ

        return translate_async

    def translate_sync(*args: Any, **kwargs: Any) -> Any:
        environ = translate(*args, **kwargs)
        _relabel_eio3_handshake(environ)
        return environ

    return translate_sync


class _Eio3Server(engineio.AsyncServer):  # type: ignore[misc]
    """``engineio.AsyncServer`` that turns sockets from v3 handshakes into ``_Eio3Socket``."""

    async def _trigger_event(self, event: str, *args: Any, **kwargs: Any) -> Any:
        if event != "connect":
            return await super()._trigger_event(event, *args, **kwargs)
        sid, environ = args[0], args[1]
        original_query = environ.pop(_ORIGINAL_QUERY_KEY, None)
        if original_query is None:
            return await super()._trigger_event(event, *args, **kwargs)
        environ["QUERY_STRING"] = original_query
        sock = self.sockets[sid]
        _Eio3Socket.adopt(sock, environ)
        accepted = await super()._trigger_event(event, *args, **kwargs)
        if accepted is None or accepted is True:
            await sock.connect_default_namespace()
        return accepted

    def generate_id(self) -> str:
        # python-socketio names a namespace connection with eio.generate_id(); a v3
        # namespace connect asks for the Engine.IO sid instead, as socket.io 2 did.
        wanted = _next_sio_sid.get()
        if wanted is None:
            return str(super().generate_id())
        _next_sio_sid.set(None)
        return wanted

    def _ok(
        self,
        packets: list[Any] | None = None,
        headers: list[tuple[str, str]] | None = None,
        jsonp_index: int | None = None,
    ) -> Any:
        if not isinstance(packets, _PollingBatch):
            return super()._ok(packets, headers, jsonp_index)
        body, content_type = encode_polling_response(
            packets, binary=packets.binary, jsonp_index=jsonp_index
        )
        return {
            "status": "200 OK",
            "headers": [*(headers or []), ("Content-Type", content_type)],
            "response": body,
        }


# --- the v3 socket -------------------------------------------------------------------


class _PollingBatch(list[Any]):
    """Packets for one v3 polling response; tells ``_ok`` to use v3 framing."""

    def __init__(self, packets: Iterable[Any], *, binary: bool) -> None:
        super().__init__(packets)
        self.binary = binary


class _Eio3Socket(eio_async_socket.AsyncSocket):  # type: ignore[misc]
    """An Engine.IO socket speaking protocol 3 to its client."""

    _eio3_last_seen: float
    _eio3_binary: bool

    @classmethod
    def adopt(cls, sock: Any, environ: dict[str, Any]) -> None:
        """Turn a just-created socket into a v3 one (before any packet is encoded)."""
        if type(sock) is not eio_async_socket.AsyncSocket:
            raise TypeError(f"cannot adopt {type(sock).__name__} as an EIO3 socket")
        sock.__class__ = cls
        sock._eio3_last_seen = time.monotonic()
        # b64=1: the client cannot take binary polling payloads (no XHR2).
        params = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
        sock._eio3_binary = "b64" not in params

    async def connect_default_namespace(self) -> None:
        """Do the ``40`` a v2 client never sends: it expects the server to do it."""
        await self._dispatch_sio_connect("/", _SIO_CONNECT)

    async def _dispatch_sio_connect(self, namespace: str, data: str) -> None:
        token = _next_sio_sid.set(self.sid if namespace == "/" else f"{namespace}#{self.sid}")
        try:
            await self.server._trigger_event(
                "message", self.sid, data, run_async=self.server.async_handlers
            )
        finally:
            _next_sio_sid.reset(token)

    # heartbeat: the client pings, the server answers and only watches the clock.

    def schedule_ping(self) -> None:
        return None

    async def check_ping_timeout(self) -> bool:
        if self.closed:
            raise eio_exceptions.SocketIsClosedError()
        server = self.server
        limit_s = server.ping_interval + server.ping_interval_grace_period + server.ping_timeout
        if time.monotonic() - self._eio3_last_seen > limit_s:
            # a v3 socket's id is its Engine.IO sid: the `sid` workers see
            log.info("EIO3 client sent no ping in %ss, closing", limit_s, extra={"sid": self.sid})
            await self.close(wait=False, abort=False, reason=server.reason.PING_TIMEOUT)
            return False
        return True

    async def receive(self, pkt: Any) -> None:
        self._eio3_last_seen = time.monotonic()
        if pkt.packet_type == eio_packet.PING:
            await self.send(eio_packet.Packet(eio_packet.PONG, data=pkt.data or None))
            return
        data = pkt.data
        if pkt.packet_type == eio_packet.MESSAGE and type(data) is str and data[:1] == "0":
            namespace, connect = upgrade_sio_connect(data)
            if namespace != "/":  # "/" was connected by the server at the handshake
                await self._dispatch_sio_connect(namespace, connect)
            return
        await super().receive(pkt)

    async def send(self, pkt: Any) -> None:
        data = pkt.data
        if (
            pkt.packet_type == eio_packet.MESSAGE
            and type(data) is str
            and data[:1] in (_SIO_CONNECT, _SIO_CONNECT_ERROR)
        ):
            pkt = eio_packet.Packet(eio_packet.MESSAGE, data=downgrade_sio_packet(data))
        await super().send(pkt)

    async def close(self, wait: bool = True, abort: bool = False, reason: Any = None) -> None:
        was_open = not (self.closed or self.closing)
        await super().close(wait=wait, abort=abort, reason=reason)
        if was_open and abort and not self.upgraded:
            # No CLOSE packet goes out on abort; end a pending long-poll with a NOOP now
            # (as engine.io 3 does) instead of holding it for pingInterval + pingTimeout.
            self.queue.put_nowait(eio_packet.Packet(eio_packet.NOOP))

    # framing: polling payloads here, websocket frames in _Eio3WebSocket.

    async def poll(self) -> list[Any]:
        packets: list[Any] = await super().poll()
        if self.upgraded:  # the websocket writer is the caller
            return packets
        return _PollingBatch(packets, binary=self._eio3_binary)

    async def handle_get_request(self, environ: dict[str, Any]) -> Any:
        result = await super().handle_get_request(environ)
        if type(result) is list:  # the NOOP that ends a poll during an upgrade
            return _PollingBatch(result, binary=self._eio3_binary)
        return result

    async def handle_post_request(self, environ: dict[str, Any]) -> None:
        if refusals.post_too_large(self.server, environ):
            raise eio_exceptions.ContentTooLongError()
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = await _read_body(environ["wsgi.input"], length)
        binary = environ.get("CONTENT_TYPE", "") == "application/octet-stream"
        try:
            packets = decode_binary_payload(body) if binary else decode_text_payload(body)
        except ValueError as exc:
            # Close now, without waiting for the queue to drain: python-engineio's own
            # disconnect on the error below would block this POST until the next poll.
            await self.close(wait=False, reason=self.server.reason.TRANSPORT_ERROR)
            raise Eio3ProtocolError(str(exc)) from exc
        for pkt in packets:
            await self.receive(pkt)

    async def _websocket_handler(self, ws: Any) -> Any:
        return await super()._websocket_handler(_Eio3WebSocket(ws))


async def _read_body(stream: Any, length: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < length:
        chunk = await stream.read(length - len(chunks))
        if not chunk:
            break
        chunks += chunk
    return bytes(chunks)


class _Eio3WebSocket:
    """Translates websocket frames between EIO3 (clients) and EIO4 (python-engineio).

    v3 binary frames carry the packet type byte, base64 ones are ``b4...``.
    """

    def __init__(self, ws: Any) -> None:
        self._ws = ws

    async def wait(self) -> str | bytes | None:
        frame = await self._ws.wait()
        if isinstance(frame, str):
            if frame[:2] == "b4":
                return "b" + frame[2:]
            if frame[:1] not in _PACKET_TYPE_CHARS:
                raise OSError(f"invalid EIO3 packet {frame[:16]!r}")
            return frame
        if isinstance(frame, bytes | bytearray):
            if frame[:1] != _MESSAGE_TYPE_BYTE:
                raise OSError("invalid EIO3 binary packet")
            return bytes(frame[1:])
        return None  # the peer closed

    async def send(self, message: str | bytes) -> None:
        if isinstance(message, bytes | bytearray):
            message = _MESSAGE_TYPE_BYTE + message
        await self._ws.send(message)

    async def close(self) -> None:
        await self._ws.close()


# --- Socket.IO v2 packet differences (pure) ------------------------------------------


def _split_namespace(data: str) -> tuple[str, str]:
    """``'0/chat,{..}'`` -> ``('0/chat,', '{..}')``; ``'0{..}'`` -> ``('0', '{..}')``."""
    if data[1:2] != "/":
        return data[:1], data[1:]
    comma = data.find(",")
    if comma == -1:
        return data, ""
    return data[: comma + 1], data[comma + 1 :]


def downgrade_sio_packet(data: str) -> str:
    """Rewrite python-socketio's CONNECT / CONNECT_ERROR into their v2 form.

    ``0{"sid":..}`` -> ``0``; ``0/chat,{"sid":..}`` -> ``0/chat,``;
    ``4{"message":m}`` -> ``4"m"`` (v2 ERROR carries the reason itself, or ``data``).
    Other packets are returned unchanged.
    """
    head, body = _split_namespace(data)
    if data[:1] == _SIO_CONNECT:
        return head
    if data[:1] != _SIO_CONNECT_ERROR or not body:
        return data
    try:
        payload = json.loads(body)
    except ValueError:
        return data
    if isinstance(payload, dict):
        payload = payload.get("data") or payload.get("message")
    return head + json.dumps(payload, separators=(",", ":"))


def upgrade_sio_connect(data: str) -> tuple[str, str]:
    """A v2 client's CONNECT as python-socketio reads it: ``(namespace, packet)``.

    v2 puts auth in the namespace query (``0/chat?token=1``); socket.io 4 hands it to
    the server as the auth payload, and so do we (``0/chat,{"token":"1"}``).
    """
    head, body = _split_namespace(data)
    path = head[1:].rstrip(",") or "/"
    namespace, _, query = path.partition("?")
    namespace = namespace or "/"
    if query and not body:
        body = json.dumps(dict(urllib.parse.parse_qsl(query)), separators=(",", ":"))
    if namespace == "/":
        return namespace, _SIO_CONNECT + body
    return namespace, f"{_SIO_CONNECT}{namespace},{body}"


# --- v3 polling payloads (pure) ------------------------------------------------------


def _utf16_len(text: str) -> int:
    """Length as JavaScript counts it (``String.length``), which v3 payloads use."""
    return len(text) if text.isascii() else len(text.encode("utf-16-le")) // 2


def _packet_text(pkt: Any) -> str:
    if pkt.binary:
        return "b4" + base64.b64encode(pkt.data).decode("ascii")
    return str(pkt.encode())


def encode_text_payload(packets: Iterable[Any]) -> str:
    """``<length>:<packet>...``; binary packets base64 as ``b4...``; none is ``0:``."""
    parts = []
    for pkt in packets:
        text = _packet_text(pkt)
        parts.append(f"{_utf16_len(text)}:{text}")
    return "".join(parts) or "0:"


def encode_binary_payload(packets: Iterable[Any]) -> bytes:
    """XHR2 form: ``<0 text|1 binary><length digits as bytes>\\xff<packet>...``."""
    out = bytearray()
    for pkt in packets:
        if pkt.binary:
            kind, body = 1, _MESSAGE_TYPE_BYTE + bytes(pkt.data)
        else:
            kind, body = 0, str(pkt.encode()).encode("utf-8")
        out.append(kind)
        out += bytes(int(digit) for digit in str(len(body)))
        out.append(0xFF)
        out += body
    return bytes(out)


def encode_polling_response(
    packets: list[Any], *, binary: bool, jsonp_index: int | None = None
) -> tuple[bytes, str]:
    """Body and content type of a v3 polling GET response."""
    if jsonp_index is not None:
        script = f"___eio[{jsonp_index}]({json.dumps(encode_text_payload(packets))});"
        return script.encode("utf-8"), "text/javascript; charset=UTF-8"
    if binary and any(pkt.binary for pkt in packets):
        return encode_binary_payload(packets), "application/octet-stream"
    return encode_text_payload(packets).encode("utf-8"), "text/plain; charset=UTF-8"


def _decode_packet(text: str) -> Any:
    if text[:1] == "b":
        if text[1:2] != "4":
            raise ValueError(f"base64 packet of type {text[1:2]!r}")
        try:
            return eio_packet.Packet(eio_packet.MESSAGE, data=base64.b64decode(text[2:]))
        except binascii.Error as exc:
            raise ValueError("invalid base64 packet") from exc
    if text[:1] not in _PACKET_TYPE_CHARS:
        raise ValueError(f"invalid packet {text[:16]!r}")
    return eio_packet.Packet(encoded_packet=text)


def _utf16_end(text: str, start: int, units: int) -> int:
    """Index in ``text`` ``units`` UTF-16 code units after ``start``."""
    i = start
    while units > 0 and i < len(text):
        units -= 2 if ord(text[i]) > 0xFFFF else 1
        i += 1
    if units != 0:
        raise ValueError("packet length splits a character or runs past the payload")
    return i


def _unescape_jsonp_post(body: str) -> str:
    """A JSONP post is ``d=<payload>`` with newlines sent as ``\\n`` (and ``\\\\n``)."""
    data = urllib.parse.parse_qs(body, keep_blank_values=True).get("d", [""])[0]
    data = _JSONP_NEWLINE.sub(lambda m: m.group(0) if m.group(1) else "\n", data)
    return _JSONP_ESCAPED_NEWLINE.sub(lambda m: "\\n", data)


def decode_text_payload(body: bytes | str) -> list[Any]:
    """Packets of a v3 ``<length>:<packet>...`` payload (or a JSONP ``d=`` post)."""
    text = body.decode("utf-8") if isinstance(body, bytes) else body
    if text.startswith("d="):
        text = _unescape_jsonp_post(text)
    astral = _ASTRAL.search(text) is not None
    packets: list[Any] = []
    i = 0
    while i < len(text):
        colon = text.find(":", i)
        digits = text[i:colon] if colon != -1 else ""
        if not (digits.isascii() and digits.isdigit()) or len(digits) > 10:
            raise ValueError(f"invalid payload length at offset {i}")
        start = colon + 1
        units = int(digits)
        end = _utf16_end(text, start, units) if astral else start + units
        if end > len(text):
            raise ValueError("packet length runs past the payload")
        if end > start:
            packets.append(_decode_packet(text[start:end]))
            if len(packets) > MAX_PAYLOAD_PACKETS:
                raise ValueError("too many packets in payload")
        i = end
    return packets


def decode_binary_payload(body: bytes) -> list[Any]:
    """Packets of a v3 XHR2 binary payload."""
    packets: list[Any] = []
    i = 0
    while i < len(body):
        kind = body[i]
        sep = body.find(b"\xff", i + 1)
        digits = body[i + 1 : sep] if sep != -1 else b""
        if kind not in (0, 1) or not digits or len(digits) > 10 or max(digits) > 9:
            raise ValueError(f"invalid binary payload header at offset {i}")
        start = sep + 1
        end = start + int("".join(str(d) for d in digits))
        if end > len(body):
            raise ValueError("packet length runs past the payload")
        chunk = body[start:end]
        if kind == 0:
            packets.append(_decode_packet(chunk.decode("utf-8")))
        elif chunk[:1] == _MESSAGE_TYPE_BYTE:
            packets.append(eio_packet.Packet(eio_packet.MESSAGE, data=chunk[1:]))
        else:
            raise ValueError("binary packet that is not a message")
        if len(packets) > MAX_PAYLOAD_PACKETS:
            raise ValueError("too many packets in payload")
        i = end
    return packets
