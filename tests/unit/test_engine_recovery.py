"""The engine's part of connection-state recovery (docs/recovery.md), packet by
packet: a socket given its old id and a pid is answered `40{"sid","pid"}` and then,
with nothing in between, the packets `EngineEvents.connected` handed back; an evicted
connection closes without a disconnect reported; an offsets socket's own events stay
unambiguous. No sockets: a polling connection's queue is what the client would read."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from gateway.engine import ClientEvent, CloseReason, Connection, OutboundPacket, Transport
from gateway.engine.api import HandshakeRequest
from gateway.engine.connection import EngineConnection, Shared
from gateway.engine.frames import event_packet
from gateway.engine.options import EngineOptions
from tests.unit.engine_kit import REQUEST


class Restoring:
    """EngineEvents that give every socket the id `old` and pid `p1`, and hand back
    two replay packets."""

    def __init__(self, *, offsets: bool = False) -> None:
        self.offsets = offsets
        self.gone: list[tuple[str, CloseReason]] = []

    async def connected(
        self, conn: Connection, request: HandshakeRequest, auth: Any
    ) -> Sequence[OutboundPacket] | None:
        conn.restore("old", "p1")
        conn.offsets = self.offsets
        return [event_packet(b'["m",1,"e:5"]'), event_packet(b'["m",2,"e:7"]')]

    async def disconnected(self, sid: str, reason: CloseReason) -> None:
        self.gone.append((sid, reason))

    async def event(self, event: ClientEvent) -> Any:
        return None


def make(events: Restoring, protocol: int = 4) -> EngineConnection:
    shared = Shared(
        EngineOptions(refused_close_grace_s=0.01),
        events,
        on_refusal=lambda reason: None,
        on_slow=lambda sid, reason: None,
    )
    request = HandshakeRequest(
        path=REQUEST.path, query="", headers={}, remote="127.0.0.1", protocol=protocol
    )
    return EngineConnection(shared, request, Transport.POLLING, b64=False)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_restored_socket_gets_its_old_id_its_pid_then_its_replay() -> None:
    conn = make(Restoring())
    conn.receive('40{"pid":"p1","offset":"e:3"}')
    await settle()
    assert conn.sid == "old"
    assert conn.pid == "p1"
    assert conn.take_queued() == [
        '40{"sid":"old","pid":"p1"}',
        '42["m",1,"e:5"]',
        '42["m",2,"e:7"]',
    ]


async def test_a_v2_socket_gets_the_bare_connect_then_its_replay() -> None:
    conn = make(Restoring(), protocol=3)
    await conn.connect_socket(None)
    assert conn.sid == "old"
    assert conn.take_queued() == ["40", '42["m",1,"e:5"]', '42["m",2,"e:7"]']


async def test_an_evicted_connection_closes_without_a_disconnect() -> None:
    events = Restoring()
    conn = make(events)
    conn.receive("40")
    await settle()
    conn.take_queued()
    conn.evict()
    await settle()
    assert conn.closed
    assert events.gone == []  # the socket lives on elsewhere: nobody is told it left
    conn.emit("late", 1)
    assert conn.take_queued() in ([], ["6"])


async def test_a_plain_socket_closing_is_still_reported() -> None:
    events = Restoring()
    conn = make(events)
    conn.receive("40")
    await settle()
    conn.receive("41")
    await settle()
    assert events.gone == [("old", CloseReason.CLIENT)]


async def test_an_offsets_socket_own_events_are_never_taken_for_an_offset() -> None:
    v4 = make(Restoring(offsets=True))
    v4.receive("40")
    await settle()
    v4.take_queued()
    v4.emit("says", "a string")  # v4 would take a trailing string for its offset
    v4.emit("count", 3)
    assert v4.take_queued() == ['42["says","a string",null]', '42["count",3]']
    v3 = make(Restoring(offsets=True), protocol=3)
    await v3.connect_socket(None)
    v3.take_queued()
    v3.emit("count", 3)  # the v3 add-on pops one trailing argument of every event
    assert v3.take_queued() == ['42["count",3,null]']
