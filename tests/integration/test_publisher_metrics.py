"""A publisher handed a prometheus_client registry exports its counters there, and
they move with what it does against a real nats-server and gateway."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from gateway.embedded_nats import EmbeddedNats
from publisher import NoSuchSocket, Publisher, TransportError
from tests.helpers import GatewayProcess

pytestmark = pytest.mark.integration


async def test_publisher_counters_move(
    nats_server: EmbeddedNats,
    prefix: str,
    gateway_factory: Callable[..., GatewayProcess],
    client_factory: Any,
) -> None:
    registry = CollectorRegistry()

    def value(name: str, **labels: str) -> float:
        return registry.get_sample_value(name, labels) or 0.0

    pub = await Publisher.connect(nats_server.url, prefix=prefix, registry=registry)
    try:
        client = await client_factory(gateway_factory())
        await pub.sockets.join(client.sid, "lobby")
        await pub.sockets.broadcast("lobby", "hello", 1)
        await pub.sockets.broadcast(["lobby", "other"], "hello", 2)  # one per target room
        await pub.sockets.blast("all", 3)
        with pytest.raises(NoSuchSocket):
            await pub.sockets.join("no-such-socket", "lobby")
        assert value("sailcast_publisher_messages_total", kind="broadcast") == 3
        assert value("sailcast_publisher_messages_total", kind="blast") == 1
        assert value("sailcast_publisher_requests_total", kind="join", outcome="ok") == 1
        no_socket = {"kind": "join", "outcome": "no_such_socket"}
        assert value("sailcast_publisher_requests_total", **no_socket) == 1
        assert value("sailcast_publisher_request_duration_seconds_count", kind="join") == 2

        # a reconnect (the server drops us; nats-py comes back by itself)
        assert value("sailcast_publisher_reconnects_total") == 0
        await pub.nats.force_reconnect()
        deadline = time.monotonic() + 10
        while value("sailcast_publisher_reconnects_total") < 1:
            assert time.monotonic() < deadline, "no reconnect counted"
            await asyncio.sleep(0.05)
        assert value("sailcast_publisher_reconnects_total") == 1
        assert pub.stats.reconnects == 1

        # a publish that fails (the NATS connection closed under the publisher)
        await pub.nats.close()
        with pytest.raises(TransportError):
            await pub.sockets.broadcast("lobby", "lost", 4)
        assert value("sailcast_publisher_errors_total", kind="broadcast") == 1
    finally:
        await pub.close()
