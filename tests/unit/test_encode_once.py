"""Encode once (issue 2 #10): one serialization per publish whatever the number of
rooms, one Engine.IO packet and one websocket frame per message whatever the number of
recipients. Checked by object identity and by counting encodes."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from gateway.engine import event_packet
from gateway.engine.frames import EventPacket
from gateway.fanout import Fanout
from publisher.sockets import Sockets
from shared.envelope import KIND_MULTI_ROOM, MULTI_ROOM_MIN_ROOMS, decode_data
from shared.subjects import Subjects
from tests.unit.engine_kit import websocket_connection
from tests.unit.fakes import RecordingConnection


def test_a_broadcast_to_many_rooms_is_serialized_once() -> None:
    pub = SimpleNamespace(subjects=Subjects("t"), max_payload_bytes=1 << 20)
    sockets = Sockets(pub)
    pairs = sockets.prepare_broadcast(["a", "b.c", "d e"], "chat", {"text": "hi"})
    assert len({subject for subject, _, _ in pairs}) == 3
    assert len({id(body) for _, body, _ in pairs}) == 1  # one bytes object for every subject
    assert decode_data(pairs[0][1]).rooms == ("a", "b.c", "d e")


def test_a_broadcast_to_many_rooms_is_one_message_naming_each_room_once() -> None:
    """From MULTI_ROOM_MIN_ROOMS rooms on: one body on the multi-room subject, so the
    bytes grow as R, not R^2 (issue 18 #7); below it, a copy per room as before."""
    pub = SimpleNamespace(subjects=Subjects("t"), max_payload_bytes=1 << 20)
    sockets = Sockets(pub)
    below = [f"room{i}" for i in range(MULTI_ROOM_MIN_ROOMS - 1)]
    assert [s for s, _, _ in sockets.prepare_broadcast(below, "e", 1)] == [
        pub.subjects.room(r) for r in below
    ]
    sizes = {}
    for n in (MULTI_ROOM_MIN_ROOMS, 1000, 4000):
        rooms = [f"room{i:05d}" for i in range(n)]
        pairs = sockets.prepare_broadcast([*rooms, rooms[0]], "chat", {"text": "hi"}, omit="x")
        assert [s for s, _, _ in pairs] == ["t.mr"]
        msg = decode_data(pairs[0][1])
        assert (msg.kind, msg.rooms, msg.omit) == (KIND_MULTI_ROOM, tuple(rooms), frozenset({"x"}))
        sizes[n] = len(pairs[0][1])
    per_room = len('"room00000",')
    ts_jitter = 8  # the publish time's repr may differ in length between bodies
    assert abs((sizes[4000] - sizes[1000]) - 3000 * per_room) <= ts_jitter


def test_one_packet_and_one_frame_for_every_recipient() -> None:
    pkt = event_packet(b'["chat",{"text":"hi"}]')
    assert isinstance(pkt, EventPacket)
    conns = {f"s{i}": RecordingConnection(f"s{i}") for i in range(50)}
    conns["s1"].disconnected = True
    fanout = Fanout(SimpleNamespace(deliveries=SimpleNamespace(inc=lambda n: None)))  # type: ignore[arg-type]
    for conn in conns.values():
        fanout.attach(conn)
    assert fanout.deliver(pkt, list(conns), omit=frozenset({"s0"})) == 48
    got = [c.sent[0] for sid, c in conns.items() if sid not in ("s0", "s1")]
    assert all(p is pkt for p in got)
    assert conns["s0"].sent == []
    assert conns["s1"].sent == []
    frames = {id(p.frame) for p in got if isinstance(p, EventPacket)}  # what each socket writes
    assert len(frames) == 1
    assert pkt.frame == b"\x81\x18" + b'42["chat",{"text":"hi"}]'
    assert pkt.text == '42["chat",{"text":"hi"}]'  # what a polling recipient is sent


async def test_a_websocket_connection_writes_the_shared_frame() -> None:
    """On websocket, `send` hands the packet's own frame bytes to the transport, at the
    end of the tick, and the frames of one tick in one write."""
    written: list[bytes] = []
    conn = websocket_connection(written)
    pkt = event_packet(b'["n",1]')
    conn.send(pkt)
    assert written == []
    await asyncio.sleep(0)
    assert written == [pkt.frame]
    assert written[0] is pkt.frame
    other = event_packet(b'["n",2]')
    conn.send(pkt)
    conn.send(other)
    await asyncio.sleep(0)
    assert written[1:] == [pkt.frame + other.frame]
