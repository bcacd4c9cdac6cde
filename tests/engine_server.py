"""An in-process gateway.engine server for tests: real aiohttp on a loopback port, an
`EngineEvents` sink that records what clients do, and a few event handlers the tests
call (echo, ack, whoami, virtual `get`). Not the gateway: no NATS, no rooms."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest_asyncio
from aiohttp import web

from gateway.engine import (
    ClientEvent,
    CloseReason,
    Connection,
    ConnectRefused,
    Engine,
    EngineOptions,
    HandshakeRequest,
    event_packet,
)
from tests.helpers import serve_app

REJECTED: str = "Connection rejected by server"


@dataclass
class EngineServer:
    base: str
    engine: Engine = field(init=False)
    connects: list[tuple[str, str, Any]] = field(default_factory=list)
    """(sid, query string, auth) per accepted CONNECT."""
    conns: dict[str, Connection] = field(default_factory=dict)
    gone: dict[str, CloseReason] = field(default_factory=dict)
    disconnects: asyncio.Queue[tuple[str, CloseReason]] = field(default_factory=asyncio.Queue)
    requests: list[tuple[str, Any]] = field(default_factory=list)
    """(sid, request) per virtual `get`."""

    @property
    def ws_base(self) -> str:
        return self.base.replace("http://", "ws://")

    def url(self, query: str) -> str:
        return f"{self.base}/socket.io/?{query}"

    # -- EngineEvents ------------------------------------------------------------------
    async def connected(self, conn: Connection, request: HandshakeRequest, auth: Any) -> None:
        if "reject=1" in request.query.split("&"):
            raise ConnectRefused(REJECTED)
        self.connects.append((conn.sid, request.query, auth))
        self.conns[conn.sid] = conn

    async def disconnected(self, sid: str, reason: CloseReason) -> None:
        self.conns.pop(sid, None)
        self.gone[sid] = reason
        self.disconnects.put_nowait((sid, reason))

    async def event(self, event: ClientEvent) -> Any:
        conn = self.conns[event.sid]
        if event.event == "echo":
            conn.emit("echoed", event.args[0] if event.args else None)
            return None
        if event.event == "ack":
            return event.args  # a tuple: each element one ack argument
        if event.event == "whoami":
            return event.sid
        if event.event == "get":
            request = event.args[0] if event.args else {}
            self.requests.append((event.sid, request))
            body = {"url": request.get("url"), "data": request.get("data"), "sid": event.sid}
            return {"body": body, "headers": {"x-sailcast": "yes"}, "statusCode": 200}
        return None

    def broadcast(self, event: str, data_json: bytes) -> None:
        """One shared packet to every connection, as the gateway's fanout does."""
        packet = event_packet(b'["' + event.encode() + b'",' + data_json + b"]")
        for conn in list(self.conns.values()):
            conn.send(packet)


StartEngine = Callable[..., Awaitable[EngineServer]]


@pytest_asyncio.fixture
async def start_engine() -> AsyncIterator[StartEngine]:
    runners: list[tuple[web.AppRunner, Engine]] = []

    async def start(**options: Any) -> EngineServer:
        srv = EngineServer(base="")
        srv.engine = Engine(EngineOptions(**options), srv)
        app = web.Application()
        srv.engine.attach(app)
        runner, srv.base = await serve_app(app)
        runners.append((runner, srv.engine))
        return srv

    yield start
    for runner, engine in runners:
        engine.release_pollers()
        await runner.cleanup()
        engine.close()
