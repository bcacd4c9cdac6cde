"""The Socket.IO layer of a connection (gateway.engine.connection), driven packet by
packet with a recording `EngineEvents`: CONNECT, events and acks, refusals, and the
one-disconnect-per-connect rule. No sockets: a polling connection's queue is what the
client would read."""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.engine import ClientEvent, CloseReason, Connection, ConnectRefused, Transport
from gateway.engine.api import HandshakeRequest
from gateway.engine.connection import EngineConnection, Shared
from gateway.engine.options import EngineOptions
from tests.unit.engine_kit import REQUEST


class Gateway:
    """EngineEvents that record, and answer as told."""

    def __init__(self, *, refuse: str | None = None, fail: bool = False) -> None:
        self.refuse, self.fail = refuse, fail
        self.connected_sids: list[str] = []
        self.auths: list[Any] = []
        self.gone: list[tuple[str, CloseReason]] = []
        self.events: list[ClientEvent] = []
        self.gate: asyncio.Event | None = None

    async def connected(self, conn: Connection, request: HandshakeRequest, auth: Any) -> None:
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise RuntimeError("bug in a hook")
        if self.refuse:
            raise ConnectRefused(self.refuse)
        self.connected_sids.append(conn.sid)
        self.auths.append(auth)

    async def disconnected(self, sid: str, reason: CloseReason) -> None:
        self.gone.append((sid, reason))

    async def event(self, event: ClientEvent) -> Any:
        self.events.append(event)
        if event.event == "pair":
            return ("a", 1)
        return {"got": list(event.args)} if event.wants_ack else None


def make(gateway: Gateway, protocol: int = 4) -> tuple[EngineConnection, list[str]]:
    refusals: list[str] = []
    shared = Shared(
        EngineOptions(refused_close_grace_s=0.01),
        gateway,
        on_refusal=refusals.append,
        on_slow=lambda sid, reason: None,
    )
    request = HandshakeRequest(
        path=REQUEST.path, query="", headers={}, remote="127.0.0.1", protocol=protocol
    )
    return EngineConnection(shared, request, Transport.POLLING, b64=False), refusals


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_connect_with_auth_then_events_and_acks() -> None:
    gw = Gateway()
    conn, refusals = make(gw)
    conn.receive('40{"token":"t","pid":"p","offset":"o"}')
    await settle()
    assert gw.connected_sids == [conn.sid]
    assert gw.auths == [{"token": "t", "pid": "p", "offset": "o"}]  # recovery's fields too
    assert conn.take_queued() == [f'40{{"sid":"{conn.sid}"}}']
    conn.receive('42["plain",1]')
    conn.receive('427["get",{"url":"/x"}]')
    conn.receive('428["pair"]')
    await settle()
    assert [(e.event, e.args, e.wants_ack) for e in gw.events] == [
        ("plain", (1,), False),
        ("get", ({"url": "/x"},), True),
        ("pair", (), True),
    ]
    assert conn.take_queued() == ['437[{"got":[{"url":"/x"}]}]', '438["a",1]']
    assert refusals == []


async def test_reserved_and_nameless_events_are_dropped_and_counted() -> None:
    gw = Gateway()
    conn, refusals = make(gw)
    conn.receive("40")
    await settle()
    for bad in ('42["connect"]', '42["disconnect"]', "42[1]", "42[]", '42{"a":1}'):
        conn.receive(bad)
    await settle()
    assert gw.events == []
    assert refusals == ["reserved_event"] * 5
    assert not conn.closed


async def test_events_before_connect_and_a_second_connect_are_ignored() -> None:
    gw = Gateway()
    conn, _ = make(gw)
    conn.receive('42["early"]')
    conn.receive("40")
    conn.receive("40")  # the same payload: one socket, not two
    await settle()
    assert len(gw.connected_sids) == 1
    assert gw.events == []


async def test_a_refused_connect_is_told_and_the_transport_closed_later() -> None:
    gw = Gateway(refuse="Unauthorized: token expired")
    for protocol, packet in ((4, '44{"message":"Unauthorized: token expired"}'), (3, None)):
        conn, _ = make(gw, protocol)
        if protocol == 3:
            await conn.connect_socket(None)  # a v2 client is connected by the server
            packet = '44"Unauthorized: token expired"'
        else:
            conn.receive("40")
            await settle()
        assert conn.take_queued() == [packet]
        assert conn.sid == ""
        await asyncio.sleep(0.05)
        assert conn.closed
    assert gw.gone == []  # never connected, never disconnected


async def test_a_failing_connect_handler_refuses_the_socket() -> None:
    conn, _ = make(Gateway(fail=True))
    conn.receive("40")
    await settle()
    assert conn.take_queued() == ['44{"message":"internal error"}']
    assert not conn.socket_connected


async def test_a_socket_that_leaves_while_the_gateway_decides_is_disconnected_once() -> None:
    gw = Gateway()
    gw.gate = asyncio.Event()
    conn, _ = make(gw)
    conn.receive("40")
    await settle()
    conn.receive("1")  # Engine.IO CLOSE while the gateway is still deciding
    assert conn.closed
    gw.gate.set()
    await settle()
    assert gw.connected_sids == [conn.sid]
    assert gw.gone == [(conn.sid, CloseReason.CLIENT)]


async def test_socketio_disconnect_and_malformed_packets_close_with_their_reason() -> None:
    gw = Gateway()
    conn, _ = make(gw)
    conn.receive("40")
    await settle()
    assert not conn.receive("41")
    await settle()
    assert gw.gone == [(conn.sid, CloseReason.CLIENT)]
    conn, _ = make(gw)
    conn.receive("40")
    await settle()
    assert not conn.receive("42[unquoted]")
    await settle()
    assert gw.gone[-1] == (conn.sid, CloseReason.TRANSPORT_ERROR)
    conn, _ = make(gw)
    assert not conn.receive("9")  # no such Engine.IO packet type
    assert conn.reason is CloseReason.TRANSPORT_ERROR


async def test_binary_attachments_are_put_back_before_the_event() -> None:
    gw = Gateway()
    conn, _ = make(gw)
    conn.receive("40")
    await settle()
    conn.receive('451-["blob",{"_placeholder":true,"num":0}]')
    await settle()
    assert gw.events == []  # waits for its attachment
    conn.receive(b"\x01\x02")
    await settle()
    assert [(e.event, e.args) for e in gw.events] == [("blob", (b"\x01\x02",))]


async def test_v3_pings_are_answered_and_v4_pings_are_not() -> None:
    conn, _ = make(Gateway(), 3)
    conn.receive("2probe")
    conn.receive("2")
    assert conn.take_queued() == ["3probe", "3"]
    conn, _ = make(Gateway(), 4)
    conn.receive("2")
    assert conn.take_queued() == []
