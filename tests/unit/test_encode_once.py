"""Encode once (issue 2 #10): one serialization per publish whatever the number of
rooms, one Engine.IO packet and one websocket frame per message whatever the number of
recipients. Checked by object identity and by counting encodes."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from gateway.fanout import Fanout, event_packet
from gateway.outbound import frame_of
from publisher.sockets import Sockets
from shared.envelope import decode_data
from shared.subjects import Subjects
from tests.unit.fakes import RecordingConnection


def test_a_broadcast_to_many_rooms_is_serialized_once() -> None:
    pub = SimpleNamespace(subjects=Subjects("t"), max_payload_bytes=1 << 20)
    sockets = Sockets(pub)  # type: ignore[arg-type]
    pairs = sockets.prepare_broadcast(["a", "b.c", "d e"], "chat", {"text": "hi"})
    assert len({subject for subject, _ in pairs}) == 3
    assert len({id(body) for _, body in pairs}) == 1  # one bytes object for every subject
    assert decode_data(pairs[0][1]).rooms == ("a", "b.c", "d e")


def test_one_packet_and_one_frame_for_every_recipient() -> None:
    pkt = event_packet(b'["chat",{"text":"hi"}]')
    encode, encodes = pkt.encode, []

    def counting_encode(*args: Any, **kwargs: Any) -> Any:
        encodes.append(1)
        return encode(*args, **kwargs)

    pkt.encode = counting_encode
    conns = {f"s{i}": RecordingConnection(f"s{i}") for i in range(50)}
    fanout = Fanout(SimpleNamespace(deliveries=SimpleNamespace(inc=lambda n: None)))  # type: ignore[arg-type]
    for conn in conns.values():
        fanout.attach(conn)
    assert fanout.deliver(pkt, list(conns), omit=frozenset({"s0"})) == 49
    got = [c.sent[0] for sid, c in conns.items() if sid != "s0"]
    assert all(len(c.sent) == 1 for sid, c in conns.items() if sid != "s0")
    assert all(p is pkt for p in got)
    assert conns["s0"].sent == []
    frames = {id(frame_of(p)) for p in got}  # what each socket's writer sends
    assert len(frames) == 1
    assert len(encodes) == 1
    assert frame_of(pkt).endswith(b'42["chat",{"text":"hi"}]')
