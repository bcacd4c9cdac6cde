"""The gateway core (gateway.node.Gateway) on a MemoryBroker, with recording
connections and a manual clock: no processes, no sockets, no wall-time waits.

Every test asserts what the connections received and what a worker got back, not the
calls the core made."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import orjson
import pytest

from gateway.broker.memory import MemoryBroker, MemoryBus
from gateway.metrics import GatewayMetrics
from gateway.node import SOCKET_SUBJECT_LINGER_S, Gateway
from gateway.settings import CoreSettings, GatewaySettings
from shared.control import (
    AddMembers,
    Applied,
    Disconnect,
    Done,
    ErrorCode,
    Join,
    Leave,
    LeaveAll,
    Ping,
    Pong,
    Refused,
    RemoveMembers,
    Request,
    Rooms,
    RoomsOf,
    decode_reply,
    encode_request,
)
from shared.envelope import (
    KIND_BLAST,
    KIND_BROADCAST,
    KIND_MULTI_ROOM,
    encode_args,
    encode_data,
)
from shared.errors import GatewayTimeout, TransportError
from shared.subjects import Subjects
from tests.unit.fakes import ManualClock, RecordingConnection

PREFIX = "t"
LINGER_S = 1.0
S = Subjects(PREFIX)


def received(conn: RecordingConnection) -> list[Any]:
    """The Socket.IO event arguments of every packet a connection was sent."""
    out = []
    for packet in conn.sent:
        text = packet.text
        assert text[:2] == "42"  # Engine.IO MESSAGE, Socket.IO EVENT
        out.append(orjson.loads(text[2:]))
    return out


class Cluster:
    """Gateways and a worker on one MemoryBus; one manual clock for every timer."""

    def __init__(self, stack: AsyncExitStack) -> None:
        self.bus = MemoryBus()
        self.clock = ManualClock()
        self.worker = MemoryBroker(self.bus)
        self._stack = stack
        self._inbox = 0

    async def gateway(self, gateway_id: str, **overrides: Any) -> Gateway:
        core = CoreSettings(unsubscribe_linger_s=LINGER_S, **overrides)
        settings = GatewaySettings(gateway_id=gateway_id, prefix=PREFIX, core=core)
        gw = Gateway(
            settings,
            MemoryBroker(self.bus),
            GatewayMetrics(),
            scheduler=self.clock,
            clock=self.clock,
        )
        await gw.start()
        self._stack.push_async_callback(gw.stop)
        await settle()  # peers answer the hello
        return gw

    async def connect(self, gw: Gateway, sid: str) -> RecordingConnection:
        conn = RecordingConnection(sid)
        await gw.socket_connected(conn)
        return conn

    async def ask(self, sid: str, req: Request) -> Any:
        body = await self.worker.request(S.socket(sid), encode_request(req), timeout=1.0)
        return decode_reply(body, RoomsOf if isinstance(req, Rooms) else Done)

    async def ask_all(self, req: Request, answers: int) -> list[Applied | Refused]:
        """Publish on gw.all and collect `answers` replies, as the publisher does."""
        self._inbox += 1
        inbox = f"_TEST.{self._inbox}"
        got: list[Applied | Refused] = []
        done = asyncio.Event()

        def collect(subject: bytes, reply: bytes, data: bytes, headers: bytes | None) -> None:
            got.append(decode_reply(data, Applied))
            if len(got) >= answers:
                done.set()

        listener = MemoryBroker(self.bus)
        listener.set_handler(collect)
        await listener.subscribe(inbox)
        await self.worker.publish(S.gateways, encode_request(req), reply=inbox)
        await asyncio.wait_for(done.wait(), 1.0)
        await listener.close()
        return sorted(got, key=lambda r: r.gw or "")

    async def broadcast(
        self, rooms: list[str], event: str, data: Any, omit: tuple[str, ...] = ()
    ) -> None:
        body = encode_data(
            KIND_BROADCAST, encode_args(event, data), ts=time.time(), rooms=rooms, omit=omit
        )
        for room in rooms:
            await self.worker.publish(S.room(room), body)

    async def multi_room(
        self, rooms: list[str], event: str, data: Any, omit: tuple[str, ...] = ()
    ) -> None:
        """The many-room form: one message on the multi-room subject."""
        body = encode_data(
            KIND_MULTI_ROOM, encode_args(event, data), ts=time.time(), rooms=rooms, omit=omit
        )
        await self.worker.publish(S.multi_room, body)

    async def blast(self, event: str, data: Any, omit: tuple[str, ...] = ()) -> None:
        body = encode_data(KIND_BLAST, encode_args(event, data), ts=time.time(), omit=omit)
        await self.worker.publish(S.blast, body)

    def subscribed(self, subject: str) -> bool:
        return self.bus.interest(subject)

    async def linger(self, seconds: float = LINGER_S) -> None:
        self.clock.advance(seconds)
        await settle()


async def settle() -> None:
    """Let spawned tasks (replies, unsubscribes) run; no wall time passes."""
    for _ in range(10):
        await asyncio.sleep(0)


def memory(gw: Gateway) -> MemoryBroker:
    assert isinstance(gw.broker, MemoryBroker)
    return gw.broker


def metric(gw: Gateway, name: str, **labels: str) -> float:
    return gw.metrics.registry.get_sample_value(name, labels) or 0.0


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    async with AsyncExitStack() as stack:
        yield Cluster(stack)


# -- join, leave, fanout -----------------------------------------------------------------


async def test_a_joined_socket_receives_room_messages_and_the_others_do_not(
    cluster: Cluster,
) -> None:
    gw = await cluster.gateway("gwa")
    a, b = await cluster.connect(gw, "a"), await cluster.connect(gw, "b")
    assert not cluster.subscribed(S.room("lobby"))
    assert await cluster.ask("a", Join(("lobby",))) == Done()
    assert cluster.subscribed(S.room("lobby"))  # before the reply: nothing is missed
    await cluster.broadcast(["lobby"], "chat", {"text": "hi"})
    assert received(a) == [["chat", {"text": "hi"}]]
    assert received(b) == []
    assert await cluster.ask("a", Rooms()) == RoomsOf(("a", "lobby"))


async def test_a_socket_is_in_its_own_id_room(cluster: Cluster) -> None:
    gw = await cluster.gateway("gwa")
    a, b = await cluster.connect(gw, "a"), await cluster.connect(gw, "b")
    await cluster.broadcast(["b"], "direct", 1)
    assert received(a) == []
    assert received(b) == [["direct", 1]]


async def test_leave_stops_delivery_and_the_interest_lingers_then_goes(cluster: Cluster) -> None:
    gw = await cluster.gateway("gwa")
    a = await cluster.connect(gw, "a")
    await cluster.ask("a", Join(("lobby",)))
    assert await cluster.ask("a", Leave(("lobby",))) == Done()
    await cluster.broadcast(["lobby"], "chat", 1)
    assert received(a) == []
    await cluster.linger(LINGER_S / 2)
    assert cluster.subscribed(S.room("lobby"))  # a quick re-join would not churn NATS
    await cluster.linger(LINGER_S / 2)
    assert not cluster.subscribed(S.room("lobby"))
    assert gw.room_interest.count == 1  # the own-id room only


async def test_a_rejoin_within_the_linger_keeps_the_subscription(cluster: Cluster) -> None:
    gw = await cluster.gateway("gwa")
    a = await cluster.connect(gw, "a")
    await cluster.ask("a", Join(("lobby",)))
    await cluster.ask("a", Leave(("lobby",)))
    await cluster.linger(LINGER_S / 2)
    await cluster.ask("a", Join(("lobby",)))
    await cluster.linger(LINGER_S * 3)
    assert cluster.subscribed(S.room("lobby"))
    await cluster.broadcast(["lobby"], "chat", 2)
    assert received(a) == [["chat", 2]]


async def test_a_socket_in_several_target_rooms_gets_a_broadcast_once(cluster: Cluster) -> None:
    gw = await cluster.gateway("gwa")
    a, b, c = [await cluster.connect(gw, s) for s in "abc"]
    await cluster.ask("a", Join(("lobby", "side", "vip")))
    await cluster.ask("b", Join(("side",)))
    await cluster.ask("c", Join(("vip", "side")))
    await cluster.broadcast(["lobby", "side", "vip"], "news", 1)
    assert received(a) == [["news", 1]]
    assert received(b) == [["news", 1]]
    assert received(c) == [["news", 1]]


async def test_a_multi_room_broadcast_reaches_each_member_of_any_room_once(
    cluster: Cluster,
) -> None:
    gwa, gwb = await cluster.gateway("gwa"), await cluster.gateway("gwb")
    a, b = await cluster.connect(gwa, "a"), await cluster.connect(gwa, "b")
    c, d = await cluster.connect(gwb, "c"), await cluster.connect(gwb, "d")
    rooms = [f"r{i}" for i in range(20)]
    await cluster.ask("a", Join(tuple(rooms)))
    await cluster.ask("b", Join(("r19",)))
    await cluster.ask("c", Join(("r3", "r7", "other")))
    await cluster.ask("d", Join(("other",)))
    await cluster.multi_room(rooms, "news", 1)
    assert received(a) == [["news", 1]]
    assert received(b) == [["news", 1]]
    assert received(c) == [["news", 1]]
    assert received(d) == []
    assert metric(gwb, "sailcast_gateway_broker_messages_received_total", kind="multi_room") == 1


async def test_a_multi_room_broadcast_leaves_the_omitted_out(cluster: Cluster) -> None:
    gw = await cluster.gateway("gwa")
    a, b = await cluster.connect(gw, "a"), await cluster.connect(gw, "b")
    await cluster.ask("a", Join(("x", "y")))
    await cluster.ask("b", Join(("y",)))
    await cluster.multi_room(["x", "y"], "chat", 1, omit=("a",))
    assert received(a) == []
    assert received(b) == [["chat", 1]]


async def test_a_multi_room_broadcast_needs_no_room_subscription(cluster: Cluster) -> None:
    """Every gateway reads the multi-room subject: a join is in effect for it at once."""
    gw = await cluster.gateway("gwa")
    a = await cluster.connect(gw, "a")
    assert cluster.subscribed(S.multi_room)
    await cluster.ask("a", Join(("late",)))
    await cluster.multi_room(["late"], "chat", 2)
    assert received(a) == [["chat", 2]]


async def test_another_kind_on_the_multi_room_subject_is_dropped_as_misrouted(
    cluster: Cluster,
) -> None:
    gw = await cluster.gateway("gwa")
    a = await cluster.connect(gw, "a")
    for kind in (KIND_BROADCAST, KIND_BLAST):
        body = encode_data(kind, encode_args("x", 1), ts=time.time(), rooms=["a"])
        await cluster.worker.publish(S.multi_room, body)
    assert received(a) == []
    assert metric(gw, "sailcast_gateway_drops_total", reason="misrouted") == 2


async def test_omitted_sockets_are_left_out(cluster: Cluster) -> None:
    gw = await cluster.gateway("gwa")
    a, b = await cluster.connect(gw, "a"), await cluster.connect(gw, "b")
    await cluster.ask("a", Join(("lobby",)))
    await cluster.ask("b", Join(("lobby",)))
    await cluster.broadcast(["lobby"], "chat", 1, omit=("a",))
    assert received(a) == []
    assert received(b) == [["chat", 1]]


async def test_a_blast_reaches_every_socket_of_every_gateway_but_the_omitted(
    cluster: Cluster,
) -> None:
    gwa, gwb = await cluster.gateway("gwa"), await cluster.gateway("gwb")
    a, b = await cluster.connect(gwa, "a"), await cluster.connect(gwa, "b")
    c = await cluster.connect(gwb, "c")
    await cluster.blast("all", {"x": 1}, omit=("b",))
    assert received(a) == [["all", {"x": 1}]]
    assert received(b) == []
    assert received(c) == [["all", {"x": 1}]]


async def test_a_room_message_on_the_blast_subject_is_dropped_as_misrouted(
    cluster: Cluster,
) -> None:
    gw = await cluster.gateway("gwa")
    a = await cluster.connect(gw, "a")
    body = encode_data(KIND_BROADCAST, encode_args("x", 1), ts=time.time(), rooms=["a"])
    await cluster.worker.publish(S.blast, body)
    assert received(a) == []
    assert metric(gw, "sailcast_gateway_drops_total", reason="misrouted") == 1


async def test_closed_connections_are_skipped(cluster: Cluster) -> None:
    gw = await cluster.gateway("gwa")
    a, b = await cluster.connect(gw, "a"), await cluster.connect(gw, "b")
    await cluster.ask("a", Join(("lobby",)))
    await cluster.ask("b", Join(("lobby",)))
    await b.going_away()
    await cluster.broadcast(["lobby"], "chat", 1)
    assert received(a) == [["chat", 1]]
    assert received(b) == []


async def test_a_join_over_the_room_limit_is_refused_whole(cluster: Cluster) -> None:
    gw = await cluster.gateway("gwa", max_rooms_per_socket=3)
    await cluster.connect(gw, "a")
    refused = await cluster.ask("a", Join(("r1", "r2", "r3")))
    assert isinstance(refused, Refused)
    assert refused.error is ErrorCode.LIMIT
    assert await cluster.ask("a", Rooms()) == RoomsOf(("a",))
    assert not cluster.subscribed(S.room("r1"))


# -- socket requests ---------------------------------------------------------------------


async def test_disconnect_request_disconnects_the_connection(cluster: Cluster) -> None:
    gw = await cluster.gateway("gwa")
    a = await cluster.connect(gw, "a")
    assert await cluster.ask("a", Disconnect()) == Done()
    await settle()
    assert a.disconnected


async def test_a_gone_socket_answers_no_such_socket_then_nobody_answers(
    cluster: Cluster,
) -> None:
    gw = await cluster.gateway("gwa")
    await cluster.connect(gw, "a")
    await cluster.ask("a", Join(("lobby",)))
    await gw.socket_disconnected("a")
    await cluster.linger(0)
    assert not cluster.subscribed(S.room("a"))  # its own-id room goes at once, no linger
    assert await cluster.ask("a", Rooms()) == Refused(ErrorCode.NO_SUCH_SOCKET)
    await cluster.linger(SOCKET_SUBJECT_LINGER_S)
    with pytest.raises(TransportError, match="nobody answers"):
        await cluster.ask("a", Rooms())
    await cluster.linger(LINGER_S)
    assert not cluster.subscribed(S.room("lobby"))
    fixed = 5  # blast, mr (multi-room), gw.all, gw.hb, gw.id.<id>
    assert gw.metrics.registry.get_sample_value("sailcast_gateway_broker_subscriptions") == fixed


async def test_a_socket_that_reconnects_with_its_id_within_the_linger_keeps_its_subject(
    cluster: Cluster,
) -> None:
    gw = await cluster.gateway("gwa")
    await cluster.connect(gw, "a")
    await gw.socket_disconnected("a")
    await cluster.linger(SOCKET_SUBJECT_LINGER_S / 2)
    await cluster.connect(gw, "a")
    await cluster.linger(SOCKET_SUBJECT_LINGER_S * 2)
    assert await cluster.ask("a", Rooms()) == RoomsOf(("a",))


# -- cluster operations ------------------------------------------------------------------


async def test_room_membership_operations_apply_on_every_gateway(cluster: Cluster) -> None:
    gwa, gwb = await cluster.gateway("gwa"), await cluster.gateway("gwb")
    a, b = await cluster.connect(gwa, "a"), await cluster.connect(gwb, "b")
    c = await cluster.connect(gwb, "c")
    await cluster.ask("a", Join(("src",)))
    await cluster.ask("b", Join(("src",)))

    answers = await cluster.ask_all(AddMembers("src", ("dst", "more")), answers=2)
    assert answers == [
        Applied("gwa", ("gwa", "gwb"), n=1),
        Applied("gwb", ("gwa", "gwb"), n=1),
    ]
    await cluster.broadcast(["dst"], "m", 1)
    assert received(a) == received(b) == [["m", 1]]
    assert received(c) == []

    await cluster.ask_all(RemoveMembers("src", ("dst",)), answers=2)
    assert await cluster.ask("a", Rooms()) == RoomsOf(("a", "more", "src"))

    answers = await cluster.ask_all(LeaveAll("src"), answers=2)
    assert [x.n for x in answers if isinstance(x, Applied)] == [1, 1]
    assert await cluster.ask("a", Rooms()) == RoomsOf(("a",))
    assert await cluster.ask("b", Rooms()) == RoomsOf(("b",))

    assert await cluster.ask_all(Ping(), answers=2) == [
        Applied("gwa", ("gwa", "gwb")),
        Applied("gwb", ("gwa", "gwb")),
    ]


async def test_addm_reports_joins_over_the_room_limit(cluster: Cluster) -> None:
    gw = await cluster.gateway("gwa", max_rooms_per_socket=3)
    await cluster.connect(gw, "a")
    await cluster.ask("a", Join(("src",)))
    [answer] = await cluster.ask_all(AddMembers("src", ("x", "y")), answers=1)
    assert answer == Applied("gwa", ("gwa",), n=1, refused=1)
    assert await cluster.ask("a", Rooms()) == RoomsOf(("a", "src", "x"))


async def test_a_stopped_peer_leaves_the_peer_list_and_a_silent_one_expires(
    cluster: Cluster,
) -> None:
    gwa = await cluster.gateway("gwa", heartbeat_interval_s=2.0)
    gwb = await cluster.gateway("gwb")
    gwc = await cluster.gateway("gwc")
    assert gwa.peers.alive() == ["gwa", "gwb", "gwc"]
    await gwb.stop()
    assert gwa.peers.alive() == ["gwa", "gwc"]
    await memory(gwc).disconnect()  # no more heartbeats from it
    cluster.clock.advance(6.1)
    assert gwa.peers.alive() == ["gwa"]


async def test_the_direct_ping_answers_with_the_gateway_id(cluster: Cluster) -> None:
    await cluster.gateway("gwa")
    body = await cluster.worker.request(S.gateway("gwa"), encode_request(Ping()), timeout=1.0)
    assert decode_reply(body, Pong) == Pong("gwa")


# -- rollback ----------------------------------------------------------------------------


async def test_a_join_whose_subscribe_fails_is_rolled_back(cluster: Cluster) -> None:
    gw = await cluster.gateway("gwa")
    a, b = await cluster.connect(gw, "a"), await cluster.connect(gw, "b")
    memory(gw).fail_subscribe = lambda subject: subject == S.room("bad")
    refused = await cluster.ask("a", Join(("good", "bad")))
    assert isinstance(refused, Refused)
    assert refused.error is ErrorCode.INTERNAL
    assert await cluster.ask("a", Rooms()) == RoomsOf(("a",))  # neither room: all or none
    await cluster.broadcast(["good"], "m", 1)
    await cluster.broadcast(["bad"], "m", 2)
    assert received(a) == []
    await cluster.linger()
    assert not cluster.subscribed(S.room("good"))
    assert not cluster.subscribed(S.room("bad"))
    assert gw.rooms.room_count == 2  # the own-id rooms only
    # the failure is not sticky, and another socket was never affected
    memory(gw).fail_subscribe = lambda subject: False
    assert await cluster.ask("b", Join(("bad",))) == Done()
    await cluster.broadcast(["bad"], "m", 3)
    assert received(b) == [["m", 3]]


async def test_addm_whose_subscribe_fails_is_rolled_back_and_refused(cluster: Cluster) -> None:
    gw = await cluster.gateway("gwa")
    await cluster.connect(gw, "a")
    await cluster.ask("a", Join(("src",)))
    memory(gw).fail_subscribe = lambda subject: subject == S.room("dst")
    [answer] = await cluster.ask_all(AddMembers("src", ("dst",)), answers=1)
    assert isinstance(answer, Refused)
    assert (answer.error, answer.gw, answer.peers) == (ErrorCode.INTERNAL, "gwa", ("gwa",))
    assert await cluster.ask("a", Rooms()) == RoomsOf(("a", "src"))


async def test_a_socket_whose_subject_cannot_be_subscribed_is_not_registered(
    cluster: Cluster,
) -> None:
    gw = await cluster.gateway("gwa")
    memory(gw).fail_subscribe = lambda subject: subject == S.room("a")
    with pytest.raises(TransportError):
        await cluster.connect(gw, "a")
    assert gw.rooms.socket_count == 0
    assert gw.connection("a") is None
    await cluster.linger(SOCKET_SUBJECT_LINGER_S)
    assert not cluster.subscribed(S.socket("a"))


# -- malformed input ---------------------------------------------------------------------


async def test_malformed_messages_are_counted_and_never_fatal(cluster: Cluster) -> None:
    gw = await cluster.gateway("gwa")
    a = await cluster.connect(gw, "a")
    await cluster.ask("a", Join(("lobby",)))
    for junk in (b"", b"not json", b'{"v":1,"k":"bc","ts":1}\n["e"]', b"\xff", b"{}\n{}"):
        await cluster.worker.publish(S.room("lobby"), junk)
    await cluster.worker.publish(S.blast, b"[1,2")
    await cluster.worker.publish(S.heartbeat, b"{nope")
    assert metric(gw, "sailcast_gateway_drops_total", reason="malformed") == 7

    for body, code in (
        (b"garbage", ErrorCode.BAD_REQUEST),
        (b'{"v":1,"k":"join","rooms":"lobby"}', ErrorCode.BAD_REQUEST),
        (b'{"v":1,"k":"teleport"}', ErrorCode.UNKNOWN_KIND),
        (encode_request(LeaveAll("x")), ErrorCode.UNKNOWN_KIND),  # not for one socket
    ):
        reply = await cluster.worker.request(S.socket("a"), body, timeout=1.0)
        refusal = decode_reply(reply, Done)
        assert isinstance(refusal, Refused)
        assert refusal.error is code
    [refused] = await cluster.ask_all(Join(("x",)), answers=1)  # not for every gateway
    assert refused == Refused(ErrorCode.UNKNOWN_KIND, "join", "gwa", ("gwa",))
    await cluster.worker.publish(S.gateways, b'{"v":1,"k":"addm","src":5,"dst":"x"}')
    await settle()

    await cluster.broadcast(["lobby"], "still", "alive")
    assert received(a) == [["still", "alive"]]
    assert await cluster.ask("a", Rooms()) == RoomsOf(("a", "lobby"))
    assert gw.ready


# -- connection state --------------------------------------------------------------------


async def test_broker_events_drive_the_connected_gauge_and_readiness(cluster: Cluster) -> None:
    gw = await cluster.gateway("gwa", ready_check_interval_s=2.0)
    assert gw.ready
    broker = memory(gw)
    await broker.disconnect()
    assert metric(gw, "sailcast_gateway_nats_connected") == 0
    assert not gw.ready
    cluster.clock.advance(60)  # the last round trip is long stale
    await broker.reconnect()
    await settle()
    assert metric(gw, "sailcast_gateway_nats_connected") == 1
    assert metric(gw, "sailcast_gateway_nats_reconnects_total") == 1
    assert gw.ready  # the reconnect checked the path at once


async def test_memory_broker_conformance_request_errors(cluster: Cluster) -> None:
    """No responders and no answer map to the errors NatsBroker raises."""
    silent = MemoryBroker(cluster.bus)
    await silent.subscribe("t.silent")
    with pytest.raises(TransportError, match="nobody answers"):
        await cluster.worker.request("t.nobody", b"x", timeout=0.5)
    with pytest.raises(GatewayTimeout):
        await cluster.worker.request("t.silent", b"x", timeout=0.01)
