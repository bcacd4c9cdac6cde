"""Engine.IO v4 connections of gateway.engine run without tasks of their own.

The engine runs here in-process on a real aiohttp server (tests/engine_server.py), so
that its tasks can be counted; clients are raw websockets and raw polling requests
(every packet visible) and python-socketio's client (polling, then the upgrade).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import orjson
import pytest
import pytest_asyncio
import socketio

from gateway.engine import CloseReason, Transport
from gateway.engine.connection import EngineConnection
from tests.engine_server import EngineServer, StartEngine, start_engine

pytestmark = pytest.mark.integration

__all__ = ["start_engine"]  # the fixture

WAIT_S = 5.0

Server = EngineServer
StartServer = StartEngine


def ws_url(srv: Server, query: str = "EIO=4&transport=websocket") -> str:
    return f"{srv.ws_base}/socket.io/?{query}"


@pytest_asyncio.fixture
async def start_server(start_engine: StartEngine) -> AsyncIterator[StartEngine]:
    yield start_engine


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
        ws = await http.ws_connect(ws_url(srv))
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


def engine_socket(srv: Server, sid: str) -> EngineConnection:
    conn = srv.conns[sid]
    assert isinstance(conn, EngineConnection)
    return conn


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
    conns = [engine_socket(srv, c.sid) for c in clients]
    assert all(c.transport is Transport.WEBSOCKET for c in conns)
    assert not any(hasattr(c, "__dict__") for c in conns)  # slotted: no per-connection dict
    for c in [warm, *clients]:
        await c.close()


async def test_server_pings_on_its_timer_and_a_silent_client_is_closed(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    srv = await start_server(ping_interval_s=0.3, ping_timeout_s=0.4)
    alive = await RawClient.connect(http, srv)
    silent = await RawClient.connect(http, srv, pong=False)
    await wait_until(lambda: silent.closed_at is not None, 0.3 + 0.4 + 2.0)
    assert len(silent.pings) == 1  # the first ping, never answered: no second one
    assert srv.gone[silent.sid] is CloseReason.PING
    await wait_until(lambda: len(alive.pings) >= 4)
    gaps = [b - a for a, b in zip(alive.pings, alive.pings[1:], strict=False)]
    assert all(0.2 < g < 1.0 for g in gaps), gaps  # one per interval, no pile-up
    assert alive.closed_at is None
    assert alive.sid not in srv.gone
    await alive.close()
    await wait_until(lambda: alive.sid in srv.gone)
    assert srv.gone[alive.sid] is CloseReason.TRANSPORT_CLOSE  # closed without a goodbye


async def test_a_polling_socket_is_pinged_by_the_schedule_and_stays(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    srv = await start_server(ping_interval_s=0.3, ping_timeout_s=0.4)
    async with http.get(srv.url("EIO=4&transport=polling")) as resp:
        eio_sid = orjson.loads((await resp.text())[1:])["sid"]
    query = f"EIO=4&transport=polling&sid={eio_sid}"
    async with http.post(srv.url(query), data=b"40") as resp:
        assert resp.status == 200
    pings: list[float] = []
    got: list[str] = []
    deadline = time.monotonic() + 1.5  # five ping cycles, each answered over polling
    while time.monotonic() < deadline:
        async with http.get(srv.url(query)) as resp:
            packets = (await resp.text()).split("\x1e")
        for pkt in packets:
            if pkt == "2":
                pings.append(time.monotonic())
                async with http.post(srv.url(query), data=b"3") as resp:
                    assert resp.status == 200
            else:
                got.append(pkt)
    assert len(pings) >= 3, pings
    [sid] = srv.conns
    assert got[0] == f'40{{"sid":"{sid}"}}'
    assert sid not in srv.gone
    srv.conns[sid].emit("n", 1)
    async with http.get(srv.url(query)) as resp:
        assert await resp.text() == '42["n",1]'
    assert engine_socket(srv, sid).transport is Transport.POLLING


async def test_a_python_socketio_polling_client_stays_through_pings(
    start_server: StartServer,
) -> None:
    srv = await start_server(ping_interval_s=0.3, ping_timeout_s=0.4)
    client = socketio.AsyncClient(reconnection=False)
    got: list[int] = []
    client.on("n", lambda i: got.append(i))
    await client.connect(srv.base, transports=["polling"], wait_timeout=WAIT_S)
    sid = client.get_sid()
    await asyncio.sleep(1.5)
    assert sid not in srv.gone
    srv.conns[sid].emit("n", 1)
    await wait_until(lambda: got == [1])
    assert client.transport() == "polling"
    await client.disconnect()
    await wait_until(lambda: sid in srv.gone)
    assert srv.gone[sid] is CloseReason.CLIENT


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
    sid = client.get_sid()
    total = 300
    for i in range(total):
        srv.conns[sid].emit("n", i)
        if i % 10 == 0:
            await asyncio.sleep(0.005)
    await wait_until(lambda: len(got) == total)
    assert got == list(range(total))
    assert client.transport() == "websocket"
    assert engine_socket(srv, sid).transport is Transport.WEBSOCKET
    await client.disconnect()


async def test_server_disconnect_closes_the_websocket(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    srv = await start_server()
    client = await RawClient.connect(http, srv)
    await srv.conns[client.sid].disconnect()
    await wait_until(lambda: client.closed_at is not None)
    assert "41" in client.frames  # the Socket.IO goodbye went out before the close
    await wait_until(lambda: not srv.engine.sessions)
    assert srv.gone[client.sid] is CloseReason.SERVER


async def test_a_socketio_disconnect_from_the_client_is_counted_as_client(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    """socket.io-client's `disconnect()` sends `41` and then closes: reason `client`,
    where python-socketio reported `transport close`."""
    srv = await start_server()
    client = await RawClient.connect(http, srv)
    await client.ws.send_str("41")
    await wait_until(lambda: client.sid in srv.gone)
    assert srv.gone[client.sid] is CloseReason.CLIENT
    await wait_until(lambda: client.closed_at is not None)  # the server closed it


async def test_a_malformed_engine_io_packet_ends_only_its_session(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    srv = await start_server()
    bad = await RawClient.connect(http, srv)
    bad_sid = bad.sid
    good = await RawClient.connect(http, srv)
    await bad.ws.send_str("x not a packet")
    await wait_until(lambda: bad.closed_at is not None)
    await wait_until(lambda: bad_sid in srv.gone)
    assert srv.gone[bad_sid] is CloseReason.TRANSPORT_ERROR
    srv.conns[good.sid].emit("still", 1)
    await wait_until(lambda: '42["still",1]' in good.frames)
    await good.close()
