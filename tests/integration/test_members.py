"""Cluster-wide members and counts (docs/presence.md, "Members and counts"): real
nats-server with JetStream, three gateway processes, real Socket.IO clients."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import pytest

from gateway.broker.nats_broker import NatsBroker
from gateway.directory import open_directory
from gateway.embedded_nats import EmbeddedNats
from gateway.identities import Identity
from gateway.metrics import GatewayMetrics
from gateway.node import Gateway
from gateway.settings import CoreSettings, GatewaySettings
from publisher import Publisher, SyncPublisher
from shared.config import NatsSettings, parse_servers
from shared.directory import directory_stream
from shared.errors import GatewayTimeout, InvalidRoomName
from shared.errors import UsageError as SailcastUsageError
from tests.helpers import GatewayProcess, RecordingClient
from tests.unit.fakes import RecordingConnection

pytestmark = pytest.mark.integration

Connect = Callable[..., Any]
QUERIES = 'sailcast_gateway_presence_queries_total{kind="%s",outcome="ok"}'
PUTS = 'sailcast_gateway_directory_writes_total{op="put",result="ok"}'


@pytest.fixture
def three_gateways(gateway_factory: Callable[..., GatewayProcess]) -> list[GatewayProcess]:
    return [gateway_factory("gwa"), gateway_factory("gwb"), gateway_factory("gwc")]


def order(gw_of: dict[str, str], sids: list[str]) -> list[str]:
    """The members' order a page promises: by gateway id, then socket id."""
    return sorted(sids, key=lambda s: (gw_of[s], s))


async def spread(
    gws: list[GatewayProcess], connect: Connect, counts: list[int]
) -> tuple[list[RecordingClient], dict[str, str]]:
    clients: list[RecordingClient] = []
    gw_of: dict[str, str] = {}
    for gw, n in zip(gws, counts, strict=True):
        for _ in range(n):
            c = await connect(gw)
            clients.append(c)
            gw_of[c.sid] = gw.gateway_id
    return clients, gw_of


async def test_members_and_count_span_gateways_in_gateway_then_socket_order(
    three_gateways: list[GatewayProcess], publisher: Publisher, client_factory: Connect
) -> None:
    clients, gw_of = await spread(three_gateways[:2], client_factory, [2, 3])
    for c in clients:
        await publisher.sockets.join(c.sid, "lobby")
    page = await publisher.sockets.members("lobby")
    assert [m.socket_id for m in page.members] == order(gw_of, list(gw_of))
    assert page.cursor is None
    assert page.missing == ()
    assert all(m.user_id is None and m.info is None for m in page.members)  # anonymous
    count = await publisher.sockets.count("lobby")
    assert (count.sockets, count.users) == (5, 0)
    assert await publisher.sockets.subscribers("lobby") == order(gw_of, list(gw_of))
    # a socket's own-id room is answered by its own subject, not the directory
    assert [m.socket_id for m in (await publisher.sockets.members(clients[0].sid)).members] == [
        clients[0].sid
    ]
    assert (await publisher.sockets.count(clients[0].sid)).sockets == 1
    # nobody there
    empty = await publisher.sockets.members("nobody-here")
    assert (empty.members, empty.cursor) == ([], None)
    assert (await publisher.sockets.count("nobody-here")).sockets == 0


async def test_only_the_gateways_holding_the_room_are_asked(
    three_gateways: list[GatewayProcess], publisher: Publisher, client_factory: Connect
) -> None:
    a, b, _ = three_gateways
    clients, _ = await spread(three_gateways, client_factory, [1, 1, 1])
    await publisher.sockets.join(clients[0].sid, "held")
    await publisher.sockets.join(clients[1].sid, "held")
    for _ in range(3):
        assert (await publisher.sockets.count("held")).sockets == 2
        assert len((await publisher.sockets.members("held")).members) == 2
    assert a.metric(QUERIES % "count") == 3
    assert b.metric(QUERIES % "count") == 3
    assert a.metric(QUERIES % "members") == 3
    non_holder = three_gateways[2].metrics()
    assert not any(k.startswith("sailcast_gateway_presence_queries_total") for k in non_holder)
    assert a.metric("sailcast_gateway_directory_rooms") == 1
    assert three_gateways[2].metric("sailcast_gateway_directory_rooms") == 0


async def test_paging_under_churn_skips_and_repeats_no_member_present_throughout(
    three_gateways: list[GatewayProcess], publisher: Publisher, client_factory: Connect
) -> None:
    clients, gw_of = await spread(three_gateways, client_factory, [4, 3, 4])
    stayers = clients[:9]
    leavers = clients[9:]
    for c in clients:
        await publisher.sockets.join(c.sid, "big")
    latecomers: list[RecordingClient] = []
    for gw in three_gateways:
        c = await client_factory(gw)
        latecomers.append(c)
        gw_of[c.sid] = gw.gateway_id
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = await publisher.sockets.members("big", cursor=cursor, limit=3)
        pages += 1
        assert len(page.members) <= 3
        seen.extend(m.socket_id for m in page.members)
        if pages == 1:  # churn between pages: some leave, some join
            for c in leavers:
                await publisher.sockets.leave(c.sid, "big")
            for c in latecomers:
                await publisher.sockets.join(c.sid, "big")
        if page.cursor is None:
            break
        cursor = page.cursor
    assert len(seen) == len(set(seen)), "a member was repeated"
    assert set(s.sid for s in stayers) <= set(seen), "a member present throughout was skipped"
    assert pages >= 4
    # every page is in (gateway, socket id) order
    seen_gw = [gw_of[s] for s in seen]
    assert seen_gw == sorted(seen_gw)


async def test_members_agree_with_broadcast_right_after_join_and_leave(
    three_gateways: list[GatewayProcess], publisher: Publisher, client_factory: Connect
) -> None:
    """join returns once the directory lists the gateway: members sees the socket at
    once, on every fresh room; leave: at once not."""
    clients, _ = await spread(three_gateways, client_factory, [1, 1, 1])
    for i in range(30):
        c = clients[i % 3]
        room = f"fresh-{i}"
        await publisher.sockets.join(c.sid, room)
        assert [m.socket_id for m in (await publisher.sockets.members(room)).members] == [c.sid]
        await publisher.sockets.leave(c.sid, room)
        assert (await publisher.sockets.count(room)).sockets == 0


async def test_a_killed_gateways_members_drop_out_at_once(
    three_gateways: list[GatewayProcess], publisher: Publisher, client_factory: Connect
) -> None:
    """SIGKILL closes the gateway's NATS connection: its subject has no responder at
    once, so its directory entry is skipped at the next query (docs/presence.md)."""
    clients, gw_of = await spread(three_gateways, client_factory, [2, 2, 0])
    for c in clients:
        await publisher.sockets.join(c.sid, "doomed")
    assert (await publisher.sockets.count("doomed")).sockets == 4
    victim = three_gateways[1]
    victim.proc.send_signal(signal.SIGKILL)
    victim.proc.wait()
    killed = time.monotonic()
    while True:
        count = await publisher.sockets.count("doomed")
        if count.sockets == 2:
            break
        assert time.monotonic() - killed < 10, "the killed gateway's members stayed"
        await asyncio.sleep(0.01)
    gone_after_s = time.monotonic() - killed
    print(f"\nkilled gateway's members gone after {gone_after_s * 1000:.0f} ms")
    assert gone_after_s < 1.0
    page = await publisher.sockets.members("doomed")
    assert {m.socket_id for m in page.members} == {
        s for s, g in gw_of.items() if g == three_gateways[0].gateway_id
    }
    # the peers purge its entries once its heartbeats have stopped (3 × 0.5 s)
    deadline = time.monotonic() + 10
    survivor = three_gateways[0]
    metric = 'sailcast_gateway_directory_writes_total{op="purge_peer",result="ok"}'
    while survivor.metric(metric) < 1:
        assert time.monotonic() < deadline, "the dead gateway's entries were not purged"
        await asyncio.sleep(0.1)
    assert await publisher.room_queries.holders("doomed") == [survivor.gateway_id]


async def test_a_user_room_and_argument_checks(
    three_gateways: list[GatewayProcess], publisher: Publisher
) -> None:
    assert await publisher.sockets.sockets_of("nobody") == []
    assert await publisher.sockets.sockets_of(42) == []
    with pytest.raises(InvalidRoomName):
        await publisher.sockets.members("")
    with pytest.raises(SailcastUsageError, match="cursor"):
        await publisher.sockets.members("lobby", cursor="junk!")
    with pytest.raises(SailcastUsageError, match="limit"):
        await publisher.sockets.members("lobby", limit=0)


@pytest.fixture
def plain_nats() -> Iterator[EmbeddedNats]:
    server = EmbeddedNats(jetstream=False).start()
    yield server
    server.close()


async def test_without_jetstream_every_gateway_is_asked(
    plain_nats: EmbeddedNats,
    gateway_factory: Callable[..., GatewayProcess],
    prefix: str,
    client_factory: Connect,
) -> None:
    gws = [gateway_factory(f"gw{i}", nats_url=plain_nats.url) for i in range(2)]
    pub = await Publisher.connect(plain_nats.url, prefix=prefix)
    try:
        clients, gw_of = await spread(gws, client_factory, [2, 1])
        for c in clients:
            await pub.sockets.join(c.sid, "lobby")
        assert await pub.room_queries.holders("lobby") is None  # no directory
        page = await pub.sockets.members("lobby", limit=2)
        assert page.cursor is not None
        rest = await pub.sockets.members("lobby", cursor=page.cursor, limit=2)
        got = [m.socket_id for m in page.members + rest.members]
        assert got == order(gw_of, list(gw_of))
        assert rest.cursor is None
        assert (await pub.sockets.count("lobby")).sockets == 3
        assert all(gw.metric(PUTS) == 0 for gw in gws)
    finally:
        await pub.close()


async def test_sails_introspection_sync_twins_and_the_http_api(
    gateway_factory: Callable[..., GatewayProcess],
    nats_server: EmbeddedNats,
    prefix: str,
    publisher: Publisher,
    client_factory: Connect,
) -> None:
    gws = [gateway_factory(f"api{i}", api_key="k-members-1", api_port=0) for i in range(2)]
    a = await client_factory(gws[0])
    b = await client_factory(gws[1])
    user = publisher.model("user")
    await user.subscribe(a.sid, 1)
    await user.subscribe(b.sid, 1)
    await user.watch(b.sid)
    assert sorted(await user.subscribers(1)) == sorted([a.sid, b.sid])
    assert await user.watchers() == [b.sid]
    sync = SyncPublisher(nats_server.url, prefix=prefix)
    try:
        count = await asyncio.to_thread(sync.sockets.count, user.room(1))
        assert (count.sockets, count.users) == (2, 0)
        assert await asyncio.to_thread(sync.model("user").watchers) == [b.sid]
        assert await asyncio.to_thread(sync.sockets.sockets_of, "7") == []
    finally:
        sync.close()
    async with aiohttp.ClientSession(headers={"Authorization": "apikey k-members-1"}) as http:
        url = f"http://127.0.0.1:{gws[1].api_port}/api"
        async with http.post(f"{url}/members", json={"room": user.room(1), "limit": 1}) as r:
            first = await r.json()
        assert r.status == 200
        assert len(first["result"]["members"]) == 1
        assert first["result"]["members"][0]["user_id"] is None
        body = {"room": user.room(1), "cursor": first["result"]["cursor"]}
        async with http.post(f"{url}/members", json=body) as r:
            rest = (await r.json())["result"]
        assert rest["cursor"] is None
        got = {m["socket_id"] for m in first["result"]["members"] + rest["members"]}
        assert got == {a.sid, b.sid}
        async with http.post(f"{url}/count", json={"room": user.room(1)}) as r:
            assert (await r.json())["result"] == {"sockets": 2, "users": 0, "missing": []}
        async with http.post(f"{url}/sockets_of", json={"user_id": 42}) as r:
            assert (await r.json())["result"] == []
        async with http.post(f"{url}/members", json={"room": "x", "cursor": "junk!"}) as r:
            assert r.status == 400
            assert (await r.json())["error"]["field"] == "cursor"


async def test_a_failed_directory_write_does_not_fail_the_join_and_is_retried(
    three_gateways: list[GatewayProcess], publisher: Publisher, prefix: str, client_factory: Connect
) -> None:
    """The stream is lost (as a single server's memory stream is when it restarts): the
    join's write fails, the join does not; the gateway makes the stream again and
    writes the entry."""
    a = await client_factory(three_gateways[0])
    js = publisher.nats.jetstream()
    await js.delete_stream(directory_stream(prefix))
    await publisher.sockets.join(a.sid, "during")
    await publisher.sockets.broadcast("during", "hi", 1)
    await a.wait_for(lambda events: ("hi", 1) in events)
    errors = 'sailcast_gateway_directory_writes_total{op="put",result="error"}'
    assert three_gateways[0].metric(errors) >= 1
    # with the directory or without it (every gateway asked), the member is found
    assert [m.socket_id for m in (await publisher.sockets.members("during")).members] == [a.sid]
    deadline = time.monotonic() + 10
    while await publisher.room_queries.holders("during") != [three_gateways[0].gateway_id]:
        assert time.monotonic() < deadline, "the failed write was not retried"
        await asyncio.sleep(0.1)
    assert (await publisher.sockets.count("during")).sockets == 1
    # the stream made again is the one the gateways make
    info = await js.stream_info(directory_stream(prefix))
    assert info.config.max_msgs_per_subject == 1
    assert info.config.allow_direct


async def core_on_nats(url: str, prefix: str, gateway_id: str) -> Gateway:
    """A gateway core on its own real NATS connection, with the room directory, in
    this process: its sockets' identities can be set as admission sets them (the
    identity part of issue 12)."""
    settings = GatewaySettings(
        gateway_id=gateway_id, prefix=prefix, core=CoreSettings(unsubscribe_linger_s=0.05)
    )
    broker = await NatsBroker.connect(
        NatsSettings(servers=parse_servers(url)), name=f"test-{gateway_id}"
    )
    metrics = GatewayMetrics()
    directory = await open_directory(
        broker.client, prefix=prefix, gateway_id=gateway_id, replicas=1, on_write=lambda o, r: None
    )
    gw = Gateway(settings, broker, metrics, directory=directory)
    await gw.start()
    return gw


async def test_users_with_tabs_on_two_gateways_count_once(
    nats_server: EmbeddedNats, prefix: str, publisher: Publisher
) -> None:
    gws = [await core_on_nats(nats_server.url, prefix, f"core{i}") for i in range(2)]
    try:
        tabs = [
            (gws[0], "s1", "42"),
            (gws[1], "s2", "42"),
            (gws[0], "s3", "7"),
            (gws[1], "s4", None),
        ]
        for gw, sid, uid in tabs:
            await gw.socket_connected(RecordingConnection(sid))
            if uid is not None:
                gw.identities.assign(sid, Identity(uid, {"name": f"user {uid}"}))
            await publisher.sockets.join(sid, "doc:1")
        count = await publisher.sockets.count("doc:1")
        assert (count.sockets, count.users) == (4, 2)
        page = await publisher.sockets.members("doc:1")
        assert [(m.socket_id, m.user_id, m.info) for m in page.members] == [
            ("s1", "42", {"name": "user 42"}),
            ("s3", "7", {"name": "user 7"}),
            ("s2", "42", {"name": "user 42"}),
            ("s4", None, None),
        ]
        await publisher.sockets.leave("s1", "doc:1")
        count = await publisher.sockets.count("doc:1")
        assert (count.sockets, count.users) == (3, 2)  # 42 still has a tab
    finally:
        for gw in gws:
            await gw.stop()
            await gw.broker.close()


async def test_a_stream_made_anew_gets_every_entry_again(
    three_gateways: list[GatewayProcess], publisher: Publisher, prefix: str, client_factory: Connect
) -> None:
    """Entries lost with the stream while every gateway stayed connected (nothing
    failed, nothing to retry) come back within the stream check (10 s)."""
    clients, _ = await spread(three_gateways, client_factory, [1, 1, 0])
    for c in clients:
        await publisher.sockets.join(c.sid, "kept")
    js = publisher.nats.jetstream()
    await js.delete_stream(directory_stream(prefix))
    holders = [g.gateway_id for g in three_gateways[:2]]
    deadline = time.monotonic() + 25
    while await publisher.room_queries.holders("kept") != holders:
        assert time.monotonic() < deadline, "the entries were not written again"
        await asyncio.sleep(0.2)
    assert (await publisher.sockets.count("kept")).sockets == 2


async def test_a_frozen_holder_fails_the_call_unless_partial(
    three_gateways: list[GatewayProcess],
    nats_server: EmbeddedNats,
    prefix: str,
    client_factory: Connect,
) -> None:
    """A holder that does not answer (SIGSTOP: its connection stays up) is never a
    silently short list: GatewayTimeout naming it, or with partial=True `missing`."""
    pub = await Publisher.connect(nats_server.url, prefix=prefix, request_timeout_s=0.5)
    frozen = three_gateways[1]
    try:
        clients, _ = await spread(three_gateways, client_factory, [1, 1, 0])
        for c in clients:
            await pub.sockets.join(c.sid, "cold")
        frozen.proc.send_signal(signal.SIGSTOP)
        try:
            with pytest.raises(GatewayTimeout, match=frozen.gateway_id):
                await pub.sockets.count("cold")
            with pytest.raises(GatewayTimeout, match=frozen.gateway_id):
                await pub.sockets.members("cold")
            count = await pub.sockets.count("cold", partial=True)
            assert (count.sockets, count.missing) == (1, (frozen.gateway_id,))
            page = await pub.sockets.members("cold", partial=True)
            assert [m.socket_id for m in page.members] == [clients[0].sid]
            assert page.missing == (frozen.gateway_id,)
        finally:
            frozen.proc.send_signal(signal.SIGCONT)
        assert (await pub.sockets.count("cold")).sockets == 2
    finally:
        await pub.close()
