"""The framework recipes in examples/ run: FastAPI with a lifespan-managed Publisher,
Django with a SyncPublisher from a view and from a task function (called in a process
of its own, as a Celery worker would run it). Real nats-server, gateways, clients."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable

import pytest

from gateway.embedded_nats import EmbeddedNats
from publisher import Publisher
from tests.helpers import GatewayProcess, RecordingClient, quiet
from tests.integration.test_virtual_requests import Connect, request, sails_client
from tests.integration.worker_process import ROOT, sailcast_worker

pytestmark = pytest.mark.integration
__all__ = ["sails_client"]  # the fixture, shared with test_virtual_requests.py

GatewayFactory = Callable[..., GatewayProcess]


async def chat_in_lobby(
    gateway_factory: GatewayFactory, sails_client: Connect
) -> tuple[RecordingClient, RecordingClient]:
    """Two sockets on two gateways join the lobby through the recipe's join route;
    one posts a message through the recipe, the other receives it (the sender not)."""
    alice = await sails_client(gateway_factory())
    bob = await sails_client(gateway_factory())
    for client in (alice, bob):
        jwr = await request(client, "post", "/rooms/lobby/join")
        assert (jwr["statusCode"], jwr["body"]) == (200, {"joined": "lobby"})
    jwr = await request(bob, "post", "/rooms/lobby/messages", {"text": "hi"})
    assert (jwr["statusCode"], jwr["body"]) == (201, {"room": "lobby", "text": "hi"})
    await alice.wait_for(lambda ev: any(e == "chat" for e, _ in ev))
    return alice, bob


async def test_fastapi_recipe(
    gateway_factory: GatewayFactory,
    sails_client: Connect,
    nats_server: EmbeddedNats,
    prefix: str,
    publisher: Publisher,
) -> None:
    async with sailcast_worker(
        "--asgi", "examples.fastapi_recipe:app", nats_url=nats_server.url, prefix=prefix
    ):
        alice, bob = await chat_in_lobby(gateway_factory, sails_client)
        # FastAPI's validation answers a bad body
        jwr = await request(bob, "post", "/rooms/lobby/messages", {"txt": "hi"})
        assert jwr["statusCode"] == 422
        await quiet([alice, bob], publisher)
    assert alice.named("chat") == [{"room": "lobby", "text": "hi"}]
    assert bob.named("chat") == []


async def test_django_recipe(
    gateway_factory: GatewayFactory,
    sails_client: Connect,
    nats_server: EmbeddedNats,
    prefix: str,
    publisher: Publisher,
) -> None:
    async with sailcast_worker(
        "--asgi", "examples.django_recipe:application", nats_url=nats_server.url, prefix=prefix
    ):
        alice, bob = await chat_in_lobby(gateway_factory, sails_client)
        # the task, run by a process of its own as a Celery worker would
        env = {**os.environ, "SAILCAST_NATS_URL": nats_server.url, "SAILCAST_PREFIX": prefix}
        task = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "examples.django_recipe",
            "notify",
            "lobby",
            "done",
            cwd=ROOT,
            env=env,
        )
        assert await asyncio.wait_for(task.wait(), 20) == 0
        await quiet([alice, bob], publisher)
    from_task = {"room": "lobby", "text": "done", "from": "task"}
    assert alice.named("chat") == [{"room": "lobby", "text": "hi"}, from_task]
    assert bob.named("chat") == [from_task]
