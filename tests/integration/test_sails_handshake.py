"""The Engine.IO handshake as a Sails 1.5 app answers it (issue 15, items 3 and 6).

Real gateway processes on a real nats-server; clients are raw aiohttp HTTP requests and
websockets (to see the bytes: key order, refusal bodies) and python-socketio clients.
The recording (reference/sails-transcripts.md, scenario `clients`): the open packet's
keys are `sid,upgrades,pingInterval,pingTimeout,maxPayload`; with Sails' default
transports (websocket only) an HTTP polling handshake, EIO=3 or EIO=4, gets
`400 {"code":0,"message":"Transport unknown"}`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import socketio

from tests.helpers import GatewayProcess, connect_client

pytestmark = pytest.mark.integration

GatewayFactory = Callable[..., GatewayProcess]
OPEN_KEYS = ["sid", "upgrades", "pingInterval", "pingTimeout", "maxPayload"]
TRANSPORT_UNKNOWN = b'{"code":0,"message":"Transport unknown"}'
SDK_QUERY = "__sails_io_sdk_version=1.2.1&__sails_io_sdk_platform=node"


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def open_packet(text: str) -> dict[str, Any]:
    """The open packet's JSON, its keys in wire order (a v3 polling body frames it)."""
    start = text.index("0{")
    assert start == 0 or text[:start].rstrip(":").isdigit(), text
    data, _end = json.JSONDecoder().raw_decode(text, start + 1)
    assert isinstance(data, dict)
    return data


async def websocket_open(http: aiohttp.ClientSession, gw: GatewayProcess, eio: int) -> str:
    url = f"ws://127.0.0.1:{gw.port}/socket.io/?EIO={eio}&transport=websocket&{SDK_QUERY}"
    async with http.ws_connect(url) as ws:
        msg = await ws.receive(timeout=5)
        return str(msg.data)


async def polling_open(http: aiohttp.ClientSession, gw: GatewayProcess, eio: int) -> str:
    url = f"{gw.url}/socket.io/?EIO={eio}&transport=polling&b64=1&{SDK_QUERY}"
    async with http.get(url) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.text()


async def test_open_packet_has_sails_key_order_and_heartbeat(
    gateway_factory: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    """Defaults as Sails': pingInterval 25000 before pingTimeout 60000 (item 6)."""
    gw = gateway_factory()
    for eio in (3, 4):
        for text, upgrades in (
            (await websocket_open(http, gw, eio), []),
            (await polling_open(http, gw, eio), ["websocket"]),
        ):
            data = open_packet(text)
            assert list(data) == OPEN_KEYS, text
            assert (data["pingInterval"], data["pingTimeout"]) == (25000, 60000)
            assert data["upgrades"] == upgrades
            assert '"pingInterval":25000,"pingTimeout":60000' in text  # the bytes, too
    # a real client reads them so
    client = await connect_client(gw.url)
    try:
        assert (client.client.eio.ping_interval, client.client.eio.ping_timeout) == (25, 60)
    finally:
        await client.disconnect()


async def test_websocket_only_refuses_polling_as_sails_does(
    gateway_factory: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    """`--transports websocket` (Sails' default): a polling request gets engine.io's
    refusal byte for byte, before any Origin check and with no CORS headers; a websocket
    client connects and is offered no upgrade (item 3)."""
    gw = gateway_factory(transports="websocket")
    for eio in (3, 4):
        for headers in ({}, {"Origin": "http://elsewhere.example"}):
            url = f"{gw.url}/socket.io/?EIO={eio}&transport=polling&{SDK_QUERY}"
            async with http.get(url, headers=headers) as resp:
                assert resp.status == 400
                assert resp.headers["Content-Type"] == "application/json"
                assert not [h for h in resp.headers if h.lower().startswith("access-control")]
                assert await resp.read() == TRANSPORT_UNKNOWN
    # no transport named is polling, as engine.io-client's default: refused too
    async with http.get(f"{gw.url}/socket.io/?EIO=4") as resp:
        assert (resp.status, await resp.read()) == (400, TRANSPORT_UNKNOWN)

    text = await websocket_open(http, gw, 4)
    assert open_packet(text)["upgrades"] == []
    # real clients: python-socketio polling first fails; websocket works
    polling = socketio.AsyncClient(reconnection=False)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await polling.connect(gw.url, transports=["polling", "websocket"], wait_timeout=5)
    await polling.disconnect()
    client = await connect_client(gw.url, "websocket")
    try:
        assert client.client.transport() == "websocket"
    finally:
        await client.disconnect()


async def test_polling_only_refuses_websocket_and_offers_no_upgrade(
    gateway_factory: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    gw = gateway_factory(transports="polling")
    assert open_packet(await polling_open(http, gw, 4))["upgrades"] == []
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await websocket_open(http, gw, 4)
    assert refused.value.status == 400
    client = await connect_client(gw.url, "polling")  # polling, then no upgrade
    try:
        assert client.client.transport() == "polling"
    finally:
        await client.disconnect()


async def test_default_accepts_both_transports(
    gateway_factory: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    """Sailcast's default keeps polling on (docs/sails-compat.md P3)."""
    gw = gateway_factory()
    for transport in ("polling", "websocket"):
        client = await connect_client(gw.url, transport)
        await client.disconnect()
    async with http.get(f"{gw.url}/socket.io/?EIO=4&transport=flash") as resp:
        assert (resp.status, await resp.read()) == (400, TRANSPORT_UNKNOWN)
