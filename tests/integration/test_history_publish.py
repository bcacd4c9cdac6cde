"""Publishing to history rooms against a real nats-server with JetStream: the publisher
reads the rules the gateways wrote into the stream, sends a history room's broadcast
through the stream (and every other room as before), stores a retried msg_id once (a
real Socket.IO client receives it once), from the SyncPublisher too, and splits a
broadcast to many rooms between the two paths without a duplicate."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import nats
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

import publisher.stored
from gateway.embedded_nats import EmbeddedNats
from gateway.history.stream import HistoryStream
from gateway.settings import HistorySettings
from publisher import Publisher, SyncPublisher, TransportError
from shared.envelope import KIND_BROADCAST, KIND_MULTI_ROOM, MULTI_ROOM_MIN_ROOMS, decode_data
from shared.history import parse_offset, stream_name
from shared.subjects import Subjects
from tests.helpers import GatewayProcess, RecordingClient

pytestmark = pytest.mark.integration

RULES = "chat:*=50/2m"


def r(prefix: str, room: str) -> str:
    return Subjects(prefix).room(room)


def h(prefix: str, room: str) -> str:
    return Subjects(prefix).history(room)


@pytest.fixture
async def nc(nats_server: EmbeddedNats) -> AsyncIterator[NatsClient]:
    client = await nats.connect(nats_server.url)
    yield client
    await client.close()


async def make_stream(
    nc: NatsClient, prefix: str, rules: str = RULES, storage: str = "memory"
) -> HistoryStream:
    return await HistoryStream.ensure(
        nc, Subjects(prefix), HistorySettings(history=rules, history_storage=storage)
    )


async def stored(nc: NatsClient, prefix: str) -> dict[str, int]:
    """Messages in the stream per history subject."""
    info = await nc.jetstream().stream_info(stream_name(prefix), subjects_filter=">")
    return dict(info.state.subjects or {})


class Tap:
    """A core subscriber on `<p>.r.>` and `<p>.mr`: what the gateways would get."""

    def __init__(self) -> None:
        self.got: list[Msg] = []
        self.changed = asyncio.Event()

    async def on_msg(self, msg: Msg) -> None:
        self.got.append(msg)
        self.changed.set()

    async def wait(self, n: int, timeout: float = 5.0) -> list[Msg]:
        async with asyncio.timeout(timeout):
            while len(self.got) < n:
                self.changed.clear()
                await self.changed.wait()
        return self.got


@pytest.fixture
async def tap(nc: NatsClient, prefix: str) -> Tap:
    t = Tap()
    await nc.subscribe(f"{prefix}.r.>", cb=t.on_msg)
    await nc.subscribe(f"{prefix}.mr", cb=t.on_msg)
    await nc.flush()
    return t


def position(msg: Msg) -> int | None:
    return int(msg.headers["Nats-Sequence"]) if msg.headers else None


async def test_history_rooms_go_through_the_stream_and_the_others_do_not(
    nc: NatsClient, nats_server: EmbeddedNats, prefix: str, tap: Tap
) -> None:
    await make_stream(nc, prefix)
    async with await Publisher.connect(nats_server.url, prefix=prefix) as pub:
        assert pub.history_rules.text == RULES
        await pub.sockets.broadcast("chat:1", "said", {"n": 1})
        await pub.sockets.broadcast("lobby", "said", {"n": 2})
        await pub.sockets.blast("all", {"n": 3})  # never stored
        got = await tap.wait(2)
    by_subject = {m.subject: m for m in got}
    assert position(by_subject[r(prefix, "chat:1")]) == 1  # stored, re-published
    assert position(by_subject[r(prefix, "lobby")]) is None  # the core path, as before
    assert await stored(nc, prefix) == {h(prefix, "chat:1"): 1}


async def test_without_a_stream_every_room_takes_the_core_path(
    nats_server: EmbeddedNats, prefix: str, tap: Tap
) -> None:
    async with await Publisher.connect(nats_server.url, prefix=prefix) as pub:
        assert not pub.history_rules
        await pub.sockets.broadcast("chat:1", "said", 1)
        (msg,) = await tap.wait(1)
    assert msg.subject == r(prefix, "chat:1")
    assert position(msg) is None


async def test_a_deleted_stream_is_an_error_at_the_call_then_no_history(
    nc: NatsClient, nats_server: EmbeddedNats, prefix: str
) -> None:
    stream = await make_stream(nc, prefix)
    async with await Publisher.connect(nats_server.url, prefix=prefix) as pub:
        await nc.jetstream().delete_stream(stream.name)
        with pytest.raises(TransportError, match="no history stream answered"):
            await pub.sockets.broadcast("chat:1", "said", 1, wait_stored=True)
        for _ in range(250):  # the failure made it read the rules again
            if not pub.history_rules:
                break
            await asyncio.sleep(0.02)
        assert not pub.history_rules
        await pub.sockets.broadcast("chat:1", "said", 2)  # core path now


async def test_rules_are_read_from_the_stream_a_gateway_created_and_followed(
    gateway_factory: Callable[..., GatewayProcess],
    nc: NatsClient,
    nats_server: EmbeddedNats,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(publisher.stored, "HISTORY_RULES_REFRESH_S", 0.05)  # not 10 s
    gateway_factory(history="sails_model_*=100/10m,chat:*=5/1m", history_storage="memory")
    async with await Publisher.connect(nats_server.url, prefix=prefix) as pub:
        assert pub.history_rules.text == "sails_model_*=100/10m,chat:*=5/1m"
        await make_stream(nc, prefix, "*=10/1m")  # another gateway with newer rules
        for _ in range(250):
            if pub.history_rules.text == "*=10/1m":
                break
            await asyncio.sleep(0.02)
        assert pub.history_rules.text == "*=10/1m"
        assert pub.sockets.history_rules == pub.history_rules


async def joined(
    pub: Publisher, client_factory: Callable[..., Any], gw: GatewayProcess, *rooms: str
) -> RecordingClient:
    client: RecordingClient = await client_factory(gw)
    await pub.sockets.join(client.sid, list(rooms))
    return client


def offsets_stripped(events: list[tuple[str, Any]]) -> list[tuple[str, Any, int | None]]:
    """(event, data, position): the position from the offset a stored event carries as
    its last argument (None for an event that carries none)."""
    out: list[tuple[str, Any, int | None]] = []
    for event, data in events:
        offset = parse_offset(data[-1]) if isinstance(data, list) and len(data) == 2 else None
        if offset is None:
            out.append((event, data, None))
        else:
            out.append((event, data[0], offset[1]))
    return out


async def test_a_retried_msg_id_is_stored_and_delivered_once(
    gateway_factory: Callable[..., GatewayProcess],
    client_factory: Callable[..., Any],
    nc: NatsClient,
    nats_server: EmbeddedNats,
    prefix: str,
) -> None:
    gw = gateway_factory(history=RULES, history_storage="memory")
    async with await Publisher.connect(nats_server.url, prefix=prefix) as pub:
        client = await joined(pub, client_factory, gw, "chat:1")
        for _ in range(3):  # the worker timed out and retried, twice
            await pub.sockets.broadcast("chat:1", "paid", {"order": 42}, msg_id="order-42-paid")
        await pub.sockets.broadcast("chat:1", "after", {}, msg_id="order-43")
        await client.wait_for(lambda ev: "after" in [e for e, _ in ev])
        # a v4 client gets each stored event with its offset as last argument
        assert offsets_stripped(client.events) == [("paid", {"order": 42}, 1), ("after", {}, 2)]
        assert await stored(nc, prefix) == {h(prefix, "chat:1"): 2}
        # without a msg_id a repeat is a new message, as before
        await pub.sockets.broadcast("chat:1", "again", 1)
        await pub.sockets.broadcast("chat:1", "again", 1)
        await client.wait_for(lambda ev: len([e for e, _ in ev if e == "again"]) == 2)


async def test_the_sync_twin_takes_msg_id_too(
    nc: NatsClient, nats_server: EmbeddedNats, prefix: str, tap: Tap
) -> None:
    await make_stream(nc, prefix)
    sync = SyncPublisher.connect(nats_server.url, prefix=prefix)
    try:
        for _ in range(2):
            sync.sockets.broadcast(["chat:1", "chat:2"], "paid", {"n": 1}, msg_id="x-1")
        sync.sockets.broadcast("lobby", "core", 2, msg_id="ignored-on-core")
        sync.flush()
    finally:
        sync.close()
    assert await stored(nc, prefix) == {h(prefix, "chat:1"): 1, h(prefix, "chat:2"): 1}
    got = await tap.wait(3)
    assert sorted(m.subject for m in got) == sorted(
        r(prefix, room) for room in ("chat:1", "chat:2", "lobby")
    )


async def test_a_broadcast_to_many_rooms_is_split_between_the_paths(
    nc: NatsClient, nats_server: EmbeddedNats, prefix: str, tap: Tap
) -> None:
    await make_stream(nc, prefix)
    core = [f"room{i}" for i in range(MULTI_ROOM_MIN_ROOMS)]
    async with await Publisher.connect(nats_server.url, prefix=prefix) as pub:
        # few rooms: a copy each, the history rooms listed first
        await pub.sockets.broadcast(["lobby", "chat:1", "chat:2"], "few", 1, msg_id="m")
        few = await tap.wait(3)
        assert {m.subject: position(m) is not None for m in few} == {
            r(prefix, "chat:1"): True,
            r(prefix, "chat:2"): True,
            r(prefix, "lobby"): False,
        }
        assert {decode_data(m.data).rooms for m in few} == {("chat:1", "chat:2", "lobby")}
        # many core rooms: one multi-room message for them, a stored copy per history room
        await pub.sockets.broadcast([*core, "chat:1", "chat:2"], "many", 2)
        many = (await tap.wait(6))[3:]
    multi = [decode_data(m.data) for m in many if m.subject == f"{prefix}.mr"]
    assert [(m.kind, m.rooms) for m in multi] == [(KIND_MULTI_ROOM, tuple(core))]
    copies = [decode_data(m.data) for m in many if m.subject != f"{prefix}.mr"]
    assert [(c.kind, c.rooms) for c in copies] == [
        (KIND_BROADCAST, (*core, "chat:1", "chat:2"))
    ] * 2
    assert await stored(nc, prefix) == {h(prefix, "chat:1"): 2, h(prefix, "chat:2"): 2}


async def test_every_socket_gets_a_split_broadcast_once(
    gateway_factory: Callable[..., GatewayProcess],
    client_factory: Callable[..., Any],
    nats_server: EmbeddedNats,
    prefix: str,
) -> None:
    gw = gateway_factory(history=RULES, history_storage="memory")
    core = [f"room{i}" for i in range(MULTI_ROOM_MIN_ROOMS)]
    async with await Publisher.connect(nats_server.url, prefix=prefix) as pub:
        only_history = await joined(pub, client_factory, gw, "chat:1", "chat:2")
        only_core = await joined(pub, client_factory, gw, "room0", "room3")
        both = await joined(pub, client_factory, gw, "chat:2", "room5", "lobby")
        clients = [only_history, only_core, both]
        await pub.sockets.broadcast(["lobby", "chat:1", "chat:2"], "few", 1)
        await pub.sockets.broadcast([*core, "chat:1", "chat:2"], "many", 2)
        await pub.sockets.broadcast(["chat:1", "chat:2", "room0", "lobby"], "last", 3)
        for c in clients:
            await c.wait_for(lambda ev: "last" in [e for e, _ in ev])
        await asyncio.sleep(0.3)  # a duplicate would have arrived by now
    # stored copies carry their position: chat:1's copy, then chat:2's, per broadcast
    assert offsets_stripped(only_history.events) == [("few", 1, 1), ("many", 2, 3), ("last", 3, 5)]
    assert offsets_stripped(only_core.events) == [("many", 2, None), ("last", 3, None)]
    # `both` gets "many" from room5's core copy: room5 comes before chat:2 in its list
    assert sorted(offsets_stripped(both.events)) == [
        ("few", 1, 2),
        ("last", 3, 6),
        ("many", 2, None),
    ]


async def test_rules_are_read_again_after_a_reconnect(prefix: str) -> None:
    """The stream was replaced while the publisher was cut off: it follows at once after
    the reconnect, not at its next 10 s refresh."""
    server = EmbeddedNats().start()
    try:
        admin = await nats.connect(server.url)
        await make_stream(admin, prefix, "chat:*=5/1m")
        async with await Publisher.connect(server.url, prefix=prefix) as pub:
            assert pub.history_rules.text == "chat:*=5/1m"
            await admin.jetstream().delete_stream(stream_name(prefix))
            await make_stream(admin, prefix, "*=10/1m", storage="file")  # kept over a restart
            await admin.close()
            server.stop()
            await asyncio.to_thread(server.start)  # same port, same store
            for _ in range(250):
                if pub.history_rules.text == "*=10/1m":
                    break
                await asyncio.sleep(0.02)
            assert pub.history_rules.text == "*=10/1m"
            assert pub.stats.reconnects == 1
    finally:
        server.close()
