"""Engine.IO v4 sockets run without tasks of their own (gateway/eio4.py).

The gateway's Socket.IO server (gateway.sio.SocketServer) runs here in-process on a real
aiohttp server, so that its tasks can be counted; clients are raw websockets (every
frame visible) and python-socketio's client (polling, then the websocket upgrade).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
import pytest
import pytest_asyncio
import socketio
from aiohttp import web
from gateway.eio4 import Eio4Socket
from gateway.sio import SocketServer

from gateway.settings import from_argv
from tests.helpers import serve_app

pytestmark = pytest.mark.integration

WAIT_S = 5.0


@dataclass
class Server:
    server: SocketServer
    base: str
    sids: list[str] = field(default_factory=list)
    gone: dict[str, str] = field(default_factory=dict)
    """sid → disconnect reason"""

    def ws_url(self, query: str = "EIO=4&transport=websocket") -> str:
        return f"{self.base.replace('http://', 'ws://')}/socket.io/?{query}"


StartServer = Callable[..., Awaitable[Server]]


@pytest_asyncio.fixture
async def start_server() -> AsyncIterator[StartServer]:
    runners: list[web.AppRunner] = []

    async def start(*argv: str) -> Server:
        settings, _ = from_argv(list(argv), env={})
        server = SocketServer(settings)
        app = web.Application()
        server.attach(app)
        runner, base = await serve_app(app)
        runners.append(runner)
        srv = Server(server, base)

        async def on_connect(sid: str, eio_socket: Any, environ: Any, auth: Any) -> bool:
            srv.sids.append(sid)
            return True

        async def on_disconnect(sid: str, reason: str) -> None:
            srv.gone[sid] = reason

        server.on_lifecycle(on_connect, on_disconnect)
        return srv

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


class RawClient:
    """An Engine.IO v4 websocket client that answers pings only when told to."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, *, pong: bool) -> None:
        self.ws = ws
        self.pong = pong
        self.frames: list[str] = []
        self.pings: list[float] = []
        self.closed_at: float | None = None
        self.sid = ""
        self._reader = asyncio.ensure_future(self._read())

    @classmethod
    async def connect(
        cls, http: aiohttp.ClientSession, srv: Server, *, pong: bool = True
    ) -> RawClient:
        ws = await http.ws_connect(srv.ws_url())
        first = await ws.receive(timeout=WAIT_S)
        assert str(first.data).startswith("0{"), first
        await ws.send_str("40")
        connected = await ws.receive(timeout=WAIT_S)
        assert str(connected.data).startswith("40{"), connected
        self = cls(ws, pong=pong)
        self.sid = orjson.loads(str(connected.data)[2:])["sid"]
        return self

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                continue
            if msg.data == "2":
                self.pings.append(time.monotonic())
                if self.pong:
                    await self.ws.send_str("3")
            else:
                self.frames.append(str(msg.data))
        self.closed_at = time.monotonic()

    async def close(self) -> None:
        await self.ws.close()
        await self._reader


async def wait_until(check: Callable[[], bool], timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


def coro_name(task: asyncio.Task[Any]) -> str:
    return str(getattr(task.get_coro(), "__qualname__", "?"))


def engine_socket(srv: Server, sid: str) -> Any:
    sio = srv.server.sio
    return sio.eio.sockets[sio.manager.eio_sid_from_sid(sid, "/")]


async def test_websocket_sessions_add_no_task_of_their_own(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    """python-engineio ran four tasks per websocket besides aiohttp's two (connection,
    request): with them, an idle connection cost 33 KB instead of 25 (bench S3)."""
    srv = await start_server()
    warm = await RawClient.connect(http, srv)
    await asyncio.sleep(0.1)
    before = asyncio.all_tasks()
    n = 20
    clients = [await RawClient.connect(http, srv) for _ in range(n)]
    await asyncio.sleep(0.2)
    added = asyncio.all_tasks() - before
    server_side = [t for t in added if "RawClient" not in coro_name(t)]
    names = sorted({coro_name(t) for t in server_side})
    assert len(server_side) <= 2 * n, names
    assert all(type(engine_socket(srv, c.sid)) is Eio4Socket for c in clients)
    for c in [warm, *clients]:
        await c.close()


async def test_server_pings_on_its_timer_and_a_silent_client_is_closed(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    srv = await start_server("--ping-interval-s", "0.3", "--ping-timeout-s", "0.4")
    alive = await RawClient.connect(http, srv)
    silent = await RawClient.connect(http, srv, pong=False)
    await wait_until(lambda: silent.closed_at is not None, 0.3 + 0.4 + 2.0)
    assert len(silent.pings) == 1  # the first ping, never answered: no second one
    assert srv.gone[silent.sid] in ("ping timeout", "transport close")
    await wait_until(lambda: len(alive.pings) >= 4)
    gaps = [b - a for a, b in zip(alive.pings, alive.pings[1:], strict=False)]
    assert all(0.2 < g < 1.0 for g in gaps), gaps  # one per interval, no pile-up
    assert alive.closed_at is None
    assert alive.sid not in srv.gone
    await alive.close()
    await wait_until(lambda: alive.sid in srv.gone)
    assert srv.gone[alive.sid] in ("client disconnect", "transport close")


async def test_a_polling_socket_is_pinged_by_the_schedule_and_stays(
    start_server: StartServer,
) -> None:
    srv = await start_server("--ping-interval-s", "0.3", "--ping-timeout-s", "0.4")
    client = socketio.AsyncClient(reconnection=False)
    got: list[int] = []
    client.on("n", lambda i: got.append(i))
    await client.connect(srv.base, transports=["polling"], wait_timeout=WAIT_S)
    sid = srv.sids[-1]
    sock = engine_socket(srv, sid)
    pings: list[float] = []
    ping_due = sock.ping_due

    def counting_ping_due() -> None:
        pings.append(time.monotonic())
        ping_due()

    sock.ping_due = counting_ping_due
    await asyncio.sleep(1.5)  # five ping cycles, each answered over polling
    assert len(pings) >= 3, pings
    assert sid not in srv.gone
    await srv.server.emit_to(sid, "n", 1)
    await wait_until(lambda: got == [1])
    assert client.transport() == "polling"
    await client.disconnect()


async def test_emits_keep_their_order_through_the_polling_upgrade(
    start_server: StartServer,
) -> None:
    """Packets sent while the client upgrades wait in the queue and go out first on the
    websocket, before any packet written directly."""
    srv = await start_server()
    got: list[int] = []
    client = socketio.AsyncClient(reconnection=False)
    client.on("n", lambda i: got.append(i))
    await client.connect(srv.base, transports=["polling", "websocket"], wait_timeout=WAIT_S)
    sid = srv.sids[-1]
    total = 300
    for i in range(total):
        await srv.server.emit_to(sid, "n", i)
        if i % 10 == 0:
            await asyncio.sleep(0.005)
    await wait_until(lambda: len(got) == total)
    assert got == list(range(total))
    assert client.transport() == "websocket"
    assert type(engine_socket(srv, sid)) is Eio4Socket
    await client.disconnect()


async def test_server_disconnect_closes_the_websocket(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    srv = await start_server()
    client = await RawClient.connect(http, srv)
    await srv.server.disconnect(client.sid)
    await wait_until(lambda: client.closed_at is not None)
    assert "41" in client.frames  # the Socket.IO goodbye went out before the close
    await wait_until(lambda: not srv.server.sio.eio.sockets)


async def test_a_malformed_engine_io_packet_ends_only_its_session(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    srv = await start_server()
    bad = await RawClient.connect(http, srv)
    good = await RawClient.connect(http, srv)
    await bad.ws.send_str("x not a packet")
    await wait_until(lambda: bad.closed_at is not None)
    await srv.server.emit_to(good.sid, "still", 1)
    await wait_until(lambda: '42["still",1]' in good.frames)
    await good.close()


def test_python_engineio_internals_eio4_relies_on() -> None:
    """Pins what gateway/eio4.py overrides or calls; a python-engineio upgrade that
    changes one of these fails here first."""
    from engineio import async_server, async_socket, base_socket

    for name in ("receive", "close", "schedule_ping", "_websocket_handler", "check_ping_timeout"):
        assert callable(getattr(async_socket.AsyncSocket, name)), name
    init = inspect.getsource(base_socket.BaseSocket.__init__)
    for attr in ("last_ping", "connected", "upgrading", "upgraded", "closing", "closed"):
        assert f"self.{attr} =" in init, attr
    connect = inspect.getsource(async_server.AsyncServer._handle_connect)
    # sockets are created plain, announced with "connect", then get their first ping
    assert connect.index("AsyncSocket(self, sid)") < connect.index("_trigger_event('connect'")
    assert connect.index("_trigger_event('connect'") < connect.index("s.schedule_ping()")
