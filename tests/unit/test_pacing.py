"""gateway.pacing: fanout within per-tick budgets, in order, bounded (issue 16 #3). Real
Fanout and event loop; the connections record what they were sent."""

from __future__ import annotations

import asyncio

from gateway.engine.frames import event_packet
from gateway.fanout import Fanout, Variants
from gateway.metrics import GatewayMetrics
from gateway.pacing import BACKLOG_MAX_BYTES, SLICE_COST_BYTES, SLICE_PAYLOAD_BYTES, Pacer
from tests.unit.fakes import RecordingConnection


def _setup(n: int) -> tuple[Pacer, list[RecordingConnection], list[int]]:
    fanout = Fanout(GatewayMetrics())
    conns = [RecordingConnection(f"s{i}") for i in range(n)]
    for c in conns:
        fanout.attach(c)
    drops: list[int] = []
    return Pacer(fanout, lambda: drops.append(1)), conns, drops


async def _ticks_until_idle(pacer: Pacer) -> int:
    ticks = 0
    while pacer.backlog:
        await asyncio.sleep(0)
        ticks += 1
    return ticks


async def test_small_messages_go_out_inline() -> None:
    pacer, conns, _ = _setup(3)
    packet = event_packet(b'["e",1]')
    pacer.submit(packet, [c.sid for c in conns], frozenset({"s1"}), 7)
    assert [len(c.sent) for c in conns] == [1, 0, 1]  # at once, omit respected
    assert pacer.backlog == 0


async def test_a_burst_is_spread_over_ticks_in_order() -> None:
    pacer, conns, drops = _setup(2)
    sids = [c.sid for c in conns]
    size = SLICE_PAYLOAD_BYTES // 2 + 1  # two do not fit one tick
    packets = [event_packet(f'["e",{i}]'.encode()) for i in range(6)]
    for p in packets:
        pacer.submit(p, sids, frozenset(), size)
    assert [len(c.sent) for c in conns] == [1, 1]  # the first inline, the rest wait
    ticks = await _ticks_until_idle(pacer)
    assert ticks >= 5  # one per tick: no socket is handed two of them in one tick
    for c in conns:
        assert c.sent == packets
    assert not drops


async def test_a_message_bigger_than_a_slice_goes_in_chunks_of_recipients() -> None:
    n = 40
    pacer, conns, _ = _setup(n)
    size = SLICE_COST_BYTES // 10  # ten recipients per tick
    packet = event_packet(b'["big"]')
    pacer.submit(packet, [c.sid for c in conns], frozenset(), size)
    assert sum(len(c.sent) for c in conns) == 0  # too big for this tick: deferred
    await asyncio.sleep(0)
    first = sum(len(c.sent) for c in conns)
    assert 0 < first < n
    await _ticks_until_idle(pacer)
    assert all(c.sent == [packet] for c in conns)


async def test_recipients_are_fixed_when_the_message_arrives() -> None:
    pacer, conns, _ = _setup(2)
    big = SLICE_PAYLOAD_BYTES
    first, second = event_packet(b'["a"]'), event_packet(b'["b"]')
    pacer.submit(first, ["s0"], frozenset(), big)
    members = {"s0"}
    pacer.submit(second, members, frozenset(), big)  # deferred, for s0 only
    members.add("s1")  # joins after the message arrived
    await _ticks_until_idle(pacer)
    assert conns[0].sent == [first, second]
    assert conns[1].sent == []


async def test_a_full_backlog_drops_new_messages_and_counts_them() -> None:
    pacer, conns, drops = _setup(1)
    size = SLICE_PAYLOAD_BYTES
    count = BACKLOG_MAX_BYTES // size + 3
    for i in range(count):
        pacer.submit(event_packet(f'["e",{i}]'.encode()), ["s0"], frozenset(), size)
    assert len(drops) == 2  # one inline, BACKLOG_MAX_BYTES waiting, the last two dropped
    await _ticks_until_idle(pacer)
    assert len(conns[0].sent) == count - 2


async def test_variants_wait_in_the_backlog_and_each_socket_gets_its_own_packet() -> None:
    """With history on, a message is `Variants`: a backlogged one still goes to each
    socket as the packet it takes (here: the offset for `offsets` sockets)."""
    pacer, conns, drops = _setup(3)
    conns[1].offsets = True
    conns[2].offsets = True
    conns[2]._protocol = 3
    sids = [c.sid for c in conns]
    size = SLICE_PAYLOAD_BYTES // 2 + 1
    items = [
        Variants(f'["e",{i}]'.encode(), b',"x:' + str(i).encode() + b'"]', v4=True)
        for i in range(3)
    ]
    for v in items:
        pacer.submit(v, sids, frozenset(), size)
    assert pacer.backlog == 2
    await _ticks_until_idle(pacer)
    assert [p.text for p in conns[0].sent] == ['42["e",0]', '42["e",1]', '42["e",2]']
    for c in conns[1:]:
        assert [p.text for p in c.sent] == [f'42["e",{i},"x:{i}"]' for i in range(3)]
    assert conns[1].sent[0] is conns[2].sent[0]  # built once, shared
    assert not drops


def test_each_socket_gets_the_variant_its_protocol_and_offsets_call_for() -> None:
    """A message's two packets: the marked one (one more trailing argument) for a socket
    that takes positions when `takes_trailing_argument` says its protocol needs it —
    v3 always, v4 when the last argument is a string (`v4`) —, the plain one otherwise;
    each built once however many sockets share it."""
    fanout = Fanout(GatewayMetrics())
    conns = {}
    for offsets in (False, True):
        for protocol in (3, 4):
            for i in range(2):
                conn = RecordingConnection(f"{int(offsets)}-{protocol}-{i}", protocol)
                conn.offsets = offsets
                fanout.attach(conn)
                conns[conn.sid] = conn
    for v4 in (False, True):
        for conn in conns.values():
            conn.sent.clear()
        packets = Variants(b'["e","x"]', b",null]", v4=v4)
        assert fanout.deliver(packets, list(conns)) == len(conns)
        for conn in conns.values():
            marked = conn.offsets and (conn.protocol == 3 or v4)
            assert [p.text for p in conn.sent] == ['42["e","x",null]' if marked else '42["e","x"]']
        built = {id(conn.sent[0]) for conn in conns.values()}
        assert len(built) == 2  # two packets in all, shared by the sockets
