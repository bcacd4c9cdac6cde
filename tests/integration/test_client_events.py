"""Client events: a Socket.IO v4 client's own `emit("typing", data, ack)` reaches the
workers that declared it (`@router.event`, or an ASGI app through the bridge) and the
answer is its ack; undeclared events and events over the limits are refused, counted.
Real gateway processes, a real nats-server, real Socket.IO clients."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from fastapi import FastAPI, Request

from gateway.embedded_nats import EmbeddedNats
from publisher import Publisher
from publisher.asgi import AsgiBridge
from publisher.router import Router, RouterService
from publisher.router.events import Event
from tests.helpers import GatewayProcess, RecordingClient
from tests.integration.test_virtual_requests import request, sails_client
from tests.integration.worker_process import sailcast_worker

pytestmark = pytest.mark.integration
__all__ = ["sails_client"]  # the fixture, shared with test_virtual_requests.py

GatewayFactory = Callable[..., GatewayProcess]
Serve = Callable[[Router], Any]
Connect = Callable[..., Any]
WAIT_S = 10.0


def refused(reason: str) -> str:
    return f'sailcast_gateway_refusals_total{{reason="client_event_{reason}"}}'


async def call(client: RecordingClient, event: str, *args: Any) -> Any:
    return await client.client.call(event, args[0] if len(args) == 1 else args, timeout=WAIT_S)


async def test_router_events_are_acked_and_undeclared_ones_refused(
    gateway_factory: GatewayFactory,
    client_factory: Connect,
    serve: Serve,
    publisher: Publisher,
) -> None:
    router = Router()
    heard: asyncio.Queue[Event] = asyncio.Queue()

    @router.event("typing")
    async def typing(ev: Event) -> dict[str, Any]:
        await heard.put(ev)
        await ev.join("typists")  # in effect when the ack arrives
        return {"typing": ev.data, "from": ev.socket_id}

    @router.event("sum")
    def total(ev: Event) -> int:  # a plain handler, in a worker thread
        return int(sum(ev.data))

    await serve(router)
    gw = gateway_factory()
    client: RecordingClient = await client_factory(gw)
    assert await call(client, "typing", {"on": True}) == {
        "typing": {"on": True},
        "from": client.sid,
    }
    assert await call(client, "sum", [1, 2, 3]) == 6
    # joined by the handler before the ack: a broadcast now reaches the client
    await publisher.sockets.broadcast("typists", "someone", {"n": 1})
    await client.wait_for(lambda ev: ("someone", {"n": 1}) in ev)
    # without an ack the event still reaches the worker
    heard.get_nowait()
    await client.client.emit("typing", {"on": False})
    ev = await asyncio.wait_for(heard.get(), WAIT_S)
    assert (ev.data, ev.wants_ack) == ({"on": False}, False)
    # an event no worker declared: refused at once, counted, never hangs
    assert await call(client, "nobody-listens", 1) == {"error": "undeclared"}
    await client.client.emit("nobody-listens", 2)
    await asyncio.sleep(0.2)
    assert gw.metric(refused("undeclared")) == 2


async def test_events_share_the_inbound_limits_of_virtual_requests(
    gateway_factory: GatewayFactory, client_factory: Connect, serve: Serve
) -> None:
    router = Router()

    @router.event("echo")
    async def echo(ev: Event) -> Any:
        return ev.data

    await serve(router)
    gw = gateway_factory(virtual_request_rate_per_s=1, virtual_request_burst=3)
    client: RecordingClient = await client_factory(gw)
    answers = [await call(client, "echo", i) for i in range(5)]
    assert answers[:3] == [0, 1, 2]
    assert answers[3:] == [{"error": "rate"}, {"error": "rate"}]
    assert gw.metric(refused("rate")) == 2

    gw = gateway_factory(max_payload_bytes=4096)
    client = await client_factory(gw)
    # the emitted message fits --max-payload-bytes, but not with the handshake the event
    # carries to the workers and the envelope around it
    assert await call(client, "echo", "x" * 3950) == {"error": "too_large"}
    assert client.client.connected
    assert gw.metric(refused("too_large")) == 1
    assert await call(client, "echo", "small") == "small"


async def test_the_asgi_bridge_answers_events_as_a_post(
    gateway_factory: GatewayFactory,
    client_factory: Connect,
    nats_server: EmbeddedNats,
    prefix: str,
) -> None:
    app = FastAPI()

    @app.post("/realtime/events")
    async def events(request: Request) -> dict[str, Any]:
        body = await request.json()
        return {
            "event": request.headers["x-sailcast-event"],
            "args": body["args"],
            "socket": request.headers["x-sailcast-socket-id"],
        }

    pub = await Publisher.connect(nats_server.url, prefix=prefix)
    bridge = AsgiBridge(app, events=("shout",), events_path="/realtime/events")
    service: RouterService = await bridge.start(pub)
    try:
        gw = gateway_factory()
        client: RecordingClient = await client_factory(gw)
        assert await call(client, "shout", "hi") == {
            "event": "shout",
            "args": ["hi"],
            "socket": client.sid,
        }
        assert await call(client, "whisper", "hi") == {"error": "undeclared"}
        assert gw.metric(refused("undeclared")) == 1
    finally:
        await service.stop()
        await pub.close()


async def test_sailcast_worker_serves_a_router_with_events(
    gateway_factory: GatewayFactory,
    sails_client: Connect,
    nats_server: EmbeddedNats,
    prefix: str,
) -> None:
    async with sailcast_worker(
        "--router", "tests.support.router_app:router", nats_url=nats_server.url, prefix=prefix
    ):
        client: RecordingClient = await sails_client(gateway_factory())
        assert await call(client, "ping", 5) == ("pong", 5)  # two ack arguments
        jwr = await request(client, "get", "/ping")
        assert (jwr["statusCode"], jwr["body"]) == (200, {"pong": client.sid})
