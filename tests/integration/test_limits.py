"""Each limit refuses with a clear error to whoever asked, and counts the refusal."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
import socketio

from publisher import LimitExceeded, Publisher
from tests.helpers import GatewayProcess, quiet

pytestmark = pytest.mark.integration


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
