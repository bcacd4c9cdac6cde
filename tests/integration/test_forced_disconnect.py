"""A worker disconnects sockets by id, by room or by user, with a reason the client
sees (issue 12): two real gateway processes on a real nats-server, real python-socketio
clients on websocket and on polling. Each client records its events and its
disconnect in arrival order, so the tests see the reason come before the goodbye.

The npm clients (socket.io-client 4, sails.io.js) are in
tests/e2e/test_forced_disconnect_clients.py. The user form relies on sockets being in
their user room from connect (a JWT `sub`, docs/presence.md); its core is also
unit-tested in tests/unit/test_forced_disconnect_core.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Final

import aiohttp
import jwt
import pytest
import socketio

from publisher import Publisher, SyncPublisher
from publisher.router import Disconnected, Router, RouterService
from shared.errors import InvalidRoomName, NoSuchSocket, ReservedRoom, UsageError
from tests.helpers import GatewayProcess

WAIT_S: Final = 10.0
SECRET: Final = "disconnect-secret-disconnect-secret-0"
JWT: Final = {"before_connect": "jwt", "jwt_secret": SECRET}
API_KEY: Final = "k-7f3a-disconnect"
GONE: Final = "__disconnect__"
SERVER_DISCONNECT: Final = socketio.AsyncClient.reason.SERVER_DISCONNECT


class Client:
    """A python-socketio client recording events and its disconnect, in order."""

    def __init__(self) -> None:
        self.sio = socketio.AsyncClient(reconnection=False)
        self.log: list[tuple[str, Any]] = []
        self.changed = asyncio.Event()
        self.sio.on("*", self._event)
        self.sio.on("disconnect", self._gone)

    async def _event(self, event: str, *args: Any) -> None:
        self.log.append((event, args[0] if len(args) == 1 else list(args)))
        self.changed.set()

    async def _gone(self, reason: str = "") -> None:
        self.log.append((GONE, reason))
        self.changed.set()

    @property
    def sid(self) -> str:
        sid = self.sio.get_sid()
        assert sid
        return str(sid)

    async def until_gone(self) -> list[tuple[str, Any]]:
        async def wait() -> None:
            while not any(e == GONE for e, _ in self.log):
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(wait(), WAIT_S)
        return self.log


@pytest.fixture
async def connect() -> AsyncIterator[Callable[..., Any]]:
    made: list[Client] = []

    async def start(gw: GatewayProcess, transport: str = "websocket", user: str = "") -> Client:
        c = Client()
        transports = ["polling"] if transport == "polling" else ["websocket"]
        auth = None
        if user:
            claims = {"sub": user, "exp": int(time.time()) + 300}
            auth = {"token": jwt.encode(claims, SECRET, algorithm="HS256")}
        await c.sio.connect(gw.url, transports=transports, auth=auth, wait_timeout=10)
        made.append(c)
        return c

    yield start
    for c in made:
        if c.sio.connected:
            await c.sio.disconnect()


def told(reason: str) -> list[tuple[str, Any]]:
    """What a client disconnected with `reason` records: the event, then the goodbye."""
    return [("sailcast:disconnect", {"reason": reason}), (GONE, SERVER_DISCONNECT)]


async def still_connected(clients: list[Client], publisher: Publisher) -> None:
    """The untouched clients still get messages, and got nothing else."""
    for c in clients:
        await publisher.sockets.broadcast(c.sid, "ping", {"n": 1})
    for c in clients:
        await asyncio.wait_for(_until(c, "ping"), WAIT_S)
        assert c.log == [("ping", {"n": 1})]
        assert c.sio.connected


async def _until(c: Client, event: str) -> None:
    while not any(e == event for e, _ in c.log):
        c.changed.clear()
        await c.changed.wait()


async def test_by_socket_ids_across_gateways_with_a_reason(
    two_gateways: list[GatewayProcess], publisher: Publisher, connect: Callable[..., Any]
) -> None:
    gwa, gwb = two_gateways
    a = await connect(gwa)
    b = await connect(gwb, "polling")
    stays = await connect(gwb)
    a_sid = a.sid
    n = await publisher.sockets.disconnect([a_sid, b.sid], reason="your account was removed")
    assert n == 2
    assert await a.until_gone() == told("your account was removed")
    assert await b.until_gone() == told("your account was removed")  # polling: last payload
    await still_connected([stays], publisher)
    with pytest.raises(NoSuchSocket):
        await publisher.sockets.disconnect(a_sid)
    assert gwa.metric('sailcast_gateway_forced_disconnects_total{by="socket"}') == 1
    assert gwb.metric('sailcast_gateway_forced_disconnects_total{by="socket"}') == 1


async def test_one_socket_positionally_without_a_reason_as_before(
    two_gateways: list[GatewayProcess], publisher: Publisher, connect: Callable[..., Any]
) -> None:
    a = await connect(two_gateways[1])
    assert await publisher.sockets.disconnect(a.sid) == 1
    assert await a.until_gone() == [(GONE, SERVER_DISCONNECT)]  # no event without a reason


async def test_by_room_across_gateways_members_only(
    two_gateways: list[GatewayProcess], publisher: Publisher, connect: Callable[..., Any]
) -> None:
    gwa, gwb = two_gateways
    members = [await connect(gwa), await connect(gwa, "polling"), await connect(gwb)]
    others = [await connect(gwa), await connect(gwb, "polling")]
    await publisher.sockets.join([m.sid for m in members], "match:7")
    await publisher.sockets.join(others[0].sid, "match:8")
    n = await publisher.sockets.disconnect(room="match:7", reason="match closed")
    assert n == 3
    for m in members:
        assert await m.until_gone() == told("match closed")
    await still_connected(others, publisher)
    assert await publisher.sockets.disconnect(room="match:7") == 0  # nobody left
    room_metric = 'sailcast_gateway_forced_disconnects_total{by="room"}'
    assert (gwa.metric(room_metric), gwb.metric(room_metric)) == (2, 1)


async def test_by_user_every_tab_on_both_gateways_and_no_other_user(
    gateway_factory: Callable[..., GatewayProcess],
    publisher: Publisher,
    connect: Callable[..., Any],
) -> None:
    gwa = gateway_factory("gwa", **JWT, api_key=API_KEY, api_port=0)
    gwb = gateway_factory("gwb", **JWT)
    tabs = [
        await connect(gwa, user="42"),
        await connect(gwb, "polling", user="42"),
        await connect(gwb, user="42"),
    ]
    others = [await connect(gwa, user="7"), await connect(gwb, user="420")]
    n = await publisher.sockets.disconnect(user_id=42, reason="signed out everywhere")
    assert n == 3  # 42 and "42" are the same user
    for tab in tabs:
        assert await tab.until_gone() == told("signed out everywhere")
    await still_connected(others, publisher)
    assert await publisher.sockets.disconnect(user_id="42") == 0  # none left
    # the HTTP API's form, on another user
    assert await api_disconnect(gwa, {"user_id": 420, "reason": "bye"}) == (200, {"result": 1})
    assert (await others[1].until_gone())[1:] == told("bye")  # after still_connected's ping
    status, body = await api_disconnect(gwa, {"user_id": True})
    assert (status, body["error"]["field"]) == (400, "user_id")
    user_metric = 'sailcast_gateway_forced_disconnects_total{by="user"}'
    assert (gwa.metric(user_metric), gwb.metric(user_metric)) == (1, 3)


async def test_caller_mistakes_raise_before_anything_is_sent(
    two_gateways: list[GatewayProcess], publisher: Publisher, connect: Callable[..., Any]
) -> None:
    a = await connect(two_gateways[0])
    await publisher.sockets.join(a.sid, "lobby")
    with pytest.raises(ReservedRoom, match="user_id="):
        await publisher.sockets.disconnect(room="sailcast:user:42")
    with pytest.raises(UsageError, match="exactly one"):
        await publisher.sockets.disconnect(a.sid, room="lobby")
    with pytest.raises(UsageError, match="exactly one"):
        await publisher.sockets.disconnect(reason="nobody named")
    with pytest.raises(UsageError, match="1 to 256"):
        await publisher.sockets.disconnect(room="lobby", reason="x" * 257)
    with pytest.raises(UsageError, match="1 to 256"):
        await publisher.sockets.disconnect(a.sid, reason="")
    with pytest.raises(UsageError, match="user id"):
        await publisher.sockets.disconnect(user_id="")
    with pytest.raises(InvalidRoomName, match="one room name"):
        await publisher.sockets.disconnect(room=["lobby", "other"])  # type: ignore[arg-type]
    await still_connected([a], publisher)


async def test_the_sync_twin_has_the_same_forms(
    two_gateways: list[GatewayProcess],
    publisher: Publisher,
    connect: Callable[..., Any],
    nats_server: Any,
    prefix: str,
) -> None:
    a, b = await connect(two_gateways[0]), await connect(two_gateways[1], "polling")
    await publisher.sockets.join([a.sid, b.sid], "room-s")
    with SyncPublisher(nats_server.url, prefix=prefix) as sync:
        n = await asyncio.to_thread(sync.sockets.disconnect, room="room-s", reason="bye")
        assert n == 2
        with pytest.raises(ReservedRoom):
            sync.sockets.disconnect(room="sailcast:user:1")
    for c in (a, b):
        assert await c.until_gone() == told("bye")


async def test_the_after_disconnect_hook_gets_server_disconnect_and_the_reason(
    two_gateways: list[GatewayProcess],
    publisher: Publisher,
    connect: Callable[..., Any],
    serve: Callable[[Router], Any],
) -> None:
    gone: asyncio.Queue[Disconnected] = asyncio.Queue()
    router = Router()
    router.after_disconnect(gone.put)
    service: RouterService = await serve(router)
    assert service is not None
    a, b = await connect(two_gateways[0]), await connect(two_gateways[1])
    a_sid, b_sid = a.sid, b.sid
    await publisher.sockets.disconnect(a_sid, reason="kicked by a moderator")
    await a.until_gone()
    first = await asyncio.wait_for(gone.get(), WAIT_S)
    assert (first.socket_id, first.reason, first.message) == (
        a_sid,
        "server disconnect",
        "kicked by a moderator",
    )
    await b.sio.disconnect()  # any other disconnect: no message
    second = await asyncio.wait_for(gone.get(), WAIT_S)
    assert (second.socket_id, second.message) == (b_sid, None)
    assert second.reason != "server disconnect"


async def api_disconnect(gw: GatewayProcess, body: dict[str, Any]) -> tuple[int, Any]:
    """`POST /api/disconnect` over real HTTP: (status, JSON body)."""
    url = f"http://127.0.0.1:{gw.api_port}/api/disconnect"
    headers = {"Authorization": f"apikey {API_KEY}"}
    async with aiohttp.ClientSession() as http, http.post(url, json=body, headers=headers) as r:
        return r.status, await r.json()


async def test_the_http_api_disconnects_by_room_with_a_reason(
    gateway_factory: Callable[..., GatewayProcess],
    publisher: Publisher,
    connect: Callable[..., Any],
) -> None:
    gwa = gateway_factory("api0", api_key=API_KEY, api_port=0)
    gwb = gateway_factory("api1")
    a, b, stays = await connect(gwa), await connect(gwb, "polling"), await connect(gwb)
    await publisher.sockets.join([a.sid, b.sid], "ops")

    async def post(body: dict[str, Any]) -> tuple[int, Any]:
        return await api_disconnect(gwa, body)

    status, body = await post({"room": "sailcast:user:1"})
    assert (status, body["error"]["code"], body["error"]["field"]) == (400, "reserved_room", "room")
    status, body = await post({"room": "ops", "user_id": "1"})
    assert (status, body["error"]["code"]) == (400, "invalid_body")
    status, body = await post({"room": "ops", "reason": "x" * 257})
    assert (status, body["error"]["field"]) == (400, "reason")
    assert await post({"room": "ops", "reason": "maintenance"}) == (200, {"result": 2})
    for c in (a, b):
        assert await c.until_gone() == told("maintenance")
    assert await post({"socket_ids": [stays.sid]}) == (200, {"result": 1})
    assert await stays.until_gone() == [(GONE, SERVER_DISCONNECT)]
