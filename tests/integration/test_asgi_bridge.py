"""The ASGI bridge (publisher/asgi.py) answering sails.io.js virtual requests with real
FastAPI and Django applications: real gateway processes, a real nats-server and a real
Socket.IO client sending what sails.io.js sends."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from gateway.embedded_nats import EmbeddedNats
from publisher import Publisher
from publisher.asgi import AsgiApp, AsgiBridge, AsgiService
from tests.helpers import GatewayProcess, quiet
from tests.integration.test_virtual_requests import JWR_KEYS, Connect, request, sails_client
from tests.integration.worker_process import sailcast_worker

pytestmark = pytest.mark.integration
__all__ = ["sails_client"]  # the fixture, shared with test_virtual_requests.py

GatewayFactory = Callable[..., GatewayProcess]
Bridge = Callable[[AsgiApp], Awaitable[AsgiService]]


@pytest.fixture
async def bridge(nats_server: EmbeddedNats, prefix: str) -> AsyncIterator[Bridge]:
    """Serve an ASGI app as a worker process would (`sailcast worker --asgi`)."""
    running: list[tuple[AsgiService, Publisher]] = []

    async def start(app: AsgiApp) -> AsgiService:
        pub = await Publisher.connect(nats_server.url, prefix=prefix)
        service = await AsgiBridge(app).start(pub)
        running.append((service, pub))
        return service

    yield start
    for service, pub in running:
        await service.stop()
        await pub.close()


def load(framework: str) -> AsgiApp:
    if framework == "fastapi":
        from tests.support.fastapi_app import app as fastapi_app

        return fastapi_app
    from tests.support.django_app import app as django_app

    return django_app  # type: ignore[no-any-return]


@pytest.mark.parametrize("framework", ["fastapi", "django"])
async def test_an_asgi_app_answers_virtual_requests(
    framework: str,
    gateway_factory: GatewayFactory,
    sails_client: Connect,
    bridge: Bridge,
    publisher: Publisher,
) -> None:
    await bridge(load(framework))
    client = await sails_client(gateway_factory())

    # method, path and query reach the app's router; the socket id reaches the view as
    # a header and in the scope's state; the JSON answer is the JWR body
    jwr = await request(client, "get", "/users/3?q=x")
    assert list(jwr) == JWR_KEYS
    assert jwr["statusCode"] == 200
    assert jwr["headers"]["content-type"] == "application/json"
    body = jwr["body"]
    assert {k: body[k] for k in ("id", "q", "socket", "stateSocket")} == {
        "id": 3,
        "q": "x",
        "socket": client.sid,
        "stateSocket": client.sid,
    }
    if framework == "fastapi":  # FastAPI's lifespan ran and its state reaches requests
        assert body["greeting"] == "hello from the lifespan"

    # the app's own session: its cookie becomes the socket's cookie (set-cookie is not
    # in the JWR), and the next request is in the same session
    assert (await request(client, "get", "/whoami"))["body"] == {"name": None}
    jwr = await request(client, "post", "/login", {"name": "ada"})
    assert (jwr["statusCode"], jwr["body"]) == (200, {"ok": True})
    assert "set-cookie" not in jwr["headers"]
    assert (await request(client, "get", "/whoami"))["body"] == {"name": "ada"}

    # a view joins the requester to a model room; a broadcast after the answer reaches it
    jwr = await request(client, "post", "/users/7/subscribe")
    assert (jwr["statusCode"], jwr["body"]) == (201, {"subscribed": 7})
    await publisher.model("user").publish([7], {"verb": "updated", "id": 7, "n": 1})
    await publisher.model("user").publish([8], {"verb": "updated", "id": 8, "n": 2})
    await quiet([client], publisher)
    assert client.named("user") == [{"verb": "updated", "id": 7, "n": 1}]

    # a text answer stays text, with the app's headers
    jwr = await request(client, "get", "/text")
    assert (jwr["statusCode"], jwr["body"]) == (200, "plain words")
    assert jwr["headers"]["x-thing"] == "1"
    assert jwr["headers"]["content-type"].startswith("text/plain")

    # the app's own 404
    assert (await request(client, "get", "/nowhere"))["statusCode"] == 404


async def test_fastapi_validation_errors_are_the_apps_422(
    gateway_factory: GatewayFactory, sails_client: Connect, bridge: Bridge
) -> None:
    await bridge(load("fastapi"))
    client = await sails_client(gateway_factory())
    jwr = await request(client, "post", "/login", {"nom": "ada"})
    assert jwr["statusCode"] == 422
    assert jwr["body"]["detail"][0]["loc"] == ["body", "name"]
    # an array body stays an array: FastAPI refuses it where it wants an object
    jwr = await request(client, "post", "/login", [1, 2])
    assert jwr["statusCode"] == 422


async def test_an_app_that_fails_answers_500_and_the_bridge_keeps_serving(
    gateway_factory: GatewayFactory, sails_client: Connect, bridge: Bridge
) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise ValueError("no lifespan here")  # as Django's handler does
        if scope["path"] == "/boom":
            raise RuntimeError("boom")
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    await bridge(app)
    client = await sails_client(gateway_factory())
    jwr = await request(client, "get", "/boom")
    assert (jwr["statusCode"], jwr["body"]) == (500, "Internal Server Error")
    jwr = await request(client, "get", "/fine")
    assert (jwr["statusCode"], jwr["body"]) == (204, "")


async def test_sailcast_worker_serves_an_asgi_app_and_stops_gracefully(
    gateway_factory: GatewayFactory,
    sails_client: Connect,
    nats_server: EmbeddedNats,
    prefix: str,
) -> None:
    """`sailcast worker --asgi module:app` as its own process: lifespan, queue group,
    SIGTERM leaves the group and exits 0."""
    async with sailcast_worker(
        "--asgi", "tests.support.fastapi_app:app", nats_url=nats_server.url, prefix=prefix
    ):
        client = await sails_client(gateway_factory())
        jwr = await request(client, "get", "/users/5")
        assert jwr["statusCode"] == 200
        assert jwr["body"]["greeting"] == "hello from the lifespan"
        assert jwr["body"]["socket"] == client.sid
