"""A history room's message lost between NATS and the gateway is repaired live.

A proxy between the gateway and nats-server drops one re-published message of a history
room (what a slow-consumer drop or a route hiccup does to a core message). The next
message of that room carries, in `Nats-Last-Sequence`, the position of the lost one: the
gateway fetches it from the stream (batched Direct Get) and delivers it before the next
one. The client stays connected and sees every message once, in position order, each
with its offset.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import nats
import pytest

from gateway.embedded_nats import EmbeddedNats
from gateway.history.stream import HistoryStream
from gateway.settings import HistorySettings
from publisher import Publisher
from shared.envelope import KIND_BROADCAST, encode_args, encode_data
from shared.history import parse_offset
from shared.subjects import Subjects
from tests.faults.faultkit import MsgDroppingProxy, ametric
from tests.helpers import GatewayProcess, RecordingClient

pytestmark = pytest.mark.integration

RULES = "*=100/2m"


async def test_a_lost_history_message_is_repaired_in_order_without_a_disconnect(
    nats_server: EmbeddedNats,
    prefix: str,
    gateway_factory: Callable[..., GatewayProcess],
    client_factory: Callable[..., Any],
    publisher: Publisher,
) -> None:
    proxy = await MsgDroppingProxy(nats_server.port).start()
    nc = await nats.connect(nats_server.url)
    try:
        gw: GatewayProcess = await asyncio.to_thread(
            gateway_factory, "gw0", nats_url=proxy.url, history=RULES, history_storage="memory"
        )
        subjects = Subjects(prefix)
        stream = await HistoryStream.ensure(
            nc, subjects, HistorySettings(history=RULES, history_storage="memory")
        )
        client: RecordingClient = await client_factory(gw)
        await publisher.sockets.join(client.sid, "chat")
        js = nc.jetstream()

        async def store(i: int, marker: str = "") -> int:
            body = encode_data(
                KIND_BROADCAST,
                encode_args("m", {"i": i, "x": marker}),
                ts=time.time(),
                rooms=["chat"],
            )
            ack = await js.publish(subjects.history("chat"), body)
            return int(ack.seq)

        seqs = [await store(1)]
        await client.wait_count(1)
        proxy.drop_next(subjects.room("chat"), b"drop-me")
        seqs.append(await store(2, "drop-me"))  # never reaches the gateway live
        started = time.monotonic()
        seqs.append(await store(3))
        events = await client.wait_count(3, timeout=10)
        print(
            f"gap seen and repaired: the lost message and the next one delivered "
            f"{(time.monotonic() - started) * 1000:.1f} ms after the next was stored"
        )
        assert proxy.dropped == [subjects.room("chat").encode()]
        assert [e for e, _ in events] == ["m", "m", "m"]
        assert [d[0]["i"] for _, d in events] == [1, 2, 3]
        assert [parse_offset(d[1]) for _, d in events] == [(stream.epoch, s) for s in seqs]
        assert client.client.connected
        assert await ametric(gw, "sailcast_gateway_history_gaps_total") == 1
        assert await ametric(gw, "sailcast_gateway_history_repaired_messages_total") == 1
        seqs.append(await store(4))
        events = await client.wait_count(4)
        assert events[-1][1][1] == f"{stream.epoch}:{seqs[-1]}"
        assert len(events) == 4
    finally:
        await nc.close()
        await proxy.close()


async def test_a_quiet_rooms_message_lost_in_a_nats_outage_arrives_after_the_reconnect(
    nats_server: EmbeddedNats,
    prefix: str,
    gateway_factory: Callable[..., GatewayProcess],
    client_factory: Callable[..., Any],
    publisher: Publisher,
) -> None:
    """The gateway's NATS connection is cut; a message stored meanwhile is re-published to
    nobody. No later message of its room comes, yet the client gets it once the gateway
    is back (it reads what its rooms missed), still connected."""
    proxy = await MsgDroppingProxy(nats_server.port).start()
    nc = await nats.connect(nats_server.url)
    try:
        gw: GatewayProcess = await asyncio.to_thread(
            gateway_factory, "gw0", nats_url=proxy.url, history=RULES, history_storage="memory"
        )
        subjects = Subjects(prefix)
        stream = await HistoryStream.ensure(
            nc, subjects, HistorySettings(history=RULES, history_storage="memory")
        )
        client: RecordingClient = await client_factory(gw)
        await publisher.sockets.join(client.sid, "quiet")
        js = nc.jetstream()

        async def store(i: int) -> int:
            body = encode_data(KIND_BROADCAST, encode_args("q", i), ts=time.time(), rooms=["quiet"])
            return int((await js.publish(subjects.history("quiet"), body)).seq)

        s1 = await store(1)
        await client.wait_count(1)
        reconnects = await ametric(gw, "sailcast_gateway_nats_reconnects_total")
        proxy.cut()
        s2 = await store(2)  # the gateway is away: its copy is lost
        events = await client.wait_count(2, timeout=15)
        assert events == [("q", [1, f"{stream.epoch}:{s1}"]), ("q", [2, f"{stream.epoch}:{s2}"])]
        assert await ametric(gw, "sailcast_gateway_nats_reconnects_total") == reconnects + 1
        assert await ametric(gw, "sailcast_gateway_history_repaired_messages_total") == 1
        assert client.client.connected
    finally:
        await nc.close()
        await proxy.close()
