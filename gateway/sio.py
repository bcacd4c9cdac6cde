"""The typed facade over python-socketio: the only module that builds its server.

python-socketio ships no type hints and its room manager and `emit` are not used on
our data path (see fanout.py); we use it for the Socket.IO handshake, the namespace
and client events, and to disconnect sockets.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import socketio
from aiohttp import web

from gateway import outbound
from gateway.eio3 import enable_eio3
from gateway.settings import GatewaySettings

log = logging.getLogger(__name__)

OnConnect = Callable[[str, Any, dict[str, Any]], Awaitable[bool]]
OnDisconnect = Callable[[str, str], Awaitable[None]]


class SocketServer:
    def __init__(self, settings: GatewaySettings) -> None:
        origins: Any = None  # python-socketio: same host only
        if "*" in settings.allowed_origins:
            origins = "*"
        elif settings.allowed_origins:
            origins = list(settings.allowed_origins)
        self.sio = socketio.AsyncServer(
            async_mode="aiohttp",
            cors_allowed_origins=origins,
            ping_interval=settings.ping_interval_s,
            ping_timeout=settings.ping_timeout_s,
            max_http_buffer_size=settings.max_payload_bytes,
            transports=["polling", "websocket"],
            logger=False,
            engineio_logger=False,
        )
        self._on_slow: Callable[[str, str], None] = lambda sid, reason: None
        outbound.install(
            self.sio.eio,
            max_messages=settings.max_queued_messages,
            max_bytes=settings.max_buffered_bytes,
            on_slow=self._slow,
        )
        enable_eio3(self.sio)  # sails.io.js 1.x bundles socket.io-client 2 (Engine.IO v3)

    def on_slow_client(self, handler: Callable[[str, str], None]) -> None:
        self._on_slow = handler

    def on_refusal(self, handler: Callable[[str], None]) -> None:
        """Told the reason whenever the transport refuses an inbound packet."""
        self.sio.eio._sailcast_on_refusal = handler

    def _slow(self, eio_socket: Any, reason: str) -> None:
        sid = self.sio.manager.sid_from_eio_sid(eio_socket.sid, "/") if eio_socket else None
        if sid:
            self._on_slow(sid, reason)

    def attach(self, app: web.Application) -> None:
        self.sio.attach(app, socketio_path="socket.io")

    def on_lifecycle(self, on_connect: OnConnect, on_disconnect: OnDisconnect) -> None:
        async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> bool:
            eio_sid = self.sio.manager.eio_sid_from_sid(sid, "/")
            eio_socket = self.sio.eio.sockets.get(eio_sid)
            if eio_socket is None:
                return False
            try:
                return await on_connect(sid, eio_socket, environ)
            except ConnectionRefusedError as exc:  # the client sees this message
                raise socketio.exceptions.ConnectionRefusedError(str(exc)) from None

        async def disconnect(sid: str, reason: Any = None) -> None:
            await on_disconnect(sid, str(reason or "unknown"))

        self.sio.on("connect", connect)
        self.sio.on("disconnect", disconnect)

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

    def eio_socket_count(self) -> int:
        return len(self.sio.eio.sockets)
