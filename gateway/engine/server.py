"""The `/socket.io/` endpoint on aiohttp: handshakes, polling, websockets, upgrades.

Errors are answered as engine.io answers them: 400 with `{"code":N,"message":...}`
(0 unknown transport, 1 unknown session, 2 bad handshake method, 3 bad request,
5 unsupported protocol version). A websocket's transport is taken from aiohttp at the
upgrade (websocket.py): a connection costs no task, request or reader of aiohttp's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Final

import orjson
from aiohttp import web

from gateway.engine import payloads, websocket
from gateway.engine.admission import MAX_PER_IP, MAX_SESSIONS
from gateway.engine.api import CloseReason, EngineEvents, HandshakeRequest, Transport
from gateway.engine.connection import (
    MALFORMED_ENGINEIO,
    MALFORMED_PAYLOAD,
    MALFORMED_UTF8,
    MALFORMED_WEBSOCKET,
    NOOP,
    EngineConnection,
    Shared,
)
from gateway.engine.frames import text_frame
from gateway.engine.options import EngineOptions
from gateway.engine.origins import OriginCheck, cors_headers

log = logging.getLogger(__name__)

INBOUND_TOO_LARGE: Final = "inbound_too_large"
"""The refusals_total reason of a websocket message or polling POST over the limit."""
HEADER_TOO_LARGE: Final = "header_too_large"
"""The refusals_total reason of a request whose headers are over --max-header-bytes."""
TRANSPORT_HEADERS: Final = frozenset(
    (
        "connection",
        "upgrade",
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
        "content-length",
        "content-type",
        "transfer-encoding",
    )
)
"""Headers of the HTTP exchange itself, not of the client: not kept with a session."""
PROBE: Final = "probe"
TRANSPORT_UNKNOWN: Final = (0, "Transport unknown")
SESSION_UNKNOWN: Final = (1, "Session ID unknown")
BAD_HANDSHAKE_METHOD: Final = (2, "Bad handshake method")
BAD_REQUEST: Final = (3, "Bad request")
UNSUPPORTED_PROTOCOL: Final = (5, "Unsupported protocol version")
REFUSALS: Final = {
    MAX_SESSIONS: "gateway is full; reconnect later",
    MAX_PER_IP: "too many connections from this address",
}


def _ignore(*args: object) -> None:
    return None


def error_response(
    code: tuple[int, str], message: str | None = None, headers: dict[str, str] | None = None
) -> web.Response:
    body = orjson.dumps({"code": code[0], "message": message or code[1]})
    return web.Response(
        status=400, body=body, content_type="application/json", headers=headers or {}
    )


class Engine:
    """Engine.IO v3/v4 and Socket.IO v2/v4 for one gateway; tells `events` what
    clients do."""

    def __init__(
        self,
        options: EngineOptions,
        events: EngineEvents,
        *,
        on_refusal: Callable[[str], None] = _ignore,
        on_origin_refused: Callable[[], None] = _ignore,
        on_slow: Callable[[str, str], None] = _ignore,
    ) -> None:
        self.options = options
        self._shared = Shared(options, events, on_refusal=on_refusal, on_slow=on_slow)
        self._origins = OriginCheck(options.allowed_origins, on_origin_refused)
        self._releasing = False

    def attach(self, app: web.Application) -> None:
        app.router.add_route("*", self.options.path, self.handle)

    @property
    def sessions(self) -> dict[str, EngineConnection]:
        """Open Engine.IO sessions by their Engine.IO sid (tests and drain use it)."""
        return self._shared.sessions

    def release_pollers(self) -> None:
        """Answer every pending long-poll now, so the HTTP server can shut down without
        waiting out their timeouts."""
        self._releasing = True
        for conn in list(self._shared.sessions.values()):
            conn.end_poll()

    def close(self) -> None:
        for schedule in (self._shared.pings, self._shared.pong_deadlines, self._shared.v3_checks):
            schedule.close()

    # -- routing ---------------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        transport = query.get("transport", "polling")
        if transport not in self.options.transports:  # first and bare, as engine.io's verify
            return error_response(TRANSPORT_UNKNOWN)
        if header_bytes(request) > self.options.max_header_bytes:
            self._shared.on_refusal(HEADER_TOO_LARGE)
            refused = web.Response(status=431, text="Request Header Fields Too Large")
            refused.force_close()  # the connection goes too, and what it held
            return refused
        origin = request.headers.get("Origin")
        if origin and not self._origins.accepts(origin, _headers(request), request.scheme):
            self._origins.refuse(origin, request.remote or "")
            return error_response(BAD_REQUEST, f"{origin} is not an accepted origin.")
        cors = cors_headers(
            origin, request.method, request.headers.get("Access-Control-Request-Headers")
        )
        jsonp: int | None = None
        if "j" in query:
            try:
                jsonp = int(query["j"])
            except ValueError:
                return error_response(BAD_REQUEST, "Invalid JSONP index number", cors)
        if request.method == "OPTIONS":
            return web.Response(text="OK", headers=cors)
        if request.method not in ("GET", "POST"):
            return web.Response(status=405, text="Method Not Found", headers=cors)
        sid = query.get("sid")
        websocket = transport == "websocket"
        if websocket and request.headers.get("Upgrade", "").lower() != "websocket":
            return error_response(BAD_REQUEST, "Invalid websocket upgrade", cors)
        if sid is None:
            if request.method != "GET":
                return error_response(BAD_HANDSHAKE_METHOD, headers=cors)
            eio = query.get("EIO")
            if eio not in ("3", "4"):
                return error_response(UNSUPPORTED_PROTOCOL, headers=cors)
            ip = self._client_ip(request)
            refusal = self._shared.admission.refusal(ip, len(self._shared.sessions))
            if refusal is not None:
                self._shared.on_refusal(refusal)
                status = 503 if refusal == MAX_SESSIONS else 429
                body = orjson.dumps({"code": BAD_REQUEST[0], "message": REFUSALS[refusal]})
                refused = web.Response(
                    status=status, body=body, content_type="application/json", headers=cors
                )
                refused.force_close()  # its descriptor is free at once
                return refused
            if websocket:
                return await self._websocket(request, None, int(eio), ip)
            hs = handshake_request(request, self.options.path, int(eio))
            return await self._polling_handshake(hs, "b64" in query, jsonp, cors, ip)
        conn = self._shared.sessions.get(sid)
        if conn is None:
            return error_response(SESSION_UNKNOWN, headers=cors)
        if conn.transport is Transport.WEBSOCKET:
            return error_response(BAD_REQUEST, "Unexpected HTTP request", cors)
        if websocket:
            if conn.upgrading:
                return error_response(BAD_REQUEST, headers=cors)
            return await self._websocket(request, conn, conn.protocol)
        if request.method == "GET":
            return await self._poll(conn, jsonp, cors)
        return await self._post(request, conn, cors)

    # -- handshakes ------------------------------------------------------------------
    def _open_packet(self, conn: EngineConnection, upgrades: list[str]) -> str:
        o = self.options
        body = {
            "sid": conn.eio_sid,
            "upgrades": upgrades,
            "pingInterval": int(o.ping_interval_s * 1000),  # Sails' key order
            "pingTimeout": int(o.ping_timeout_s * 1000),
            "maxPayload": o.max_payload_bytes,
        }
        return "0" + orjson.dumps(body).decode()

    def _client_ip(self, request: web.Request) -> str:
        """The IP a new session counts under, by the --trust-proxy rules, resolved once
        for its session count and its packet rate ("" when nothing is kept per IP)."""
        if not self._shared.per_ip:
            return ""
        forwarded = request.headers.getall("X-Forwarded-For", [])
        return self._shared.admission.client_ip(
            request.remote or "", ",".join(forwarded) if forwarded else None
        )

    async def _polling_handshake(
        self, hs: HandshakeRequest, b64: bool, jsonp: int | None, cors: dict[str, str], ip: str
    ) -> web.StreamResponse:
        conn = EngineConnection(self._shared, hs, Transport.POLLING, b64=b64)
        self._shared.sessions[conn.eio_sid] = conn
        conn.admitted(ip)
        # engine.io offers only an upgrade it accepts
        upgrades = ["websocket"] if Transport.WEBSOCKET in self.options.transports else []
        conn.send_packet(self._open_packet(conn, upgrades))
        conn.start_heartbeat()
        if hs.protocol == 3:  # v2 clients never send `40`: the server connects them
            await conn.connect_socket(None)
        return self._payload_response(conn, conn.take_queued() or [NOOP], jsonp, cors)

    async def _websocket(
        self, request: web.Request, conn: EngineConnection | None, protocol: int, ip: str = ""
    ) -> web.StreamResponse:
        """A websocket session (a new one, or the upgrade of `conn` from polling): the
        101 is ours, and the transport is taken from aiohttp (websocket.py); from then
        on its frames reach `WebSocketReading` (or `UpgradeProbe` first) with no task,
        request or aiohttp object kept for the connection."""
        problem = websocket.handshake_problem(request)
        if problem is not None:
            return error_response(BAD_REQUEST, problem)
        hs = handshake_request(request, self.options.path, protocol) if conn is None else None
        tr = websocket.take_over(request)
        if tr is None:  # the client is gone already
            return error_response(BAD_REQUEST, "Connection closed")
        limit = self.options.max_payload_bytes
        if hs is not None:
            conn = EngineConnection(self._shared, hs, Transport.WEBSOCKET, b64=False)
            self._shared.sessions[conn.eio_sid] = conn
            conn.admitted(ip)
            ws = websocket.WebSocket(tr, WebSocketReading(conn, self._shared), limit)
            conn.attach_websocket(ws)
            conn.send_packet(self._open_packet(conn, []))
            conn.start_heartbeat()
            ws.start()
            if protocol == 3:  # v2 clients never send `40`: the server connects them
                tr.pause_reading()  # what it sends meanwhile waits for the reply
                await conn.connect_socket(None)
                if not ws.closing:
                    tr.resume_reading()
        elif conn is not None:
            timeout_s = self.options.ping_interval_s + self.options.ping_timeout_s
            ws = websocket.WebSocket(tr, NOBODY, limit)
            ws.set_sink(UpgradeProbe(conn, ws, self._shared, timeout_s))
            ws.start()
        return websocket.Upgraded()

    # -- polling ---------------------------------------------------------------------
    def _payload_response(
        self,
        conn: EngineConnection,
        packets: list[payloads.Packet],
        jsonp: int | None,
        cors: dict[str, str],
    ) -> web.Response:
        if conn.protocol == 3:
            body, content_type = payloads.encode_v3_response(
                packets, binary=not conn.b64, jsonp_index=jsonp
            )
        else:
            body, content_type = payloads.encode_v4_response(packets, jsonp)
        return web.Response(body=body, headers={**cors, "Content-Type": content_type})

    async def _poll(
        self, conn: EngineConnection, jsonp: int | None, cors: dict[str, str]
    ) -> web.StreamResponse:
        if conn.polling:
            return error_response(BAD_REQUEST, "Overlapping poll", cors)
        if self._releasing:
            packets = conn.take_queued() or [NOOP]
        else:
            packets = await conn.poll(self.options.ping_interval_s + self.options.ping_timeout_s)
        return self._payload_response(conn, packets, jsonp, cors)

    async def _post(
        self, request: web.Request, conn: EngineConnection, cors: dict[str, str]
    ) -> web.StreamResponse:
        limit = self.options.max_payload_bytes
        body = b""
        if (request.content_length or 0) <= limit:
            body = await request.content.read(limit + 1)
            while len(body) <= limit and not request.content.at_eof():
                chunk = await request.content.read(limit + 1 - len(body))
                if not chunk:
                    break
                body += chunk
        if (request.content_length or 0) > limit or len(body) > limit:
            self._shared.on_refusal(INBOUND_TOO_LARGE)
            conn.close(CloseReason.TRANSPORT_ERROR, [])
            return error_response(BAD_REQUEST, "Payload too large", cors)
        try:
            if conn.protocol == 4:
                packets = payloads.decode_v4(body)
            elif request.content_type == payloads.BINARY_TYPE:
                packets = payloads.decode_binary_payload(body)
            else:
                packets = payloads.decode_text_payload(body)
        except (ValueError, UnicodeDecodeError) as exc:
            self._shared.malformed(MALFORMED_PAYLOAD, conn.sid, str(exc)[:200])
            conn.close(CloseReason.TRANSPORT_ERROR, [])
            return error_response(BAD_REQUEST, headers=cors)
        for pkt in packets:
            if wait := conn.throttle():
                if conn.closed:
                    break
                await asyncio.sleep(wait)  # the POST is answered late: backpressure
            if not conn.receive(pkt):
                break
        return web.Response(text="ok", headers=cors)


class WebSocketReading:
    """A live websocket's messages into its connection (a `websocket.MessageSink`):
    Engine.IO v3 framing undone, the packet rates asked before each packet."""

    __slots__ = ("_charged", "_conn", "_shared")

    def __init__(self, conn: EngineConnection, shared: Shared) -> None:
        self._conn = conn
        self._shared = shared
        self._charged = False
        """The message handed next was charged to the rates already (`throttle` spends
        a token into debt and says how long to wait): it is read without asking."""

    def message(self, data: str | bytes) -> float:
        conn = self._conn
        if conn.closed:
            return 0.0
        pkt: payloads.Packet = data
        try:
            if conn.protocol == 3:
                if isinstance(data, str):
                    if data[:1] == "b":
                        pkt = payloads.decode_v3_text(data)
                elif data[:1] != payloads.MESSAGE_TYPE_BYTE:
                    raise ValueError("invalid EIO3 binary packet")
                else:
                    pkt = data[1:]
        except ValueError as exc:
            self._shared.malformed(MALFORMED_ENGINEIO, conn.sid, str(exc)[:200])
            conn.close(CloseReason.TRANSPORT_ERROR, [])
            return 0.0
        if self._charged:
            self._charged = False
        elif wait := conn.throttle():  # not read meanwhile: TCP holds the client
            if conn.closed:
                return 0.0
            self._charged = True
            return wait
        conn.receive(pkt)
        return 0.0

    def ended(self, error: websocket.WebSocketError | None) -> None:
        conn = self._conn
        if error is None:
            conn.close(CloseReason.TRANSPORT_CLOSE, [])
            return
        if error.code == websocket.MESSAGE_TOO_BIG:
            self._shared.on_refusal(INBOUND_TOO_LARGE)
        elif error.code == websocket.INVALID_TEXT:
            self._shared.malformed(MALFORMED_UTF8, conn.sid, "invalid UTF-8")
        else:
            self._shared.malformed(MALFORMED_WEBSOCKET, conn.sid, str(error))
        conn.close(CloseReason.TRANSPORT_ERROR, [])


class UpgradeProbe:
    """polling → websocket: probe ping → probe pong, the pending poll ended with a
    NOOP, then UPGRADE (`5`); packets sent meanwhile wait in the queue and go out
    first. Anything else, or nothing within `timeout_s`, closes the websocket and the
    session stays on polling."""

    __slots__ = ("_conn", "_probed", "_shared", "_timer", "_ws")

    def __init__(
        self,
        conn: EngineConnection,
        ws: websocket.WebSocket,
        shared: Shared,
        timeout_s: float,
    ) -> None:
        self._conn = conn
        self._ws = ws
        self._shared = shared
        self._probed = False
        conn.upgrading = True
        self._timer: asyncio.TimerHandle | None = asyncio.get_running_loop().call_later(
            timeout_s, self._give_up, None
        )

    def message(self, data: str | bytes) -> float:
        conn = self._conn
        if not self._probed:
            if data != "2" + PROBE:
                self._give_up("no probe")
                return 0.0
            self._probed = True
            self._ws.transport.write(text_frame("3" + PROBE))
            conn.send_packet(NOOP)  # ends the pending poll
            return 0.0
        if data != "5":
            self._give_up("no UPGRADE")
            return 0.0
        self._stop()
        if conn.closed:
            self._ws.close()
            return 0.0
        self._ws.set_sink(WebSocketReading(conn, self._shared))
        conn.attach_websocket(self._ws)
        return 0.0

    def _stop(self) -> None:
        self._conn.upgrading = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _give_up(self, why: str | None) -> None:
        if why is not None:
            log.info("failed websocket upgrade: %s", why, extra={"sid": self._conn.sid})
        self._timer = None
        self._stop()
        self._ws.close()

    def ended(self, error: websocket.WebSocketError | None) -> None:
        self._stop()


class _Nobody:
    """The sink of a websocket for the instant before its own is set."""

    def message(self, data: str | bytes) -> float:
        return 0.0

    def ended(self, error: websocket.WebSocketError | None) -> None:
        return None


NOBODY: Final = _Nobody()


def header_bytes(request: web.Request) -> int:
    """Bytes of the request line and headers, as they came (`name: value\r\n` each)."""
    total = len(request.method) + len(request.raw_path) + 11
    for name, value in request.raw_headers:
        total += len(name) + len(value) + 4
    return total


def _headers(request: web.Request) -> dict[str, str]:
    """Lower-case names; a header sent several times is joined with commas (as the
    WSGI environ did: `X-Forwarded-For` lines, cookies). The HTTP exchange's own
    headers (TRANSPORT_HEADERS) are left out: a session keeps what its client said."""
    out: dict[str, str] = {}
    for name, value in request.headers.items():
        key = name.lower()
        if key in TRANSPORT_HEADERS:
            continue
        out[key] = f"{out[key]},{value}" if key in out else value
    return out


def handshake_request(request: web.Request, path: str, protocol: int) -> HandshakeRequest:
    """`path` is the route's own: asking aiohttp for `request.path` builds (and caches
    on the request, for the connection's life) a decoded URL path, 0.2 KB."""
    return HandshakeRequest(
        path=path,
        query=request.query_string,
        headers=_headers(request),
        remote=request.remote or "",
        scheme=request.scheme,
        protocol=protocol,
    )
