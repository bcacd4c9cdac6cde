"""A worker's disconnect with a reason (issue 12): what the client is sent, in what
order, on both transports (gateway.engine.connection), and which sockets the core
disconnects for a socket, room or user request (gateway.node on a MemoryBroker).

The user form is tested here with a socket put in its user room directly through
`gateway.rooms` (the identity branch makes that membership at connect); the
end-to-end forms are in tests/integration/test_forced_disconnect.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import orjson
import pytest

from gateway.engine import CloseReason, connection
from gateway.engine.connection import DISCONNECT_EVENT
from shared.control import Applied, Disconnect, DisconnectMembers, Done, Join
from shared.users import user_room
from tests.unit.engine_kit import Events, polling_connection, shared, websocket_connection
from tests.unit.test_gateway_core import Cluster, metric, settle

FORCED = "sailcast_gateway_forced_disconnects_total"


def _frames_text(written: list[bytes]) -> bytes:
    return b"".join(written)


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    async with AsyncExitStack() as stack:
        yield Cluster(stack)


# -- the engine: the event, then the goodbye ------------------------------------------


async def test_websocket_gets_the_reason_event_then_41_in_one_write() -> None:
    written: list[bytes] = []
    conn = websocket_connection(written)
    await conn.disconnect("banned for spam")
    assert len(written) == 2  # one write, then the websocket close frame (1000)
    data, close = written
    assert close == b"\x88\x02\x03\xe8"
    event = b'42["sailcast:disconnect",{"reason":"banned for spam"}]'
    assert event in data
    assert data.index(event) < data.index(b"41", data.index(event) + len(event))
    assert conn.closed
    assert conn.reason is CloseReason.SERVER


async def test_websocket_without_a_reason_gets_only_41() -> None:
    written: list[bytes] = []
    conn = websocket_connection(written)
    await conn.disconnect()
    assert DISCONNECT_EVENT.encode() not in _frames_text(written)
    assert written[0].endswith(b"41")


async def test_a_waiting_poll_gets_the_event_and_41_and_the_next_poll_the_close() -> None:
    """As engine.io sends them: socket.io-client 4 handles a payload's Socket.IO packets
    a tick after its Engine.IO ones, so a close beside the `41` would be seen first."""
    state = shared()
    conn = polling_connection(state)
    state.sessions[conn.eio_sid] = conn
    poll = asyncio.ensure_future(conn.poll(5.0))
    await asyncio.sleep(0)
    await conn.disconnect("bye")
    packets = await asyncio.wait_for(poll, 1.0)
    assert packets == ['42["sailcast:disconnect",{"reason":"bye"}]', "41"]
    assert state.sessions.get(conn.eio_sid) is conn
    assert await asyncio.wait_for(conn.poll(5.0), 1.0) == ["1"]
    assert conn.eio_sid not in state.sessions


async def test_a_session_closed_between_polls_waits_for_the_poll_that_takes_its_goodbye() -> None:
    state = shared()
    conn = polling_connection(state)
    state.sessions[conn.eio_sid] = conn
    await conn.disconnect("maintenance")
    assert state.sessions.get(conn.eio_sid) is conn  # the next poll still finds it
    packets = await conn.poll(5.0)
    assert [orjson.loads(packets[0][2:]), *packets[1:]] == [
        ["sailcast:disconnect", {"reason": "maintenance"}],
        "41",
    ]
    assert await conn.poll(5.0) == ["1"]
    assert conn.eio_sid not in state.sessions  # that was its last payload


async def test_an_untaken_goodbye_is_dropped_after_the_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(connection, "LAST_PAYLOAD_WAIT_S", 0.01)
    state = shared()
    conn = polling_connection(state)
    state.sessions[conn.eio_sid] = conn
    await conn.disconnect("bye")
    assert conn.eio_sid in state.sessions
    await asyncio.sleep(0.05)
    assert conn.eio_sid not in state.sessions


async def test_an_offsets_v4_socket_gets_the_event_unchanged() -> None:
    """The reason is an object, so no trailing null is added for a v4 offsets socket
    (socket.io-client takes only a trailing string for an offset)."""
    written: list[bytes] = []
    conn = websocket_connection(written)
    conn.offsets = True
    await conn.disconnect("x")
    assert b'42["sailcast:disconnect",{"reason":"x"}]' in written[0]


async def test_the_gateway_is_told_server_once() -> None:
    state = shared()
    conn = polling_connection(state)
    await conn.disconnect("bye")
    await conn.disconnect("again")  # closed: nothing more is sent or told
    await settle()
    events = state.events
    assert isinstance(events, Events)
    assert events.gone == [("s1", CloseReason.SERVER)]
    assert conn.take_queued() == ['42["sailcast:disconnect",{"reason":"bye"}]', "41"]


# -- the core: which sockets, counted how ---------------------------------------------


async def test_disconnect_with_a_reason_tells_that_socket(cluster: Cluster) -> None:
    gw = await cluster.gateway("gwa")
    a = await cluster.connect(gw, "a")
    b = await cluster.connect(gw, "b")
    assert await cluster.ask("a", Disconnect("kicked")) == Done()
    assert (a.disconnected, a.disconnect_reason) == (True, "kicked")
    assert not b.disconnected
    assert gw.forced_reason("a") == "kicked"  # for the after-disconnect notice
    assert metric(gw, FORCED, by="socket") == 1
    await gw.socket_disconnected("a")
    assert gw.forced_reason("a") is None  # forgotten with the socket


async def test_disconnect_members_reaches_the_members_on_every_gateway_only(
    cluster: Cluster,
) -> None:
    gwa = await cluster.gateway("gwa")
    gwb = await cluster.gateway("gwb")
    a1, a2 = await cluster.connect(gwa, "a1"), await cluster.connect(gwa, "a2")
    b1, b2 = await cluster.connect(gwb, "b1"), await cluster.connect(gwb, "b2")
    for sid in ("a1", "a2", "b1"):
        assert await cluster.ask(sid, Join(("game",))) == Done()
    answers = await cluster.ask_all(DisconnectMembers("game", "game over"), answers=2)
    assert [(r.gw, r.n) for r in answers if isinstance(r, Applied)] == [("gwa", 2), ("gwb", 1)]
    assert [c.disconnect_reason for c in (a1, a2, b1)] == ["game over"] * 3
    assert not b2.disconnected
    assert metric(gwa, FORCED, by="room") == 2
    assert metric(gwb, FORCED, by="room") == 1


async def test_disconnect_members_of_a_user_room_counts_as_user(cluster: Cluster) -> None:
    gwa = await cluster.gateway("gwa")
    gwb = await cluster.gateway("gwb")
    tab1, tab2 = await cluster.connect(gwa, "t1"), await cluster.connect(gwb, "t2")
    other = await cluster.connect(gwb, "o1")
    gwa.rooms.join("t1", user_room("42"))  # as the identity step does at connect
    gwb.rooms.join("t2", user_room("42"))
    gwb.rooms.join("o1", user_room("7"))
    answers = await cluster.ask_all(DisconnectMembers(user_room("42")), answers=2)
    assert sum(r.n or 0 for r in answers if isinstance(r, Applied)) == 2
    assert (tab1.disconnected, tab2.disconnected) == (True, True)
    assert (tab1.disconnect_reason, tab2.disconnect_reason) == (None, None)
    assert not other.disconnected
    assert metric(gwa, FORCED, by="user") == 1
    assert metric(gwb, FORCED, by="user") == 1
    assert metric(gwb, FORCED, by="room") == 0


async def test_disconnect_members_of_an_empty_room_disconnects_nobody(cluster: Cluster) -> None:
    gw = await cluster.gateway("gwa")
    a = await cluster.connect(gw, "a")
    answers = await cluster.ask_all(DisconnectMembers("nobody-here", "x"), answers=1)
    assert [r.n for r in answers if isinstance(r, Applied)] == [0]
    assert not a.disconnected
