"""The typed facade over python-socketio: the only module that builds its server.

python-socketio ships no type hints and its room manager and `emit` are not used on
our data path (see fanout.py); we use it for the Socket.IO handshake, the namespace
and client events, and to disconnect sockets.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from contextvars import ContextVar
from typing import Any, Final

import socketio
from aiohttp import web

from gateway import eio4, outbound, refusals
from gateway.eio3 import enable_eio3, is_eio3_socket
from gateway.engine.api import Transport
from gateway.settings import GatewaySettings
from shared.envelope import RESERVED_EVENTS

log = logging.getLogger(__name__)

OnConnect = Callable[["EioConnection", dict[str, Any], Any], Awaitable[bool]]
"""(connection, WSGI environ, Socket.IO v4 auth payload or None)"""
OnDisconnect = Callable[[str, str], Awaitable[None]]
OnAckedEvent = Callable[[str, str, tuple[Any, ...], bool], Awaitable[Any]]
"""(sid, event, arguments, whether the client asked for an ack) → the ack's payload"""

REFUSED_CLOSE_GRACE_S: Final = 1.0
"""How long a refused client keeps its transport to read the connect error."""

_ack_requested: ContextVar[bool] = ContextVar("sailcast_ack_requested", default=False)


class OriginCheck:
    """python-engineio's `cors_allowed_origins` as a callable, so that a refused Origin
    is counted: engine.io answers it 400 ("... is not an accepted origin") before any
    socket exists, where no hook of ours would see it.

    `allowed` is an exact list (`--only-allow-origins`, as Sails, or
    `--allowed-origins`), or None for python-engineio's default: the host the request
    was sent to (`Host`, and `X-Forwarded-Proto`/`-Host` when a proxy sets them).
    engine.io asks twice per request (to check, then for the CORS headers); a refusal
    is counted once, on the first.
    """

    _REFUSED: Final = "sailcast.origin_refused"

    def __init__(self, allowed: Iterable[str] | None, on_refused: Callable[[], None]) -> None:
        self._allowed = frozenset(allowed) if allowed is not None else None
        self._on_refused = on_refused

    def __call__(self, origin: str | None, environ: dict[str, Any]) -> bool:
        if not origin:  # no Origin header: not a browser; engine.io lets it through
            return False
        allowed = self._allowed if self._allowed is not None else same_host(environ)
        if origin in allowed:
            return True
        if not environ.get(self._REFUSED):
            environ[self._REFUSED] = True
            self._on_refused()
            request = environ.get("aiohttp.request")
            log.info(
                "refused origin: not an accepted origin",
                extra={"origin": origin[:200], "remote": getattr(request, "remote", "")},
            )
        return False


def same_host(environ: dict[str, Any]) -> set[str]:
    """The origins python-engineio accepts when none are configured."""
    scheme, host = environ.get("wsgi.url_scheme", "http"), environ.get("HTTP_HOST")
    if not host:
        return set()
    out = {f"{scheme}://{host}"}
    if "HTTP_X_FORWARDED_PROTO" in environ or "HTTP_X_FORWARDED_HOST" in environ:
        proto = environ.get("HTTP_X_FORWARDED_PROTO", scheme).split(",")[0].strip()
        forwarded = environ.get("HTTP_X_FORWARDED_HOST", host).split(",")[0].strip()
        out.add(f"{proto}://{forwarded}")
    return out


class EioConnection:
    """`gateway.engine.api.Connection` over a python-engineio socket: the thinnest
    adapter, so the gateway core holds no engineio object. Replaced by the engine
    package's own connection."""

    __slots__ = ("_server", "_sid", "_sock", "send")

    def __init__(self, server: SocketServer, sid: str, eio_socket: Any) -> None:
        self._server = server
        self._sid = sid
        self._sock = eio_socket
        self.send: Callable[[Any], None] = eio_socket.queue.put_nowait
        """Queue or write a prebuilt packet (outbound.OutboundQueue, created once per
        Engine.IO socket): the queue's own method, so the fanout pays no extra call."""

    @property
    def sid(self) -> str:
        return self._sid

    @property
    def protocol(self) -> int:
        return 3 if is_eio3_socket(self._sock) else 4

    @property
    def transport(self) -> Transport:
        return Transport.WEBSOCKET if self._sock.upgraded else Transport.POLLING

    @property
    def closed(self) -> bool:
        sock = self._sock
        return bool(sock.closing or sock.closed)

    def emit(self, event: str, data: Any) -> None:
        self._server.emit_soon(self._sid, event, data)

    async def disconnect(self) -> None:
        await self._server.disconnect(self._sid)

    async def going_away(self) -> None:
        await self._server.close_transport(self._sid)

    def release(self) -> None:
        """Wake a pending long-poll: nothing more comes."""
        self._sock.queue.put_nowait(None)


class SocketServer:
    def __init__(self, settings: GatewaySettings) -> None:
        self._on_origin_refused: Callable[[], None] = lambda: None
        origins: Any = OriginCheck(None, self._origin_refused)  # default: same host only
        if settings.connect.only_allow_origins:  # Sails' exact list (gateway/auth.py)
            origins = OriginCheck(settings.connect.only_allow_origins, self._origin_refused)
        elif "*" in settings.engine.allowed_origins:
            origins = "*"
        elif settings.engine.allowed_origins:
            origins = OriginCheck(settings.engine.allowed_origins, self._origin_refused)
        self.sio = socketio.AsyncServer(
            async_mode="aiohttp",
            cors_allowed_origins=origins,
            ping_interval=settings.engine.ping_interval_s,
            ping_timeout=settings.engine.ping_timeout_s,
            max_http_buffer_size=settings.engine.max_payload_bytes,
            transports=["polling", "websocket"],
            # their loggers as objects: with False, python-engineio gives its logger a
            # StreamHandler of its own, which bypassed --log-format json (and doubled
            # each line); these propagate to the handler gateway/logs.py set up, at
            # WARNING and above (logs.configure)
            logger=logging.getLogger("socketio.server"),
            engineio_logger=logging.getLogger("engineio.server"),
        )
        self._on_slow: Callable[[str, str], None] = lambda sid, reason: None
        self._refused: set[asyncio.Task[None]] = set()
        self._emits: set[asyncio.Task[None]] = set()
        outbound.install(
            self.sio.eio,
            max_messages=settings.engine.max_queued_messages,
            max_bytes=settings.engine.max_buffered_bytes,
            on_slow=self._slow,
        )
        enable_eio3(self.sio)  # sails.io.js 1.x bundles socket.io-client 2 (Engine.IO v3)
        eio4.install(self.sio.eio)  # v4 sockets without tasks of their own
        self._drop_reserved_client_events()

    def on_slow_client(self, handler: Callable[[str, str], None]) -> None:
        self._on_slow = handler

    def on_origin_refused(self, handler: Callable[[], None]) -> None:
        """Told whenever engine.io refuses a request for its Origin (see OriginCheck)."""
        self._on_origin_refused = handler

    def _origin_refused(self) -> None:
        self._on_origin_refused()

    def on_refusal(self, handler: Callable[[str], None]) -> None:
        """Told the reason whenever the transport refuses an inbound packet."""
        refusals.set_handler(self.sio.eio, handler)

    def _slow(self, eio_socket: Any, reason: str) -> None:
        sid = self.sio.manager.sid_from_eio_sid(eio_socket.sid, "/") if eio_socket else None
        if sid:
            self._on_slow(sid, reason)

    def attach(self, app: web.Application) -> None:
        self.sio.attach(app, socketio_path="socket.io")

    def _drop_reserved_client_events(self) -> None:
        """python-socketio routes a client event to any handler of that name, so a
        client sending `42["connect"]` or `42["disconnect"]` would run the gateway's own
        lifecycle handlers. Those names (and non-string names) are dropped here."""
        original = self.sio._handle_event

        async def handle_event(eio_sid: str, namespace: str, id: Any, data: Any) -> None:
            if not data or not isinstance(data[0], str) or data[0] in RESERVED_EVENTS:
                refusals.count(self.sio.eio, "reserved_event")
                return
            await original(eio_sid, namespace, id, data)

        self.sio._handle_event = handle_event

    def on_lifecycle(self, on_connect: OnConnect, on_disconnect: OnDisconnect) -> None:
        async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> bool:
            eio_sid = self.sio.manager.eio_sid_from_sid(sid, "/")
            eio_socket = self.sio.eio.sockets.get(eio_sid)
            if eio_socket is None:
                return False
            try:
                return await on_connect(EioConnection(self, sid, eio_socket), environ, auth)
            except ConnectionRefusedError as exc:  # the client sees this message
                self._close_refused(eio_sid)
                raise socketio.exceptions.ConnectionRefusedError(str(exc)) from None

        async def disconnect(sid: str, reason: Any = None) -> None:
            await on_disconnect(sid, str(reason or "unknown"))

        self.sio.on("connect", connect)
        self.sio.on("disconnect", disconnect)

    def _close_refused(self, eio_sid: str) -> None:
        """A Socket.IO v2 client (sails.io.js 1.x) stays connected at the Engine.IO
        level after a refused connect; close it once it had time to read why."""

        async def close_later() -> None:
            await asyncio.sleep(REFUSED_CLOSE_GRACE_S)
            sock = self.sio.eio.sockets.get(eio_sid)
            if (
                sock is not None
                and not sock.closed
                and not self.sio.manager.sid_from_eio_sid(eio_sid, "/")
            ):
                await sock.close(wait=False, abort=False)  # CLOSE: what a v4 client obeys
                sock.queue.put_nowait(None)  # the writer stops and closes the transport

        task = asyncio.ensure_future(close_later())
        self._refused.add(task)
        task.add_done_callback(self._refused.discard)

    def on_acked_events(self, events: Iterable[str], handler: OnAckedEvent) -> None:
        """Bind client events (virtual requests) whose ack the handler answers; it also
        learns whether the client asked for an ack, which python-socketio does not say
        (Sails answers a bad request without one with a `sails:parseError` event)."""
        original = self.sio._handle_event

        async def handle_event(eio_sid: str, namespace: str, id: Any, data: Any) -> None:
            # The handler runs in a task python-socketio starts here: it inherits this.
            token = _ack_requested.set(id is not None)
            try:
                await original(eio_sid, namespace, id, data)
            finally:
                _ack_requested.reset(token)

        self.sio._handle_event = handle_event
        for event in events:

            async def on_event(sid: str, *args: Any, _event: str = event) -> Any:
                return await handler(sid, _event, args, _ack_requested.get())

            self.sio.on(event, on_event)

    def emit_soon(self, sid: str, event: str, data: Any) -> None:
        """`emit_to` without waiting (Connection.emit never blocks)."""
        task = asyncio.ensure_future(self.emit_to(sid, event, data))
        self._emits.add(task)
        task.add_done_callback(self._emits.discard)

    async def emit_to(self, sid: str, event: str, data: Any) -> None:
        """One event to one local socket (not the fan-out path: see fanout.py)."""
        await self.sio.emit(event, data, to=sid)

    async def disconnect(self, sid: str) -> None:
        """Leave the namespace and close the transport without waiting for the client
        to read what is queued (a slow client never would)."""
        eio_sid = self.sio.manager.eio_sid_from_sid(sid, "/")
        try:
            await self.sio.disconnect(sid)
        except Exception:
            log.debug("socket.io disconnect of %s failed", sid, exc_info=True)
        sock = self.sio.eio.sockets.get(eio_sid) if eio_sid else None
        if sock is not None and not sock.closed:
            await sock.close(wait=False, abort=True)
        if eio_sid:
            self.sio.eio.sockets.pop(eio_sid, None)

    async def close_transport(self, sid: str) -> None:
        """Drop the connection the way a restarting server does, so the client
        reconnects (elsewhere, behind a load balancer). A Socket.IO disconnect or an
        Engine.IO close packet would tell clients not to come back."""
        eio_sid = self.sio.manager.eio_sid_from_sid(sid, "/")
        sock = self.sio.eio.sockets.get(eio_sid) if eio_sid else None
        if sock is None or sock.closed:
            return
        queue = sock.queue
        if isinstance(queue, outbound.OutboundQueue) and await queue.going_away():
            return
        await sock.close(wait=False, abort=True)  # polling: the next poll finds no session

    def release_pollers(self) -> None:
        """Answer every pending long-poll now, so the HTTP server can shut down without
        waiting out their timeouts."""
        for sock in list(self.sio.eio.sockets.values()):
            sock.queue.put_nowait(None)
