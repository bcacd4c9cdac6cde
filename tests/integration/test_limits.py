"""Each limit refuses with a clear error to whoever asked, and counts the refusal."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
import socketio

from publisher import LimitExceeded, Publisher
from publisher.router import ConnectCheck, Request, Router
from tests.helpers import GatewayProcess, quiet

pytestmark = pytest.mark.integration

SDK_QUERY = "?__sails_io_sdk_version=1.2.1"
WAIT_S = 10.0


@pytest.fixture
async def sails_socket() -> AsyncIterator[Callable[..., Awaitable[socketio.AsyncClient]]]:
    made: list[socketio.AsyncClient] = []

    async def connect(
        gw: GatewayProcess, headers: dict[str, str] | None = None
    ) -> socketio.AsyncClient:
        client = socketio.AsyncClient(reconnection=False)
        made.append(client)
        await client.connect(
            gw.url + SDK_QUERY, headers=headers or {}, transports=["websocket"], wait_timeout=5
        )
        return client

    yield connect
    for client in made:
        if client.connected:
            await client.disconnect()


def vreq(url: str, data: Any = None) -> dict[str, Any]:
    """What sails.io.js emits for io.socket.get(url, data, cb)."""
    return {"method": "get", "url": url, "headers": {}, "data": data or {}}


async def test_connection_limit_refuses_with_a_message(
    gateway_factory: Callable[..., GatewayProcess], client_factory: Any
) -> None:
    gw = gateway_factory("full", max_connections=2)
    await client_factory(gw)
    await client_factory(gw)
    refused = socketio.AsyncClient(reconnection=False)
    errors: list[Any] = []
    refused.on("connect_error", errors.append)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await refused.connect(gw.url, transports=["websocket"], wait_timeout=5)
    assert errors == [{"message": "gateway is full; reconnect later"}]
    assert gw.metric('sailcast_gateway_refusals_total{reason="max_connections"}') == 1
    assert gw.metric("sailcast_gateway_connections") == 2


async def test_rooms_per_socket_limit(
    gateway_factory: Callable[..., GatewayProcess], publisher: Publisher, client_factory: Any
) -> None:
    gw = gateway_factory("rooms", max_rooms_per_socket=3)
    a = await client_factory(gw)
    await publisher.sockets.join(a.sid, ["r1", "r2"])  # with its own-id room: 3
    with pytest.raises(LimitExceeded, match="more than 3 rooms"):
        await publisher.sockets.join(a.sid, "r3")
    await publisher.sockets.join(a.sid, "r1")  # already a member: fine
    assert await publisher.sockets.rooms(a.sid) == sorted([a.sid, "r1", "r2"])
    assert gw.metric('sailcast_gateway_refusals_total{reason="max_rooms_per_socket"}') == 1
    await publisher.sockets.broadcast(["r1", "r3"], "still", "works")
    await quiet([a], publisher)
    assert a.events == [("still", "works")]


async def test_inbound_message_over_the_limit_closes_only_that_client(
    gateway_factory: Callable[..., GatewayProcess], publisher: Publisher, client_factory: Any
) -> None:
    gw = gateway_factory("small", max_payload_bytes=4096)
    big = await client_factory(gw)
    ok = await client_factory(gw)
    await big.client.emit("anything", "x" * 10_000)
    deadline = time.monotonic() + 5
    while big.client.connected:
        assert time.monotonic() < deadline, "oversized client was not disconnected"
        await asyncio.sleep(0.05)
    await publisher.sockets.broadcast(ok.sid, "still", "here")
    await quiet([ok], publisher)
    assert ok.events == [("still", "here")]
    assert gw.metric('sailcast_gateway_refusals_total{reason="inbound_too_large"}') == 1


async def test_virtual_request_rate_per_socket(
    gateway_factory: Callable[..., GatewayProcess], nats_server: Any, prefix: str
) -> None:
    """Over the per-socket rate a request is answered 429 at once (no worker needed to
    prove it: without a worker the others are 503)."""
    gw = gateway_factory("rate", virtual_request_rate_per_s=1, virtual_request_burst=3)
    client = socketio.AsyncClient(reconnection=False)
    await client.connect(
        gw.url + "?__sails_io_sdk_version=1.2.1", transports=["websocket"], wait_timeout=5
    )
    try:
        answers = [
            await client.call("get", {"method": "get", "url": "/x", "headers": {}, "data": {}})
            for _ in range(5)
        ]
        codes = [a["statusCode"] for a in answers]
        assert codes == [503, 503, 503, 429, 429]
        assert gw.metric('sailcast_gateway_refusals_total{reason="virtual_request_rate"}') == 2
    finally:
        await client.disconnect()


async def test_connection_limit_holds_while_a_before_connect_check_decides(
    gateway_factory: Callable[..., GatewayProcess], serve: Callable[..., Any]
) -> None:
    """Five sockets connect at once and the workers' check admits them all together:
    the limit is checked again after the check, so only two get in."""
    asked: list[str] = []
    everyone_asked = asyncio.Event()
    router = Router()

    @router.before_connect
    async def check(conn: ConnectCheck) -> bool:
        asked.append(conn.socket_id)
        if len(asked) == 5:
            everyone_asked.set()
        await asyncio.wait_for(everyone_asked.wait(), WAIT_S)
        return True

    await serve(router)
    gw = gateway_factory(
        "checked", max_connections=2, before_connect="workers", before_connect_timeout_s=WAIT_S
    )
    clients = [socketio.AsyncClient(reconnection=False) for _ in range(5)]
    errors: list[Any] = []
    for c in clients:
        c.on("connect_error", errors.append)
    try:
        outcomes = await asyncio.gather(
            *(c.connect(gw.url, transports=["websocket"], wait_timeout=WAIT_S) for c in clients),
            return_exceptions=True,
        )
        assert len(asked) == 5  # all five were in the check at the same time
        assert sum(o is None for o in outcomes) == 2, outcomes
        assert errors == [{"message": "gateway is full; reconnect later"}] * 3
        assert gw.metric("sailcast_gateway_connections") == 2
        assert gw.metric('sailcast_gateway_refusals_total{reason="max_connections"}') == 3
    finally:
        for c in clients:
            if c.connected:
                await c.disconnect()


async def test_virtual_requests_in_flight_per_socket(
    gateway_factory: Callable[..., GatewayProcess],
    serve: Callable[..., Any],
    sails_socket: Callable[..., Awaitable[socketio.AsyncClient]],
) -> None:
    """Over --virtual-request-max-inflight, a request is answered 429 at once; the
    others are not disturbed and a slot frees when an answer goes out."""
    arrived: list[str] = []
    two_in = asyncio.Event()
    release = asyncio.Event()
    router = Router()

    @router.get("/hold")
    async def hold(req: Request) -> str:
        arrived.append(req.socket_id)
        if len(arrived) == 2:
            two_in.set()
        await asyncio.wait_for(release.wait(), WAIT_S)
        return "done"

    @router.get("/quick")
    async def quick(req: Request) -> str:
        return "quick"

    await serve(router)
    gw = gateway_factory("inflight", virtual_request_max_inflight=2)
    client = await sails_socket(gw)
    other = await sails_socket(gw)
    held = [asyncio.ensure_future(client.call("get", vreq("/hold"), timeout=WAIT_S)) for _ in "ab"]
    await asyncio.wait_for(two_in.wait(), WAIT_S)
    refused = await client.call("get", vreq("/quick"), timeout=WAIT_S)
    assert refused == {"body": "Too Many Requests", "headers": {}, "statusCode": 429}
    # the limit is per socket: another socket is served meanwhile
    assert (await other.call("get", vreq("/quick"), timeout=WAIT_S))["body"] == "quick"
    release.set()
    assert [a["body"] for a in await asyncio.gather(*held)] == ["done", "done"]
    assert (await client.call("get", vreq("/quick"), timeout=WAIT_S))["body"] == "quick"
    metrics = gw.metrics()
    assert metrics['sailcast_gateway_refusals_total{reason="virtual_request_inflight"}'] == 1
    assert metrics['sailcast_gateway_virtual_requests_total{status="4xx"}'] == 1


async def test_virtual_request_too_large_for_the_workers_is_413(
    gateway_factory: Callable[..., GatewayProcess],
    sails_socket: Callable[..., Awaitable[socketio.AsyncClient]],
) -> None:
    """The inbound message fits --max-payload-bytes, but with the handshake that goes to
    the workers (here a 3 kB header) the request would not: 413, counted, and the
    socket's next, smaller request goes on (503 here: no worker runs)."""
    gw = gateway_factory("vreq413", max_payload_bytes=4096)
    client = await sails_socket(gw, headers={"X-Padding": "p" * 3000})
    answer = await client.call("get", vreq("/big", {"blob": "b" * 1500}), timeout=WAIT_S)
    assert answer == {"body": "Request Entity Too Large", "headers": {}, "statusCode": 413}
    assert client.connected
    assert (await client.call("get", vreq("/small"), timeout=WAIT_S))["statusCode"] == 503
    metrics = gw.metrics()
    assert metrics['sailcast_gateway_refusals_total{reason="virtual_request_too_large"}'] == 1
    assert metrics['sailcast_gateway_virtual_requests_total{status="4xx"}'] == 1


@pytest.mark.parametrize("eio", [3, 4])
async def test_oversized_polling_post_is_refused_and_counted(
    gateway_factory: Callable[..., GatewayProcess], eio: int
) -> None:
    """A polling POST over --max-payload-bytes: python-engineio answers 400 and closes
    the session; it is counted as the websocket case is."""
    gw = gateway_factory(f"post{eio}", max_payload_bytes=4096)
    base = f"{gw.url}/socket.io/?EIO={eio}&transport=polling"
    async with aiohttp.ClientSession() as http:
        async with http.get(base) as resp:
            assert resp.status == 200
            match = re.search(r'"sid":"([^"]+)"', await resp.text())
            assert match is not None
        polling = f"{base}&sid={match.group(1)}"
        packet = "4" + "x" * 10_000  # one Engine.IO MESSAGE
        body = f"{len(packet)}:{packet}" if eio == 3 else packet
        async with http.post(polling, data=body.encode()) as resp:
            assert resp.status == 400
        async with http.get(polling) as resp:
            assert resp.status == 400  # the session is gone
    assert gw.metric('sailcast_gateway_refusals_total{reason="inbound_too_large"}') == 1
