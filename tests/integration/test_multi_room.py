"""A broadcast to many rooms across real gateways: each member gets it exactly once,
and the bytes through NATS grow linearly with the number of rooms (issue 18 #7: they
grew as R^2, R copies each listing all R rooms)."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from bench.procstat import free_port
from gateway.embedded_nats import EmbeddedNats
from publisher import Publisher
from tests.helpers import GatewayProcess, RecordingClient, quiet

pytestmark = pytest.mark.integration

Connect = Callable[..., Any]
PUBLISHER_NAME = "multi-room-test-publisher"
SMALL_R, LARGE_R = 250, 1000
PER_ROOM_BYTES_MAX = 100
"""Bytes through NATS per target room allowed: each room is named once in one message
that the publisher sends and each of the two gateways receives (~14 B per name each).
The per-room copies each listing every room cost ~35,000 B per room at R = 1,000."""


@pytest.fixture
def monitored_nats() -> Iterator[tuple[EmbeddedNats, int]]:
    """A nats-server of this test's own, with its monitoring port: its per-connection
    byte counts are the test's measure."""
    port = free_port()
    server = EmbeddedNats(jetstream=False, extra_args=("-m", str(port))).start()
    yield server, port
    server.close()


def nats_bytes(monitor_port: int) -> int:
    """Message bytes the publisher sent plus those the gateways received, so far."""
    url = f"http://127.0.0.1:{monitor_port}/connz?limit=1000"
    with urllib.request.urlopen(url, timeout=5) as r:
        conns = json.load(r)["connections"]
    total = 0
    for c in conns:
        name = c.get("name", "")
        if name == PUBLISHER_NAME:
            total += c["in_bytes"]
        elif name.startswith("sailcast-gateway"):
            total += c["out_bytes"]
    return total


async def test_a_broadcast_to_many_rooms_reaches_each_member_once_in_linear_bytes(
    monitored_nats: tuple[EmbeddedNats, int],
    gateway_factory: Callable[..., GatewayProcess],
    prefix: str,
    client_factory: Connect,
) -> None:
    server, monitor_port = monitored_nats
    gwa, gwb = (
        gateway_factory(gw, nats_url=server.url, max_rooms_per_socket=LARGE_R + 10)
        for gw in ("gwa", "gwb")
    )
    pub = await Publisher.connect(
        server.url, prefix=prefix, name=PUBLISHER_NAME, request_timeout_s=10.0
    )  # joining 1,000 rooms on a loaded 2-core machine may take more than the 2 s default
    try:
        cost: dict[int, int] = {}
        for r in (SMALL_R, LARGE_R):
            rooms = [f"r{r}-{i:05d}" for i in range(r)]
            everywhere: RecordingClient = await client_factory(gwa)
            bystander: RecordingClient = await client_factory(gwa)
            odd: RecordingClient = await client_factory(gwb)
            last: RecordingClient = await client_factory(gwb)
            clients = [everywhere, bystander, odd, last]
            await pub.sockets.join(everywhere.sid, rooms)
            await pub.sockets.join(odd.sid, rooms[1::2])
            await pub.sockets.join(last.sid, rooms[-1])
            await pub.sockets.join(bystander.sid, f"not-a-target-{r}")
            await pub.flush()
            before = nats_bytes(monitor_port)
            await pub.sockets.broadcast(rooms, "news", {"r": r})
            for member in (everywhere, odd, last):
                await member.wait_for(lambda ev: bool(ev), timeout=10)
            await quiet(clients, pub)  # anything still on its way has arrived
            cost[r] = nats_bytes(monitor_port) - before  # with the markers' few hundred bytes
            for member in (everywhere, odd, last):
                assert member.events == [("news", {"r": r})], r
            assert bystander.events == [], r
            for c in clients:
                await c.disconnect()
        print(f"bytes through NATS: R={SMALL_R}: {cost[SMALL_R]:,}, R={LARGE_R}: {cost[LARGE_R]:,}")
        assert cost[LARGE_R] <= PER_ROOM_BYTES_MAX * LARGE_R, cost
        ratio = cost[LARGE_R] / cost[SMALL_R]
        rooms_ratio = LARGE_R / SMALL_R
        assert ratio < 1.5 * rooms_ratio, f"{ratio:.1f}x the bytes for {rooms_ratio:.0f}x the rooms"
    finally:
        await pub.close()
