"""The sails.sockets verbs across two gateway processes, seen by real clients."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest

from publisher import NoSuchSocket, Publisher
from shared.envelope import encode_request
from shared.errors import GatewayTimeout, LimitExceeded
from tests.helpers import GatewayProcess, RecordingClient, quiet

pytestmark = pytest.mark.integration

Connect = Callable[..., Any]


async def three_clients(
    gws: list[GatewayProcess], connect: Connect
) -> tuple[RecordingClient, RecordingClient, RecordingClient]:
    """A and C on the first gateway, B on the second."""
    a = await connect(gws[0])
    b = await connect(gws[1])
    c = await connect(gws[0])
    return a, b, c


async def test_join_then_broadcast_with_omit_reaches_every_gateway(
    two_gateways: list[GatewayProcess], publisher: Publisher, client_factory: Connect
) -> None:
    a, b, c = await three_clients(two_gateways, client_factory)
    for s in (a, b, c):
        await publisher.sockets.join(s.sid, "lobby")
    # no wait between join and broadcast: join returns once applied
    await publisher.sockets.broadcast("lobby", "chat", {"text": "hi"}, omit=a.sid)
    await publisher.sockets.broadcast("lobby", "chat", {"text": "all"})
    await quiet([a, b, c], publisher)
    assert a.events == [("chat", {"text": "all"})]
    assert b.events == [("chat", {"text": "hi"}), ("chat", {"text": "all"})]
    assert c.events == b.events


async def test_a_join_is_in_effect_when_it_returns_for_every_fresh_room(
    two_gateways: list[GatewayProcess], publisher: Publisher, client_factory: Connect
) -> None:
    """Each round joins a socket to a room no gateway has a subscription for yet and
    broadcasts at once: had a join returned before the gateway's SUB reached NATS, the
    broadcast would find no subscriber and be lost. Many rounds make the race show."""
    clients = [await client_factory(gw) for gw in two_gateways]
    rounds = 150
    for i in range(rounds):
        member = clients[i % 2]
        await publisher.sockets.join(member.sid, f"fresh-{i}")
        await publisher.sockets.broadcast(f"fresh-{i}", "n", i)
    await quiet(clients, publisher)
    for k, c in enumerate(clients):
        assert [d for _, d in c.events] == list(range(k, rounds, 2))


async def test_default_event_and_short_form(
    two_gateways: list[GatewayProcess], publisher: Publisher, client_factory: Connect
) -> None:
    a = await client_factory(two_gateways[1])
    await publisher.sockets.join(a.sid, "r")
    await publisher.sockets.broadcast("r", {"short": True})
    await publisher.sockets.broadcast("r", data=[1, 2])
    await quiet([a], publisher)
    assert a.events == [("message", {"short": True}), ("message", [1, 2])]


async def test_omit_accepts_one_or_many_and_blast_omits(
    two_gateways: list[GatewayProcess], publisher: Publisher, client_factory: Connect
) -> None:
    a, b, c = await three_clients(two_gateways, client_factory)
    await publisher.sockets.join([a.sid, b.sid, c.sid], "room")
    await publisher.sockets.broadcast("room", "x", 1, omit=[a.sid, b.sid])
    await publisher.sockets.broadcast("room", "y", 2, omit=(s for s in [c.sid]))
    await publisher.sockets.blast("announce", {"n": 1}, omit=b.sid)
    await publisher.sockets.blast(data={"n": 2})
    # the short forms whose omit Sails drops (sockets.07, sockets.18) omit here
    await publisher.sockets.broadcast("room", data="short", omit=a.sid)
    await publisher.sockets.blast(data="short blast", omit=[a.sid, c.sid])
    await quiet([a, b, c], publisher)
    assert a.events == [("y", 2), ("announce", {"n": 1}), ("message", {"n": 2})]
    assert b.events == [
        ("y", 2),
        ("message", {"n": 2}),
        ("message", "short"),
        ("message", "short blast"),
    ]
    assert c.events == [
        ("x", 1),
        ("announce", {"n": 1}),
        ("message", {"n": 2}),
        ("message", "short"),
    ]


async def test_socket_in_several_target_rooms_gets_one_copy(
    two_gateways: list[GatewayProcess], publisher: Publisher, client_factory: Connect
) -> None:
    a, b, c = await three_clients(two_gateways, client_factory)
    await publisher.sockets.join([a.sid, b.sid, c.sid], "lobby")
    await publisher.sockets.join(b.sid, "side")
    await publisher.sockets.join(a.sid, "side")
    await publisher.sockets.broadcast(["lobby", "side"], "chat", {"msg": "two rooms"})
    await publisher.sockets.broadcast(["side", "lobby", "side"], "chat", {"msg": "again"})
    await publisher.sockets.broadcast(["lobby", "lobby"], "chat", {"msg": "twice listed"})
    await quiet([a, b, c], publisher)
    expected = [
        ("chat", {"msg": "two rooms"}),
        ("chat", {"msg": "again"}),
        ("chat", {"msg": "twice listed"}),
    ]
    assert a.events == expected
    assert b.events == expected
    assert c.events == expected


async def test_socket_id_is_a_room_for_direct_messages(
    two_gateways: list[GatewayProcess], publisher: Publisher, client_factory: Connect
) -> None:
    a, b, c = await three_clients(two_gateways, client_factory)
    await publisher.sockets.broadcast(b.sid, "direct", {"msg": "to B"})
    await publisher.sockets.broadcast("nobody-here", "chat", {"msg": "empty room"})
    await quiet([a, b, c], publisher)
    assert a.events == []
    assert b.events == [("direct", {"msg": "to B"})]
    assert c.events == []
    assert await publisher.sockets.rooms(b.sid) == [b.sid]


async def test_leave_and_room_member_operations_across_gateways(
    two_gateways: list[GatewayProcess], publisher: Publisher, client_factory: Connect
) -> None:
    """Replays the sails transcript steps sockets.19–35 across two gateways."""
    a, b, c = await three_clients(two_gateways, client_factory)
    sk = publisher.sockets
    await sk.join([a.sid, b.sid, c.sid], "lobby")
    await sk.join(b.sid, "side")
    await sk.add_room_members_to_rooms("lobby", ["vip"])
    await sk.broadcast("vip", "chat", "vip after add")
    await sk.remove_room_members_from_rooms("side", "vip")
    await sk.broadcast("vip", "chat", "vip after remove")
    await sk.add_room_members_to_rooms(c.sid, "c-only")
    await sk.broadcast("c-only", "chat", "c-only")
    await sk.leave(c.sid, "lobby")
    await sk.broadcast("lobby", "chat", "lobby after C left")
    await quiet([a, b, c], publisher)
    assert [d for _, d in a.events] == ["vip after add", "vip after remove", "lobby after C left"]
    assert [d for _, d in b.events] == ["vip after add", "lobby after C left"]
    assert [d for _, d in c.events] == ["vip after add", "vip after remove", "c-only"]
    assert await sk.rooms(a.sid) == sorted([a.sid, "lobby", "vip"])
    assert await sk.rooms(b.sid) == sorted([b.sid, "lobby", "side"])
    assert await sk.rooms(c.sid) == sorted([c.sid, "c-only", "vip"])

    await sk.leave_all("lobby")
    assert await sk.rooms(a.sid) == [a.sid]
    assert await sk.rooms(b.sid) == [b.sid]
    assert await sk.rooms(c.sid) == sorted([c.sid, "c-only", "vip"])
    await sk.broadcast(["lobby", "side", "vip"], "chat", "after leaveAll")
    await sk.broadcast(a.sid, "direct", "A id room survives leaveAll")
    await quiet([a, b, c], publisher)
    assert a.events[3:] == [("direct", "A id room survives leaveAll")]
    assert b.events[2:] == []
    assert c.events[3:] == [("chat", "after leaveAll")]

    # a room as its own source empties it (what a destroyed record's room gets)
    await sk.join([a.sid, b.sid], "vip")
    await sk.remove_room_members_from_rooms("vip", "vip")
    for s in (a, b, c):
        assert "vip" not in await sk.rooms(s.sid)


async def test_cluster_operations_return_at_once_without_gateways(publisher: Publisher) -> None:
    """No gateway runs: NATS answers "no responders", so nothing is waited for."""
    started = time.monotonic()
    await publisher.sockets.leave_all("lobby")
    await publisher.sockets.add_room_members_to_rooms("lobby", "vip")
    assert time.monotonic() - started < publisher.request_timeout_s / 2


async def test_cluster_operations_name_a_gateway_that_did_not_confirm(
    gateway_factory: Callable[..., GatewayProcess], publisher: Publisher, client_factory: Connect
) -> None:
    """A frozen gateway (SIGSTOP: connected, silent) holds members the change may not
    have reached: the call says so. A crashed one (SIGKILL, its heartbeat not yet
    expired) holds none: the call returns without waiting for it."""
    live, frozen, crashed = (gateway_factory(g) for g in ("live", "frozen", "crashed"))
    members = [await client_factory(g) for g in (live, frozen, crashed)]
    await publisher.sockets.join([m.sid for m in members], "lobby")
    os.kill(frozen.proc.pid, signal.SIGSTOP)
    try:
        with pytest.raises(GatewayTimeout, match="frozen") as err:
            await publisher.sockets.add_room_members_to_rooms("lobby", "vip")
        assert "crashed" not in str(err.value)
        assert "live" not in str(err.value)
        # applied where it could be: the live gateway's member is in vip
        assert "vip" in await publisher.sockets.rooms(members[0].sid)
    finally:
        os.kill(frozen.proc.pid, signal.SIGCONT)
    await publisher.sockets.remove_room_members_from_rooms("lobby", "vip")  # all confirm
    crashed.proc.kill()
    crashed.proc.wait()
    started = time.monotonic()
    await publisher.sockets.add_room_members_to_rooms("lobby", "vip")
    # found gone by a probe: not waited for until the timeout
    assert time.monotonic() - started < publisher.request_timeout_s
    assert "vip" in await publisher.sockets.rooms(members[1].sid)


async def test_room_members_over_the_room_limit_are_reported_not_skipped_silently(
    gateway_factory: Callable[..., GatewayProcess], publisher: Publisher, client_factory: Connect
) -> None:
    gws = [gateway_factory(g, max_rooms_per_socket=3) for g in ("la", "lb")]
    full, roomy = await client_factory(gws[0]), await client_factory(gws[1])
    await publisher.sockets.join([full.sid, roomy.sid], "lobby")  # own room + lobby: 2
    await publisher.sockets.join(full.sid, "side")  # full: 3
    with pytest.raises(LimitExceeded, match="1 join"):
        await publisher.sockets.add_room_members_to_rooms("lobby", "vip")
    assert await publisher.sockets.rooms(roomy.sid) == sorted([roomy.sid, "lobby", "vip"])
    assert "vip" not in await publisher.sockets.rooms(full.sid)


async def test_unknown_socket_raises_no_such_socket_quickly(
    two_gateways: list[GatewayProcess], publisher: Publisher, client_factory: Connect
) -> None:
    a = await client_factory(two_gateways[0])
    gone = await client_factory(two_gateways[1])
    gone_sid = gone.sid
    await gone.disconnect()
    for sid in ("never-connected", gone_sid):
        started = time.monotonic()
        with pytest.raises(NoSuchSocket) as err:
            await publisher.sockets.join(sid, "lobby")
        assert err.value.socket_id == sid
        assert time.monotonic() - started < 1.0
    with pytest.raises(NoSuchSocket):
        await publisher.sockets.join([a.sid, "never-connected"], "lobby")
    # the valid one of the pair was still applied
    assert "lobby" in await publisher.sockets.rooms(a.sid)


async def test_interest_a_gateway_without_members_receives_nothing(
    two_gateways: list[GatewayProcess], publisher: Publisher, client_factory: Connect
) -> None:
    gwa, gwb = two_gateways
    a = await client_factory(gwa)
    b = await client_factory(gwb)
    await publisher.sockets.join(a.sid, "only-on-a")
    before_a = gwa.metric('sailcast_gateway_broker_messages_received_total{kind="room"}')
    before_b = gwb.metric('sailcast_gateway_broker_messages_received_total{kind="room"}')
    for i in range(20):
        await publisher.sockets.broadcast("only-on-a", "n", i)
    await quiet([a, b], publisher)
    room_a = gwa.metric('sailcast_gateway_broker_messages_received_total{kind="room"}')
    room_b = gwb.metric('sailcast_gateway_broker_messages_received_total{kind="room"}')
    # gateway A: the 20 messages plus the marker for A; gateway B: only B's marker
    assert room_a - before_a == 21
    assert room_b - before_b == 1
    assert [d for _, d in a.events] == list(range(20))

    # after the last member leaves (and the linger), A gives up its interest too
    subs_joined = gwa.metric("sailcast_gateway_broker_subscriptions")
    await publisher.sockets.leave(a.sid, "only-on-a")
    deadline = time.monotonic() + 5
    while gwa.metric("sailcast_gateway_broker_subscriptions") >= subs_joined:
        assert time.monotonic() < deadline, "room subscription was never released"
        await asyncio.sleep(0.05)
    before = gwa.metric('sailcast_gateway_broker_messages_received_total{kind="room"}')
    await publisher.sockets.broadcast("only-on-a", "n", "late")
    await quiet([a], publisher)
    assert gwa.metric('sailcast_gateway_broker_messages_received_total{kind="room"}') - before == 1


async def test_socket_requests_reach_only_the_owning_gateway(
    two_gateways: list[GatewayProcess], publisher: Publisher, client_factory: Connect
) -> None:
    gwa, gwb = two_gateways
    a = await client_factory(gwa)
    await client_factory(gwb)
    control = 'sailcast_gateway_broker_messages_received_total{kind="control"}'
    before_a, before_b = gwa.metric(control), gwb.metric(control)
    for i in range(10):
        await publisher.sockets.join(a.sid, f"room-{i}")
    await publisher.sockets.leave(a.sid, "room-0")
    assert len(await publisher.sockets.rooms(a.sid)) == 10
    assert gwa.metric(control) - before_a == 12
    assert gwb.metric(control) - before_b == 0


async def test_order_is_kept_per_publisher_and_room(
    two_gateways: list[GatewayProcess], publisher: Publisher, client_factory: Connect
) -> None:
    a = await client_factory(two_gateways[0])
    b = await client_factory(two_gateways[1], transport="polling")
    await publisher.sockets.join([a.sid, b.sid], "seq")
    n = 300
    for i in range(n):
        await publisher.sockets.broadcast("seq", "n", i)
    for c in (a, b):
        await c.wait_count(n, timeout=15)
        assert [d for _, d in c.events] == list(range(n))


@pytest.mark.parametrize(
    "room", ["a.b", "a.*", "a.>", ">", "*", "with space", "é/ü", "sails_model_user_1:user"]
)
async def test_hostile_room_names_neither_collide_nor_wildcard(
    room: str, two_gateways: list[GatewayProcess], publisher: Publisher, client_factory: Connect
) -> None:
    a = await client_factory(two_gateways[0])
    b = await client_factory(two_gateways[1])
    others = ["a.b", "a.*", "a.>", ">", "*", "a", "a.c", "with", "space"]
    await publisher.sockets.join(a.sid, room)
    await publisher.sockets.join(b.sid, [o for o in others if o != room])
    await publisher.sockets.broadcast(room, "hit", room)
    for o in others:
        if o != room:
            await publisher.sockets.broadcast(o, "other", o)
    await quiet([a, b], publisher)
    assert a.events == [("hit", room)]
    assert ("hit", room) not in b.events


async def test_bad_input_raises_before_sending(
    two_gateways: list[GatewayProcess], publisher: Publisher, client_factory: Connect
) -> None:
    from publisher import InvalidRoomName, NotSerializable, PayloadTooLarge, UsageError

    a = await client_factory(two_gateways[0])
    await publisher.sockets.join(a.sid, "lobby")
    with pytest.raises(NotSerializable):
        await publisher.sockets.broadcast("lobby", "x", {"when": object()})
    with pytest.raises(InvalidRoomName):
        await publisher.sockets.broadcast("", "x", 1)
    with pytest.raises(InvalidRoomName):
        await publisher.sockets.broadcast(["lobby", ""], "x", 1)
    with pytest.raises(InvalidRoomName):
        await publisher.sockets.join(a.sid, [])
    with pytest.raises(PayloadTooLarge):
        await publisher.sockets.broadcast("lobby", "x", "y" * (2 * 1024 * 1024))
    with pytest.raises(UsageError):
        await publisher.sockets.broadcast("lobby", "disconnect", 1)
    await quiet([a], publisher)
    assert a.events == []


async def test_malformed_messages_are_counted_and_dropped(
    two_gateways: list[GatewayProcess], publisher: Publisher, client_factory: Connect
) -> None:
    gw = two_gateways[0]
    a = await client_factory(gw)
    await publisher.sockets.join(a.sid, "lobby")
    subject = publisher.subjects.room("lobby")
    for junk in (b"", b"not json", b'{"v":1,"k":"bc","ts":1}\n["e"]', b"\xff\xfe", b"{}\n{}"):
        await publisher.publish_raw(subject, junk, "junk")
    await publisher.publish_raw(publisher.subjects.blast, b"[1,2", "junk")
    await publisher.publish_raw(publisher.subjects.socket(a.sid), b"garbage", "junk")
    await publisher.publish_raw(
        publisher.subjects.gateways, encode_request("addm", src=5, dst="x"), "junk"
    )
    await publisher.sockets.broadcast("lobby", "still", "alive")
    await quiet([a], publisher)
    assert a.events == [("still", "alive")]
    assert gw.metric('sailcast_gateway_drops_total{reason="malformed"}') >= 6
    assert gw.proc.poll() is None


async def test_clients_cannot_join_or_broadcast_themselves(
    two_gateways: list[GatewayProcess], publisher: Publisher, client_factory: Connect
) -> None:
    a = await client_factory(two_gateways[0])
    b = await client_factory(two_gateways[1])
    await publisher.sockets.join(b.sid, "lobby")
    for event, payload in (("join", "lobby"), ("broadcast", ["lobby", "x"]), ("message", "hi")):
        await a.client.emit(event, payload)
    await quiet([a, b], publisher)
    assert await publisher.sockets.rooms(a.sid) == [a.sid]
    assert b.events == []


async def test_disconnect_a_socket_by_id(
    two_gateways: list[GatewayProcess], publisher: Publisher, client_factory: Connect
) -> None:
    b = await client_factory(two_gateways[1])
    await publisher.sockets.disconnect(b.sid)
    deadline = time.monotonic() + 5
    while b.client.connected:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)


async def test_engine_io_v3_client_through_a_gateway(
    two_gateways: list[GatewayProcess], publisher: Publisher
) -> None:
    """sails.io.js 1.x speaks Engine.IO v3: its socket id is the engine sid, and a worker
    addresses it like any other socket (full client runs are in tests/e2e)."""
    import aiohttp
    import orjson

    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(f"{two_gateways[1].url}/socket.io/?EIO=3&transport=websocket")
        sid = orjson.loads((await ws.receive_str())[1:])["sid"]
        assert await ws.receive_str() == "40"
        await publisher.sockets.join(sid, "lobby")
        await publisher.sockets.broadcast("lobby", "chat", {"hi": 1})
        assert await ws.receive_str() == '42["chat",{"hi":1}]'
        await ws.send_str("2")  # v3: the client pings
        assert await ws.receive_str() == "3"
        await ws.close()
