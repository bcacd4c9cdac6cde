"""A connection's outbound path (gateway.engine.connection): the polling queue that
long-polls wait on, the direct websocket path, and the bounds that cut a client that
stopped reading. No sockets: a fake transport records what would be written."""

from __future__ import annotations

import asyncio

from gateway.engine import CloseReason, event_packet
from gateway.engine.frames import ws_frame
from tests.unit.engine_kit import (
    Events,
    FakeTransport,
    fake_websocket,
    polling_connection,
    shared,
    websocket_connection,
)


async def test_polling_packets_are_taken_in_order() -> None:
    conn = polling_connection()
    assert conn.take_queued() == []
    for i in range(5):
        conn.send(event_packet(f'["n",{i}]'.encode()))
    conn.emit("solo", {"a": 1})
    assert conn.take_queued() == [
        *(f'42["n",{i}]' for i in range(5)),
        '42["solo",{"a":1}]',
    ]
    assert conn.take_queued() == []  # taken once


async def test_a_waiting_poll_is_woken_by_a_send_and_times_out_with_a_noop() -> None:
    conn = polling_connection()
    poll = asyncio.ensure_future(conn.poll(5.0))
    await asyncio.sleep(0)
    assert not poll.done()
    assert conn.polling
    conn.send(event_packet(b'["x"]'))
    assert await asyncio.wait_for(poll, 1) == ['42["x"]']
    assert not conn.polling
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await conn.poll(0.05) == ["6"]  # nothing came: a NOOP answers the poll
    assert loop.time() - started >= 0.04


async def test_queue_bounds_cut_a_connection_off_once() -> None:
    slow: list[tuple[str, str]] = []
    state = shared(slow, max_queued_messages=3)
    conn = polling_connection(state)
    for i in range(5):
        conn.send(event_packet(f'["n",{i}]'.encode()))
    assert slow == [("s1", "queue")]
    assert conn.closed
    assert conn.reason is CloseReason.SLOW_CLIENT
    slow.clear()
    conn = polling_connection(shared(slow, max_buffered_bytes=10))
    conn.send(event_packet(b'["' + b"x" * 20 + b'"]'))
    assert slow == [("s1", "queue")]


async def test_the_write_buffer_bound_cuts_a_websocket_client_off() -> None:
    slow: list[tuple[str, str]] = []
    state = shared(slow, max_buffered_bytes=1000)
    written: list[bytes] = []
    conn = websocket_connection(written, state, buffered=990)  # the client stopped reading
    pkt = event_packet(b'["n",1]')
    conn.send(pkt)  # 990 + this tick's frames: still within the bound
    conn.send(pkt)  # over it
    assert slow == [("s1", "write_buffer")]
    assert conn.closed
    assert conn.reason is CloseReason.SLOW_CLIENT
    await asyncio.sleep(0)
    assert written == []  # aborted: what was gathered is dropped, not written
    await asyncio.sleep(0)
    assert isinstance(state.events, Events)
    assert state.events.gone == [("s1", CloseReason.SLOW_CLIENT)]  # the gateway is told once


async def test_queued_packets_go_first_when_the_websocket_takes_over() -> None:
    conn = polling_connection()
    first = event_packet(b'["n",1]')
    conn.send(first)
    conn.emit("n", 2)
    written: list[bytes] = []  # the websocket arrives (an upgrade)
    conn.attach_websocket(fake_websocket(FakeTransport(written)))
    third = event_packet(b'["n",3]')
    conn.send(third)
    await asyncio.sleep(0)
    assert written == [first.frame + ws_frame(b'42["n",2]') + third.frame]


def test_frames_of_text_and_binary_packets() -> None:
    assert event_packet(b"[1]").frame == b"\x81\x0542[1]"
    assert ws_frame(b"2") == b"\x81\x012"
    assert ws_frame(b"\x00\x01", 0x82) == b"\x82\x02\x00\x01"
    assert ws_frame(b"a" * 200)[:4] == b"\x81\x7e\x00\xc8"
    assert ws_frame(b"a" * 70_000)[:2] == b"\x81\x7f"
