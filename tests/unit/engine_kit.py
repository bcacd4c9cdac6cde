"""Connections of gateway.engine with no sockets: a recording event sink and a fake
transport, for unit tests of the outbound path (no I/O)."""

from __future__ import annotations

from typing import Any

from gateway.engine import ClientEvent, CloseReason, Connection, HandshakeRequest, Transport
from gateway.engine.connection import EngineConnection, Shared
from gateway.engine.options import EngineOptions
from gateway.engine.server import NOBODY
from gateway.engine.websocket import WebSocket

REQUEST = HandshakeRequest(path="/socket.io/", query="EIO=4", headers={}, remote="127.0.0.1")


class Events:
    """EngineEvents that record what they are told."""

    def __init__(self) -> None:
        self.gone: list[tuple[str, CloseReason]] = []

    async def connected(self, conn: Connection, request: HandshakeRequest, auth: Any) -> None:
        return None

    async def disconnected(self, sid: str, reason: CloseReason) -> None:
        self.gone.append((sid, reason))

    async def event(self, event: ClientEvent) -> Any:
        return None


class FakeTransport:
    """What a connection and its websocket use of asyncio.Transport: a write buffer that
    never drains, closing (`close` waits for nothing here) and paused reading."""

    def __init__(self, written: list[bytes], *, buffered: int = 0) -> None:
        self.written = written
        self.buffered = buffered
        self.aborted = False
        self.closed = False
        self.paused = False

    def write(self, data: bytes) -> None:
        self.written.append(data)
        self.buffered += len(data)

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def abort(self) -> None:
        self.aborted = True

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def set_protocol(self, protocol: object) -> None:
        return None


def fake_websocket(transport: FakeTransport) -> WebSocket:
    """A real `WebSocket` protocol on a fake transport (nothing is read from it)."""
    return WebSocket(transport, NOBODY, 1 << 20)  # type: ignore[arg-type]


def shared(slow: list[tuple[str, str]] | None = None, **options: Any) -> Shared:
    sink = slow if slow is not None else []
    return Shared(
        EngineOptions(**options),
        Events(),
        on_refusal=lambda reason: None,
        on_slow=lambda sid, reason: sink.append((sid, reason)),
    )


def polling_connection(state: Shared | None = None) -> EngineConnection:
    conn = EngineConnection(state or shared(), REQUEST, Transport.POLLING, b64=False)
    conn.sid = "s1"
    conn.socket_connected = True
    return conn


def websocket_connection(
    written: list[bytes], state: Shared | None = None, *, buffered: int = 0
) -> EngineConnection:
    conn = EngineConnection(state or shared(), REQUEST, Transport.WEBSOCKET, b64=False)
    conn.sid = "s1"
    conn.socket_connected = True
    conn.attach_websocket(fake_websocket(FakeTransport(written, buffered=buffered)))
    return conn
