"""gateway/engine/websocket.py: client frames parsed as RFC 6455 says, in any slicing
of the byte stream; control frames answered; violations closed with their code; the
sink's pauses honoured. A fake transport: no I/O."""

from __future__ import annotations

import asyncio
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.engine import websocket as wsm
from gateway.engine.server import WebSocketReading
from gateway.engine.websocket import WebSocket, WebSocketError
from gateway.settings import InboundSettings
from tests.support.ws_frames import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_TEXT,
    client_frame,
)
from tests.unit.engine_kit import FakeTransport, shared, websocket_connection


class Sink:
    """Records messages and ends; `waits` are the pauses it asks for first."""

    def __init__(self, waits: list[float] | None = None) -> None:
        self.got: list[str | bytes] = []
        self.ends: list[WebSocketError | None] = []
        self.waits = waits or []

    def message(self, data: str | bytes) -> float:
        if self.waits:
            return self.waits.pop(0)
        self.got.append(data)
        return 0.0

    def ended(self, error: WebSocketError | None) -> None:
        self.ends.append(error)


def frame(payload: bytes, opcode: int = OP_TEXT, *, fin: bool = True, mask: bool = True) -> bytes:
    return client_frame(opcode, payload, fin=fin, masked=mask)


def opened(max_message: int = 1 << 20) -> tuple[WebSocket, FakeTransport, Sink]:
    tr = FakeTransport([])
    sink = Sink()
    ws = WebSocket(tr, sink, max_message)  # type: ignore[arg-type]
    ws.start()
    return ws, tr, sink


def test_accept_key_is_the_rfc_6455_example() -> None:
    assert wsm.accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@given(st.binary(max_size=300), st.binary(min_size=4, max_size=4))
def test_unmask_is_xor_with_the_repeated_key(payload: bytes, key: bytes) -> None:
    assert wsm.unmask(payload, key) == bytes(b ^ key[i % 4] for i, b in enumerate(payload))


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.text(max_size=200) | st.binary(max_size=70000), min_size=1, max_size=5),
    st.data(),
)
async def test_messages_arrive_whole_and_in_order_however_the_bytes_are_cut(
    messages: list[str | bytes], data: st.DataObject
) -> None:
    stream = b"".join(
        frame(m.encode()) if isinstance(m, str) else frame(m, OP_BINARY) for m in messages
    )
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    ws, _, sink = opened()
    start = 0
    for cut in [*cuts, len(stream)]:
        ws.data_received(stream[start:cut])
        start = cut
    for _ in range(len(messages)):  # MESSAGES_PER_TURN: the rest on the next turns
        await asyncio.sleep(0)
    assert sink.got == messages


def test_fragments_are_joined_and_pings_between_them_answered() -> None:
    ws, tr, sink = opened()
    ws.data_received(
        frame(b'42["a",', fin=False) + frame(b"ping!", OP_PING) + frame(b"1]", OP_CONT)
    )
    assert sink.got == ['42["a",1]']
    assert tr.written == [b"\x8a\x05ping!"]  # the pong carries the ping's payload


def test_a_client_close_is_answered_and_the_transport_closed() -> None:
    ws, tr, sink = opened()
    ws.data_received(frame(struct.pack("!H", 1001), OP_CLOSE))
    assert tr.written == [b"\x88\x02\x03\xe9"]
    assert tr.closed
    ws.connection_lost(None)
    assert sink.ends == [None]


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (frame(b"42[]", mask=False), wsm.PROTOCOL_ERROR),  # clients must mask
        (client_frame(OP_TEXT, b"x", rsv=4), wsm.PROTOCOL_ERROR),  # RSV1: no deflate agreed
        (frame(b"x" * 126, OP_PING), wsm.PROTOCOL_ERROR),  # control frame over 125
        (frame(b"x", OP_PING, fin=False), wsm.PROTOCOL_ERROR),  # fragmented control frame
        (frame(b"x", 0x3), wsm.PROTOCOL_ERROR),  # reserved opcode
        (frame(b"x", OP_CONT), wsm.PROTOCOL_ERROR),  # continuation of nothing
        (frame(b"a", fin=False) + frame(b"b"), wsm.PROTOCOL_ERROR),  # a message inside one
        (frame(b"\xff\xfe"), wsm.INVALID_TEXT),
        (frame(b"y" * 101), wsm.MESSAGE_TOO_BIG),
        (frame(b"y" * 60, fin=False) + frame(b"y" * 41, OP_CONT), wsm.MESSAGE_TOO_BIG),
    ],
)
def test_violations_close_with_their_code(raw: bytes, code: int) -> None:
    ws, tr, sink = opened(max_message=100)
    ws.data_received(raw)
    assert sink.got == []
    assert [e.code for e in sink.ends if e is not None] == [code]
    assert tr.written[-1][:4] == b"\x88" + bytes([len(tr.written[-1]) - 2]) + struct.pack(
        "!H", code
    )
    assert tr.closed


def test_a_huge_length_is_refused_before_its_bytes_arrive() -> None:
    ws, _tr, sink = opened(max_message=1000)
    ws.data_received(b"\x82\xff" + struct.pack("!Q", 1 << 40))  # header only
    assert [e.code for e in sink.ends if e is not None] == [wsm.MESSAGE_TOO_BIG]


async def test_a_pause_asked_by_the_sink_holds_the_message_and_reading() -> None:
    tr = FakeTransport([])
    sink = Sink(waits=[0.05])
    ws = WebSocket(tr, sink, 1 << 20)  # type: ignore[arg-type]
    ws.start()
    ws.data_received(frame(b"first") + frame(b"second"))
    assert sink.got == []
    assert tr.paused
    await asyncio.sleep(0.1)
    assert sink.got == ["first", "second"]  # handed again, then the rest, in order
    assert not tr.paused


async def test_a_burst_is_read_a_turn_at_a_time() -> None:
    ws, tr, sink = opened()
    ws.data_received(b"".join(frame(b"%d" % i) for i in range(40)))
    assert len(sink.got) == wsm.MESSAGES_PER_TURN
    assert tr.paused
    for _ in range(5):
        await asyncio.sleep(0)
    assert sink.got == [str(i) for i in range(40)]
    assert not tr.paused


async def test_our_close_waits_for_the_answer_then_aborts() -> None:
    ws, tr, _ = opened()
    ws.close(wsm.GOING_AWAY, b"bye", 0.05)
    assert tr.written == [b"\x88\x05\x03\xe9bye"]
    assert not tr.closed
    ws.data_received(frame(b"ignored: we are closing"))
    await asyncio.sleep(0.1)
    assert tr.aborted  # no close frame came back


async def test_our_close_ends_when_the_client_answers() -> None:
    ws, tr, _ = opened()
    ws.close()
    ws.data_received(frame(struct.pack("!H", 1000), OP_CLOSE))
    assert tr.closed
    assert len(tr.written) == 1


async def test_a_packet_held_by_the_rates_is_charged_once() -> None:
    """`throttle` spends the packet's token (into debt) and says how long to wait: the
    packet handed again after the wait is read, not charged and held a second time."""
    state = shared(inbound=InboundSettings(inbound_rate_per_s=10.0, inbound_burst=1))
    conn = websocket_connection([], state)
    reading = WebSocketReading(conn, state)
    assert reading.message("3") == 0.0  # the burst's one token
    wait = reading.message("1")
    assert 0.05 < wait <= 0.1  # held: one token of debt at 10/s
    assert not conn.closed
    assert reading.message("1") == 0.0  # handed again: read
    assert conn.closed  # the Engine.IO close was received
