"""Presence events through the gateway core (gateway.node + gateway.presence) on a
MemoryBroker: several gateways, recording connections, one manual clock. Sockets get
user ids the way admission gives them (`Gateway.socket_connected(identity=...)`, which
also puts them in their reserved user room); anonymous sockets
are their own key. Asserts what each connection received."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import orjson
import pytest

from gateway.broker.memory import MemoryBroker, MemoryBus
from gateway.identities import ANONYMOUS, Identity
from gateway.metrics import GatewayMetrics
from gateway.node import Gateway
from gateway.settings import CoreSettings, GatewaySettings, PresenceSettings
from shared.control import (
    AddMembers,
    Done,
    Join,
    Leave,
    RemoveMembers,
    decode_reply,
    encode_request,
)
from shared.subjects import Subjects
from tests.unit.fakes import ManualClock, RecordingConnection

PREFIX = "t"
S = Subjects(PREFIX)
WINDOW_S = 0.2
HEARTBEAT_S = 0.5
COUNT_S = 1.0


def events(conn: RecordingConnection, name: str) -> list[Any]:
    out = []
    for packet in conn.sent:
        args = orjson.loads(packet.text[2:])
        if args[0] == name:
            out.append(args[1])
    return out


def joined_users(conn: RecordingConnection, room: str) -> list[str | None]:
    return [j["user_id"] for e in events(conn, "presence") if e["room"] == room for j in e["joins"]]


def left_users(conn: RecordingConnection, room: str) -> list[str | None]:
    return [
        j["user_id"] for e in events(conn, "presence") if e["room"] == room for j in e["leaves"]
    ]


def view(conn: RecordingConnection, room: str) -> dict[str, Any]:
    """The member list a client builds: the last state, then every diff after it."""
    members: dict[str, Any] = {}
    for packet in conn.sent:
        name, payload = orjson.loads(packet.text[2:])
        if payload.get("room") != room:
            continue
        if name == "presence_state":
            members = {_key(m): m["info"] for m in payload["members"]}
        elif name == "presence":
            for m in payload["leaves"]:
                members.pop(_key(m), None)
            for m in payload["joins"]:
                members[_key(m)] = m["info"]
    return members


def _key(m: dict[str, Any]) -> str:
    return f"u:{m['user_id']}" if m["user_id"] is not None else f"s:{m['socket_id']}"


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


class Cluster:
    def __init__(self, stack: AsyncExitStack) -> None:
        self.bus = MemoryBus()
        self.clock = ManualClock()
        self.worker = MemoryBroker(self.bus)
        self._stack = stack
        self.beating: list[Gateway] = []
        """Gateways whose heartbeats the manual clock's windows carry (their own loop
        sleeps in wall time)."""

    async def gateway(self, gateway_id: str, **presence: Any) -> Gateway:
        options = {"presence": "chat:*,*", "presence_count_only": "stadium:*"} | presence
        settings = GatewaySettings(
            gateway_id=gateway_id,
            prefix=PREFIX,
            core=CoreSettings(unsubscribe_linger_s=1.0, heartbeat_interval_s=HEARTBEAT_S),
            presence=PresenceSettings(
                presence_interval_s=WINDOW_S, presence_count_interval_s=COUNT_S, **options
            ),
        )
        gw = Gateway(
            settings,
            MemoryBroker(self.bus),
            GatewayMetrics(),
            scheduler=self.clock,
            clock=self.clock,
        )
        await gw.start()
        self._stack.push_async_callback(gw.stop)
        self.beating.append(gw)
        await settle()
        return gw

    async def connect(self, gw: Gateway, sid: str, user: str | None = None) -> RecordingConnection:
        conn = RecordingConnection(sid)
        identity = Identity(user, {"name": f"user {user}"}) if user is not None else ANONYMOUS
        await gw.socket_connected(conn, identity=identity)  # as admission does
        return conn

    async def join(self, sid: str, *rooms: str) -> None:
        body = await self.worker.request(S.socket(sid), encode_request(Join(rooms)), timeout=1.0)
        assert decode_reply(body, Done) == Done()

    async def leave(self, sid: str, *rooms: str) -> None:
        body = await self.worker.request(S.socket(sid), encode_request(Leave(rooms)), timeout=1.0)
        assert decode_reply(body, Done) == Done()

    async def windows(self, n: int = 4) -> None:
        """Let n coalescing windows pass (states, answers and diffs travel)."""
        for _ in range(n):
            for gw in self.beating:
                await gw.broker.publish(S.heartbeat, gw.peers.beat())
            self.clock.advance(WINDOW_S)
            await settle()


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    async with AsyncExitStack() as stack:
        yield Cluster(stack)


def metric(gw: Gateway, name: str, **labels: str) -> float:
    return gw.metrics.registry.get_sample_value(name, labels) or 0.0


async def test_a_users_second_tab_on_another_gateway_is_not_a_second_join(
    cluster: Cluster,
) -> None:
    a, b = await cluster.gateway("gwa"), await cluster.gateway("gwb")
    a1 = await cluster.connect(a, "a1", user="1")
    b1 = await cluster.connect(b, "b1", user="2")
    await cluster.join("a1", "chat:1")
    await cluster.windows()
    await cluster.join("b1", "chat:1")
    await cluster.windows()
    assert events(a1, "presence_state") == [
        {"room": "chat:1", "members": [{"user_id": "1", "info": {"name": "user 1"}}]}
    ]
    assert joined_users(a1, "chat:1") == ["2"]
    assert view(b1, "chat:1") == {"u:1": {"name": "user 1"}, "u:2": {"name": "user 2"}}

    b2 = await cluster.connect(b, "b2", user="1")  # user 1's second tab, on gwb
    await cluster.join("b2", "chat:1")
    await cluster.windows()
    assert joined_users(a1, "chat:1") == ["2"]
    assert joined_users(b1, "chat:1") == ["1"]  # from gwa's answer, not from the tab
    assert set(view(b2, "chat:1")) == {"u:1", "u:2"}

    await cluster.leave("a1", "chat:1")  # one tab of user 1 goes: not a leave
    await cluster.windows()
    assert left_users(b1, "chat:1") == []
    await b.socket_disconnected("b2")  # the last one: now it is
    await cluster.windows()
    assert left_users(b1, "chat:1") == ["1"]
    assert view(b1, "chat:1") == {"u:2": {"name": "user 2"}}
    assert metric(b, "sailcast_gateway_presence_events_total", kind="leave") == 1
    assert metric(b, "sailcast_gateway_presence_deltas_total", direction="received") >= 2


async def test_anonymous_sockets_are_their_own_key(cluster: Cluster) -> None:
    a, b = await cluster.gateway("gwa"), await cluster.gateway("gwb")
    x = await cluster.connect(a, "x")
    y = await cluster.connect(b, "y")
    await cluster.join("x", "chat:2")
    await cluster.join("y", "chat:2")
    await cluster.windows()
    expected = {"s:x": None, "s:y": None}
    assert view(x, "chat:2") == view(y, "chat:2") == expected
    assert {"user_id": None, "socket_id": "y", "info": None} in [
        j for e in events(x, "presence") for j in e["joins"]
    ]


async def test_joins_and_leaves_within_one_window_are_coalesced(cluster: Cluster) -> None:
    a = await cluster.gateway("gwa")
    watcher = await cluster.connect(a, "w", user="w")
    await cluster.join("w", "chat:3")
    await cluster.windows()
    for n in range(5):  # churn inside one window: nobody stays
        await cluster.connect(a, f"c{n}", user=f"c{n}")
        await cluster.join(f"c{n}", "chat:3")
        await cluster.leave(f"c{n}", "chat:3")
    await cluster.connect(a, "stay", user="s")
    await cluster.join("stay", "chat:3")
    await cluster.windows()
    assert events(watcher, "presence") == [
        {"room": "chat:3", "joins": [{"user_id": "s", "info": {"name": "user s"}}], "leaves": []}
    ]
    # never published: 5 joins and 5 leaves cancelled here
    assert metric(a, "sailcast_gateway_presence_coalesced_total") == 10
    # across gateways, a remote join and leave inside one window cancel out
    b = await cluster.gateway("gwb")
    await cluster.connect(b, "r", user="r")
    await cluster.join("r", "chat:3")
    cluster.clock.advance(WINDOW_S)
    await settle()  # gwb published r's join; gwa's window is still open
    await b.socket_disconnected("r")
    assert b.presence is not None
    b.presence.flush()  # gwb's window ends first: the leave reaches gwa in the same one
    await settle()
    await cluster.windows()
    assert "r" not in joined_users(watcher, "chat:3")
    assert metric(a, "sailcast_gateway_presence_coalesced_total") == 12


async def test_count_only_rooms_get_counts_not_members(cluster: Cluster) -> None:
    a, b = await cluster.gateway("gwa"), await cluster.gateway("gwb")
    s1 = await cluster.connect(a, "s1", user="1")
    await cluster.connect(a, "s2")  # anonymous: counted as a socket, not a user
    s3 = await cluster.connect(b, "s3", user="1")  # user 1 again, elsewhere
    for sid in ("s1", "s2", "s3"):
        await cluster.join(sid, "stadium:1")
    await cluster.windows()
    await cluster.windows(int(COUNT_S / WINDOW_S) + 2)
    assert events(s1, "presence") == events(s1, "presence_state") == []
    assert events(s1, "presence_count")[-1] == {"room": "stadium:1", "sockets": 3, "users": 1}
    assert events(s3, "presence_count")[-1] == {"room": "stadium:1", "sockets": 3, "users": 1}
    before = len(events(s1, "presence_count"))
    await a.socket_disconnected("s2")
    await cluster.windows(int(2 * COUNT_S / WINDOW_S))  # within one count interval or two
    assert events(s1, "presence_count")[before:] == [
        {"room": "stadium:1", "sockets": 2, "users": 1}
    ]
    await cluster.windows(int(2 * COUNT_S / WINDOW_S))  # unchanged: nothing more
    assert len(events(s1, "presence_count")) == before + 1


async def test_a_dead_gateways_users_leave_within_the_bound(cluster: Cluster) -> None:
    a, b = await cluster.gateway("gwa"), await cluster.gateway("gwb")
    w = await cluster.connect(a, "w", user="w")
    await cluster.connect(b, "v", user="v")
    await cluster.join("w", "chat:4")
    await cluster.join("v", "chat:4")
    await cluster.windows()
    assert "v" in joined_users(w, "chat:4")
    assert isinstance(b.broker, MemoryBroker)
    await b.broker.close()  # gone without a word: no `down`, no more heartbeats
    cluster.beating.remove(b)
    waited = 0.0
    while "v" not in left_users(w, "chat:4"):
        await cluster.windows(1)
        waited += WINDOW_S
        assert waited <= 4 * HEARTBEAT_S + 2 * WINDOW_S, "the dead gateway's user never left"


async def test_reserved_and_non_presence_rooms_have_no_events(cluster: Cluster) -> None:
    a = await cluster.gateway("gwa", presence="chat:*")
    x = await cluster.connect(a, "x", user="1")
    await cluster.connect(a, "y", user="2")
    await a._join_all("x", ["sailcast:user:1", "lobby"])
    await a._join_all("y", ["sailcast:user:2", "lobby", "x"])  # x: another socket's own room
    await cluster.windows()
    assert x.sent == []
    assert a.presence is not None
    assert a.presence.rooms == {}


async def test_a_reconnect_resends_every_state(cluster: Cluster) -> None:
    a, b = await cluster.gateway("gwa"), await cluster.gateway("gwb")
    w = await cluster.connect(a, "w", user="w")
    await cluster.connect(b, "v", user="v")
    await cluster.join("w", "chat:5")
    await cluster.join("v", "chat:5")
    await cluster.windows()
    assert isinstance(b.broker, MemoryBroker)
    await b.broker.disconnect()
    await cluster.connect(b, "v2", user="v2")
    await b._join_all("v2", ["chat:5"])  # its delta is lost with the connection
    await cluster.windows()
    assert "v2" not in joined_users(w, "chat:5")
    await b.broker.reconnect()
    await cluster.windows()
    assert view(w, "chat:5") == {
        "u:w": {"name": "user w"},
        "u:v": {"name": "user v"},
        "u:v2": {"name": "user v2"},
    }


async def test_a_gateway_shutting_down_is_dropped_at_the_next_sweep(cluster: Cluster) -> None:
    a, b = await cluster.gateway("gwa"), await cluster.gateway("gwb")
    w = await cluster.connect(a, "w", user="w")
    await cluster.connect(b, "v", user="v")
    await cluster.join("w", "chat:6")
    await cluster.join("v", "chat:6")
    await cluster.windows()
    cluster.beating.remove(b)
    await b.stop()  # says `down`: no waiting for the heartbeats' TTL
    await cluster.windows(int((HEARTBEAT_S + WINDOW_S) / WINDOW_S) + 1)
    assert left_users(w, "chat:6") == ["v"]


async def test_cluster_wide_membership_operations_are_presence_changes(cluster: Cluster) -> None:
    a, b = await cluster.gateway("gwa"), await cluster.gateway("gwb")
    w = await cluster.connect(a, "w", user="w")
    await cluster.join("w", "chat:7")
    await cluster.connect(a, "x", user="x")
    await cluster.connect(b, "y", user="y")
    await cluster.join("x", "team")
    await cluster.join("y", "team")
    await cluster.windows()
    for gw in (a, b):  # what `add_room_members_to_rooms("team", "chat:7")` asks each
        await gw._apply_cluster_request(AddMembers("team", ("chat:7",)))
    await cluster.windows()
    assert view(w, "chat:7") == {
        "u:w": {"name": "user w"},
        "u:x": {"name": "user x"},
        "u:y": {"name": "user y"},
    }
    for gw in (a, b):
        await gw._apply_cluster_request(RemoveMembers("team", ("chat:7",)))
    await cluster.windows()
    assert view(w, "chat:7") == {"u:w": {"name": "user w"}}


async def test_a_lost_last_delta_is_repaired_by_the_mark_after_it(cluster: Cluster) -> None:
    a, b = await cluster.gateway("gwa"), await cluster.gateway("gwb")
    w = await cluster.connect(a, "w", user="w")
    await cluster.connect(b, "v", user="v")
    await cluster.join("w", "chat:8")
    await cluster.join("v", "chat:8")
    await cluster.windows(int(2 * HEARTBEAT_S / WINDOW_S) + 2)  # marks of the start go out
    assert a.presence is not None
    receive = a.presence.on_message
    lost: list[bytes] = []

    def lossy(room: str, data: bytes) -> None:  # NATS drops gwb's next message to gwa
        if not lost and room == "chat:8":
            lost.append(data)
            return
        receive(room, data)

    a.presence.on_message = lossy  # type: ignore[method-assign]
    await cluster.connect(b, "v2", user="v2")
    await cluster.join("v2", "chat:8")  # gwb's delta saying so is lost; the room goes quiet
    await cluster.windows(1)
    assert lost
    assert "v2" not in joined_users(w, "chat:8")
    await cluster.windows(int(3 * HEARTBEAT_S / WINDOW_S) + 3)
    assert "v2" in joined_users(w, "chat:8")
