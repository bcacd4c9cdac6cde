"""The history live path (gateway.history.feed through gateway.node) on a MemoryBroker,
with recording connections and an in-memory stand-in for the history stream (it stores,
numbers and serves messages as JetStream does: no I/O).

Messages reach the gateway as the stream's RePublish sends them: on the room subject
with `Nats-Sequence` and `Nats-Last-Sequence`. A gap is made real by storing a message
without re-publishing it. Tests assert what each socket received, in what order."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.broker.memory import MemoryBroker, MemoryBus
from gateway.fanout import last_arg_is_string
from gateway.history.direct_get import Page, Stored
from gateway.history.feed import (
    HISTORY_EXCEEDED,
    HISTORY_TRIMMED,
    HISTORY_UNAVAILABLE,
    NO_HISTORY,
    REPLAY_TOO_LARGE,
    HistoryFeed,
    RecoveryRefused,
    Replay,
)
from gateway.metrics import GatewayMetrics
from gateway.node import Gateway
from gateway.settings import CoreSettings, GatewaySettings
from shared.control import Done, Join, decode_reply, encode_request
from shared.envelope import KIND_BLAST, KIND_BROADCAST, encode_args, encode_data
from shared.errors import TransportError
from shared.history import HistoryRules, parse_offset
from shared.subjects import Subjects
from tests.unit.fakes import ManualClock, RecordingConnection

PREFIX = "t"
S = Subjects(PREFIX)
EPOCH = "e1"


class FakeStream:
    """The history stream in memory: a global sequence, per-subject limits, the
    RePublish headers, and batched reads by subject (a StreamView and StoredReader)."""

    def __init__(self, rules: str = "*=100/2m") -> None:
        self.name = "hist"
        self.epoch = EPOCH
        self.rules = HistoryRules.parse(rules)
        self.max_msgs_per_subject = self.rules.max_msgs
        self.messages: list[tuple[int, str, bytes, float]] = []
        self._last_on: dict[str, int] = {}
        self.seq = 0
        self.first = 1
        self.fail_reads = 0
        """Reads that raise TransportError before they work again."""
        self.gate: asyncio.Event | None = None
        """While set to an unset event, the next read waits for it (once)."""
        self.reads = 0
        self.refreshes = 0
        self.next_epoch = EPOCH
        """What the next `refresh` reads (the epoch of the stream on the server)."""

    def store(self, room: str, body: bytes, *, at: float | None = None) -> tuple[int, int]:
        subject = S.history(room)
        self.seq += 1
        prev = self._last_on.get(subject, 0)
        self._last_on[subject] = self.seq
        self.messages.append((self.seq, subject, body, time.time() if at is None else at))
        mine = [m for m in self.messages if m[1] == subject]
        if len(mine) > self.max_msgs_per_subject:  # discard old, as max_msgs_per_subject
            self.messages.remove(mine[0])
        return self.seq, prev

    def purge_before(self, seq: int) -> None:
        self.messages = [m for m in self.messages if m[0] >= seq]
        self.first = seq

    async def first_seq(self) -> int:
        return self.first

    async def refresh(self) -> bool:
        self.refreshes += 1
        changed, self.epoch = self.epoch != self.next_epoch, self.next_epoch
        return changed

    def recreate(self) -> None:
        """The stream deleted and created again: positions start over, new epoch."""
        self.messages.clear()
        self._last_on.clear()
        self.seq = 0
        self.first = 1
        self.next_epoch = "e2"

    async def last_seq(self) -> int:
        return self.seq

    async def after(self, subject: str, seq: int, *, batch: int, max_bytes: int) -> Page:
        self.reads += 1
        gate, self.gate = self.gate, None
        if gate is not None:
            await gate.wait()
        if self.fail_reads:
            self.fail_reads -= 1
            raise TransportError("stream unavailable (test)")
        mine = [Stored(s, d, t) for s, subj, d, t in self.messages if subj == subject and s > seq]
        return Page(mine[:batch], max(0, len(mine) - batch))


class Bench:
    """One gateway with history on, a worker publishing as the stream re-publishes."""

    def __init__(self, stack: AsyncExitStack, stream: FakeStream) -> None:
        self.bus = MemoryBus()
        self.clock = ManualClock()
        self.worker = MemoryBroker(self.bus)
        self.stream = stream
        self._stack = stack
        self.gw: Gateway

    async def start(self) -> Gateway:
        settings = GatewaySettings(
            gateway_id="gwa", prefix=PREFIX, core=CoreSettings(unsubscribe_linger_s=1.0)
        )
        self.gw = Gateway(
            settings,
            MemoryBroker(self.bus),
            GatewayMetrics(),
            scheduler=self.clock,
            clock=self.clock,
            history_stream=self.stream,
            history_reader=self.stream,
        )
        await self.gw.start()
        self._stack.push_async_callback(self.gw.stop)
        self.feed.retry_delays_s = (0.0, 0.0, 0.0)
        return self.gw

    @property
    def feed(self) -> HistoryFeed:
        assert self.gw.feed is not None
        return self.gw.feed

    async def connect(self, sid: str, protocol: int = 4, *rooms: str) -> RecordingConnection:
        conn = RecordingConnection(sid, protocol)
        await self.gw.socket_connected(conn)
        if rooms:
            await self.join(sid, *rooms)
        return conn

    async def join(self, sid: str, *rooms: str) -> None:
        body = await self.worker.request(S.socket(sid), encode_request(Join(rooms)), timeout=1)
        assert decode_reply(body, Done) == Done()

    def body(self, rooms: list[str], event: str, data: Any, omit: tuple[str, ...] = ()) -> bytes:
        return encode_data(
            KIND_BROADCAST, encode_args(event, data), ts=time.time(), rooms=rooms, omit=omit
        )

    async def publish(self, room: str, event: str, data: Any, *, live: bool = True) -> int:
        """Store a message as the stream does; re-publish it unless `live` is False
        (the core message lost between NATS and the gateway). Returns its position."""
        body = self.body([room], event, data)
        seq, prev = self.stream.store(room, body)
        if live:
            await self.republish(room, body, seq, prev)
        return seq

    async def republish(self, room: str, body: bytes, seq: int, prev: int) -> None:
        headers = {
            "Nats-Stream": "hist",
            "Nats-Sequence": str(seq),
            "Nats-Last-Sequence": str(prev),
        }
        await self.worker.publish(S.room(room), body, headers=headers)

    async def core(self, room: str, event: str, *data: Any) -> None:
        body = encode_data(
            KIND_BROADCAST, orjson.dumps([event, *data]), ts=time.time(), rooms=[room]
        )
        await self.worker.publish(S.room(room), body)


def received(conn: RecordingConnection) -> list[Any]:
    out = []
    for packet in conn.sent:
        assert packet.text[:2] == "42"
        out.append(orjson.loads(packet.text[2:]))
    return out


def packets(items: list[Any]) -> list[Any]:
    return [orjson.loads(p.text[2:]) for p in items]


def metric(gw: Gateway, name: str, **labels: str) -> float:
    return gw.metrics.registry.get_sample_value(name, labels) or 0.0


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


@pytest.fixture
async def bench() -> AsyncIterator[Bench]:
    async with AsyncExitStack() as stack:
        b = Bench(stack, FakeStream())
        await b.start()
        yield b


def position(args: list[Any]) -> int:
    parsed = parse_offset(args[-1])
    assert parsed is not None, args
    assert parsed[0] == EPOCH
    return parsed[1]


def off(seq: int) -> str:
    return f"{EPOCH}:{seq}"


# -- in order, offsets per recipient ---------------------------------------------------


async def test_history_messages_arrive_in_order_with_the_offset_only_for_offsets_sockets(
    bench: Bench,
) -> None:
    v4 = await bench.connect("v4", 4, "chat")
    v3 = await bench.connect("v3", 3, "chat")  # stock sails.io.js: no add-on
    assert v4.offsets
    assert not v3.offsets
    seqs = [await bench.publish("chat", "m", i) for i in range(3)]
    assert received(v4) == [["m", i, off(s)] for i, s in enumerate(seqs)]
    assert received(v3) == [["m", i] for i in range(3)]
    assert bench.feed.high_water == seqs[-1]


async def test_a_v3_socket_with_the_add_on_gets_offsets_and_a_null_on_every_other_event(
    bench: Bench,
) -> None:
    addon = await bench.connect("v3a", 3)
    addon.offsets = True  # what the recovery connect path sets for the add-on
    await bench.join("v3a", "chat", "plain")
    s = await bench.publish("chat", "m", {"a": 1})
    await bench.core("plain", "c", {"b": 2})
    await bench.core("plain", "d", "text")
    assert received(addon) == [["m", {"a": 1}, off(s)], ["c", {"b": 2}, None], ["d", "text", None]]


async def test_a_v4_socket_gets_a_null_only_where_the_last_argument_is_a_string(
    bench: Bench,
) -> None:
    v4 = await bench.connect("v4", 4, "plain")
    other = await bench.connect("v3", 3, "plain")
    await bench.core("plain", "obj", {"b": 2})
    await bench.core("plain", "str", "text")
    await bench.core("plain", "bare")
    body = encode_data(KIND_BLAST, orjson.dumps(["blast", "x"]), ts=time.time())
    await bench.worker.publish(S.blast, body)
    assert received(v4) == [
        ["obj", {"b": 2}],
        ["str", "text", None],
        ["bare", None],
        ["blast", "x", None],
    ]
    assert received(other) == [["obj", {"b": 2}], ["str", "text"], ["bare"], ["blast", "x"]]


def test_last_arg_is_string_reads_only_the_top_level_last_element() -> None:
    assert last_arg_is_string(b'["ev"]')
    assert last_arg_is_string(b'["ev",1,"x"]')
    assert last_arg_is_string(b'["ev", "x" ] ')
    assert not last_arg_is_string(b'["ev",["x"]]')
    assert not last_arg_is_string(b'["ev",{"a":"x"}]')
    assert not last_arg_is_string(b'["ev",1]')


async def test_a_headed_message_without_positions_takes_the_core_path(bench: Bench) -> None:
    v4 = await bench.connect("v4", 4, "chat")
    body = bench.body(["chat"], "m", 1)
    await bench.worker.publish(S.room("chat"), body, headers={"Nats-Msg-Id": "x"})
    assert received(v4) == [["m", 1]]
    assert bench.feed.high_water == 0


# -- duplicates and gaps -------------------------------------------------------------


async def test_a_duplicate_position_is_dropped_and_counted(bench: Bench) -> None:
    v4 = await bench.connect("v4", 4, "chat")
    body = bench.body(["chat"], "m", 1)
    seq, prev = bench.stream.store("chat", body)
    await bench.republish("chat", body, seq, prev)
    await bench.republish("chat", body, seq, prev)
    assert received(v4) == [["m", 1, off(seq)]]
    assert metric(bench.gw, "sailcast_gateway_history_duplicates_total") == 1


async def test_a_gap_is_repaired_in_order_and_held_messages_follow_while_core_rooms_flow(
    bench: Bench,
) -> None:
    a = await bench.connect("a", 4, "chat", "news", "plain")
    s1 = await bench.publish("chat", "m", 1)
    gate = asyncio.Event()
    bench.stream.gate = gate  # the repair's read waits until we open it
    s2 = await bench.publish("chat", "m", 2, live=False)  # lost on the way
    s3 = await bench.publish("chat", "m", 3)  # reveals the gap: L=s2 > last=s1
    s4 = await bench.publish("news", "n", 4)  # another history room: held behind it
    await bench.core("plain", "c", 5)  # a core room keeps flowing
    await settle()
    assert received(a) == [["m", 1, off(s1)], ["c", 5]]
    assert bench.feed.holding == 2
    gate.set()
    await settle()
    assert received(a) == [
        ["m", 1, off(s1)],
        ["c", 5],
        ["m", 2, off(s2)],
        ["m", 3, off(s3)],
        ["n", 4, off(s4)],
    ]
    assert metric(bench.gw, "sailcast_gateway_history_gaps_total") == 1
    assert metric(bench.gw, "sailcast_gateway_history_repaired_messages_total") == 1
    s5 = await bench.publish("chat", "m", 6)  # the live path runs again
    assert received(a)[-1] == ["m", 6, off(s5)]


async def test_a_gap_of_several_messages_is_fetched_in_pages(bench: Bench) -> None:
    bench.stream.max_msgs_per_subject = 3  # pages of at most 3
    a = await bench.connect("a", 4, "chat")
    await bench.publish("chat", "m", 0)
    for i in range(1, 3):
        await bench.publish("chat", "m", i, live=False)
    await bench.publish("chat", "m", 3)
    await settle()
    assert [r[1] for r in received(a)] == [0, 1, 2, 3]


async def test_an_unrepairable_gap_is_counted_as_lost_and_delivery_goes_on(bench: Bench) -> None:
    a = await bench.connect("a", 4, "chat")
    await bench.publish("chat", "m", 1)
    bench.stream.fail_reads = 10  # every attempt fails
    await bench.publish("chat", "m", 2, live=False)
    await bench.publish("chat", "m", 3)
    await settle()
    assert [r[1] for r in received(a)] == [1, 3]
    assert metric(bench.gw, "sailcast_gateway_history_lost_total", reason="unavailable") == 1
    bench.stream.fail_reads = 0
    await bench.publish("chat", "m", 4)
    assert [r[1] for r in received(a)] == [1, 3, 4]


async def test_a_gap_whose_messages_left_the_stream_is_lost_as_trimmed(bench: Bench) -> None:
    a = await bench.connect("a", 4, "chat")
    await bench.publish("chat", "m", 1)
    s2 = await bench.publish("chat", "m", 2, live=False)
    bench.stream.purge_before(s2 + 1)
    await bench.publish("chat", "m", 3)
    await settle()
    assert [r[1] for r in received(a)] == [1, 3]
    assert metric(bench.gw, "sailcast_gateway_history_lost_total", reason="trimmed") == 1


async def test_a_gap_whose_oldest_messages_left_the_stream_counts_them_lost(
    bench: Bench,
) -> None:
    """The stream trims each room oldest first and does not say how many: when it no
    longer holds the gateway's last position, what was between it and the oldest it
    still holds may be gone. Counted, and the rest handed on in order."""
    a = await bench.connect("a", 4, "chat")
    await bench.publish("chat", "m", 1)
    s2 = await bench.publish("chat", "m", 2, live=False)
    await bench.publish("chat", "m", 3, live=False)
    bench.stream.purge_before(s2 + 1)  # 1 (the last handed on) and 2 trimmed; 3 stays
    await bench.publish("chat", "m", 4)
    await settle()
    assert [r[1] for r in received(a)] == [1, 3, 4]
    assert metric(bench.gw, "sailcast_gateway_history_lost_total", reason="trimmed") == 1


async def test_a_gap_whose_messages_are_all_stored_loses_nothing(bench: Bench) -> None:
    a = await bench.connect("a", 4, "chat")
    await bench.publish("chat", "m", 1)
    await bench.publish("chat", "m", 2, live=False)
    await bench.publish("chat", "m", 3, live=False)
    await bench.publish("chat", "m", 4)
    await settle()
    assert [r[1] for r in received(a)] == [1, 2, 3, 4]
    assert metric(bench.gw, "sailcast_gateway_history_lost_total", reason="trimmed") == 0
    assert metric(bench.gw, "sailcast_gateway_history_repaired_messages_total") == 2


async def test_catch_up_after_a_reconnect_hands_on_what_was_missed_and_counts_trimmed(
    bench: Bench,
) -> None:
    """After a NATS reconnect, a quiet room's missed messages are read: all of them when
    the stream still holds the last one handed on; else the survivors, and the loss is
    counted (it was not, before: the survivors were chained to the last position)."""
    a = await bench.connect("a", 4, "busy", "calm")
    await bench.publish("busy", "b", 1)
    b2 = await bench.publish("busy", "b", 2, live=False)
    await bench.publish("busy", "b", 3, live=False)
    await bench.publish("calm", "c", 1)
    await bench.publish("calm", "c", 2, live=False)
    bench.stream.purge_before(b2 + 1)  # busy: 1 and 2 trimmed while NATS was away
    assert await bench.feed.catch_up() == 2
    await settle()
    assert [(r[0], r[1]) for r in received(a)] == [("b", 1), ("c", 1), ("b", 3), ("c", 2)]
    assert metric(bench.gw, "sailcast_gateway_history_lost_total", reason="trimmed") == 1


async def test_the_hold_is_bounded_and_a_dropped_message_is_repaired_by_the_next_gap(
    bench: Bench,
) -> None:
    a = await bench.connect("a", 4, "chat")
    bench.feed.hold_max_messages = 2
    await bench.publish("chat", "m", 1)
    gate = asyncio.Event()
    bench.stream.gate = gate
    await bench.publish("chat", "m", 2, live=False)
    for i in (3, 4, 5):  # 3 reveals the gap and waits with 4; 5 does not fit
        await bench.publish("chat", "m", i)
    assert metric(bench.gw, "sailcast_gateway_drops_total", reason="history_hold_full") == 1
    gate.set()
    await settle()
    assert [r[1] for r in received(a)] == [1, 2, 3, 4]
    await bench.publish("chat", "m", 6)  # its L is 5's position: a gap, repaired
    await settle()
    assert [r[1] for r in received(a)] == [1, 2, 3, 4, 5, 6]


async def test_a_room_subscribed_again_starts_a_new_chain(bench: Bench) -> None:
    a = await bench.connect("a", 4, "chat")
    await bench.publish("chat", "m", 1)
    await bench.gw.socket_disconnected("a")
    bench.clock.advance(2.0)  # the linger ends: unsubscribed
    await settle()
    await bench.publish("chat", "m", 2)  # nobody here
    b = await bench.connect("b", 4, "chat")
    await bench.publish("chat", "m", 3)
    await settle()
    assert [r[1] for r in received(b)] == [3]  # no repair of what came before it joined
    assert metric(bench.gw, "sailcast_gateway_history_gaps_total") == 0
    assert received(a) == [["m", 1, off(1)]]


# -- recovery API ---------------------------------------------------------------------


async def test_join_position_is_the_rooms_last_or_the_high_water(bench: Bench) -> None:
    await bench.connect("a", 4, "chat")
    s1 = await bench.publish("chat", "m", 1)
    await bench.publish("other", "x", 1)  # stored, nobody subscribed here
    assert bench.feed.join_position("chat") == s1
    assert bench.feed.join_position("quiet") == bench.feed.high_water == s1
    assert bench.feed.epoch == EPOCH


async def test_replay_then_go_live_skips_live_messages_the_replay_had(bench: Bench) -> None:
    a = await bench.connect("a", 4, "chat")
    s1 = await bench.publish("chat", "m", 1)
    gate = asyncio.Event()
    bench.stream.gate = gate  # the live repair waits: 3 is held, not yet handed on
    s2 = await bench.publish("chat", "m", 2, live=False)
    s3 = await bench.publish("chat", "m", 3)
    await settle()
    # "r" comes back with offset s1: it is registered, not yet a member
    r = await bench.connect("r", 4)
    replay = await bench.feed.replay_for(
        {"chat": s1, "r": s1}, sid="r", rooms_of_socket={"chat", "r"}, max_bytes=1 << 20
    )
    assert isinstance(replay, Replay)
    assert replay.upto == s3
    bench.gw.rooms.join("r", "chat")  # step 4, synchronously: member, then go_live
    sent = bench.feed.go_live("r", replay)
    assert packets(sent) == [["m", 2, off(s2)], ["m", 3, off(s3)]]
    gate.set()
    await settle()
    s4 = await bench.publish("chat", "m", 4)
    assert received(r) == [["m", 4, off(s4)]]  # 2 and 3 came live after: skipped
    assert [x[1] for x in received(a)] == [1, 2, 3, 4]
    assert metric(bench.gw, "sailcast_gateway_replayed_messages_total") == 2


async def test_replay_applies_omit_and_the_first_room_rule_across_rooms(bench: Bench) -> None:
    body = bench.body(["a1", "b1"], "both", 1)  # one copy per history room, as published
    bench.stream.store("a1", body)
    bench.stream.store("b1", body)
    bench.stream.store("b1", bench.body(["b1"], "mine", 2, omit=("r",)))
    s4, _ = bench.stream.store("b1", bench.body(["b1"], "theirs", 3))
    replay = await bench.feed.replay_for(
        {"a1": 0, "b1": 0}, sid="r", rooms_of_socket={"a1", "b1"}, max_bytes=1 << 20
    )
    assert isinstance(replay, Replay)
    assert [args for _, args in replay.items] == [b'["both",1]', b'["theirs",3]']
    assert replay.upto == s4


async def test_replay_refusals(bench: Bench) -> None:
    stream, feed = bench.stream, bench.feed

    async def replay(starts: dict[str, int], max_bytes: int = 1 << 20) -> Replay | RecoveryRefused:
        return await feed.replay_for(
            starts, sid="r", rooms_of_socket=set(starts), max_bytes=max_bytes
        )

    stream.rules = HistoryRules.parse("small*=2/1m,chat*=100/2m")
    assert await replay({"other": 0}) == RecoveryRefused(NO_HISTORY)
    for i in range(3):
        stream.store("small", bench.body(["small"], "s", i))
    assert await replay({"small": 0}) == RecoveryRefused(HISTORY_EXCEEDED)
    assert isinstance(await replay({"small": 1}), Replay)  # two missed: within the rule
    stream.store("chat", bench.body(["chat"], "c", "x" * 500))
    assert await replay({"chat": 0}, max_bytes=100) == RecoveryRefused(REPLAY_TOO_LARGE)
    stream.store("chat:old", bench.body(["chat:old"], "c", 1), at=time.time() - 1000)
    assert await replay({"chat:old": 0}) == RecoveryRefused(HISTORY_EXCEEDED)
    stream.max_msgs_per_subject = 3  # the stream's per-room bound is reached: trimmed
    for i in range(3):
        stream.store("chat:busy", bench.body(["chat:busy"], "b", i))
    assert await replay({"chat:busy": 0}) == RecoveryRefused(HISTORY_TRIMMED)
    stream.purge_before(stream.seq)
    assert await replay({"chat": 1}) == RecoveryRefused(HISTORY_TRIMMED)
    stream.fail_reads = 1  # a read failing for a moment (a leader election): retried
    assert await replay({"chat": stream.seq}) == Replay("r", stream.seq)
    feed.retry_budget_s = 0.0  # a failure outlasting the retry budget refuses the recovery
    stream.fail_reads = 1
    assert await replay({"chat": stream.seq}) == RecoveryRefused(HISTORY_UNAVAILABLE)
    assert await replay({"chat": stream.seq}) == Replay("r", stream.seq)


async def test_replay_catches_up_with_what_the_live_path_handed_on_meanwhile(
    bench: Bench,
) -> None:
    """A message handed on live between the replay's reads of two rooms is replayed."""
    await bench.connect("a", 4, "x1", "x2")
    await bench.publish("x1", "m", 1)
    real_after = bench.stream.after
    published: list[int] = []

    async def after(subject: str, seq: int, *, batch: int, max_bytes: int) -> Page:
        page = await real_after(subject, seq, batch=batch, max_bytes=max_bytes)
        if subject == S.history("x1") and not published:  # x1 read; now x1 moves on
            published.append(await bench.publish("x1", "m", 2))
        return page

    bench.stream.after = after  # type: ignore[method-assign]
    replay = await bench.feed.replay_for(
        {"x1": 1, "x2": 1}, sid="r", rooms_of_socket={"x1", "x2"}, max_bytes=1 << 20
    )
    assert isinstance(replay, Replay)
    assert [s for s, _ in replay.items] == published
    assert replay.upto == published[0]


async def test_a_replay_outrun_by_the_live_path_at_every_read_is_closed_in_memory(
    bench: Bench,
) -> None:
    """Every socket of a lost gateway recovering at once: each read is slow enough that
    the room moves on during every one of them. The replay is completed from what the
    live path handed on, instead of refused after REPLAY_PASSES_MAX reads (measured:
    one fresh session in 3,586 reconnects under a gateway SIGKILL, bench/delivery)."""
    await bench.connect("a", 4, "x1", "x2")
    first = await bench.publish("x1", "m", 0)
    real_after = bench.stream.after
    published: list[int] = []

    async def after(subject: str, seq: int, *, batch: int, max_bytes: int) -> Page:
        page = await real_after(subject, seq, batch=batch, max_bytes=max_bytes)
        published.append(await bench.publish("x1", "m", len(published) + 1))  # x1 moves on
        return page

    bench.stream.after = after  # type: ignore[method-assign]
    replay = await bench.feed.replay_for(
        {"x1": first, "x2": first}, sid="r", rooms_of_socket={"x1", "x2"}, max_bytes=1 << 20
    )
    assert isinstance(replay, Replay)
    assert [s for s, _ in replay.items] == published  # every one, once, in order
    assert replay.upto == published[-1] == bench.feed.high_water


async def test_recent_messages_that_do_not_reach_back_to_the_cursor_are_not_used(
    bench: Bench,
) -> None:
    """More handed on since the cursor than the feed keeps per room: the replay reads
    the stream again rather than skip what fell out of memory."""
    from gateway.history.feed import RECENT_PER_ROOM

    await bench.connect("a", 4, "x1")
    start = await bench.publish("x1", "m", 0)
    real_after = bench.stream.after
    calls = 0

    async def after(subject: str, seq: int, *, batch: int, max_bytes: int) -> Page:
        nonlocal calls
        calls += 1
        page = await real_after(subject, seq, batch=batch, max_bytes=max_bytes)
        if calls == 1:  # the room moves on by more than memory keeps, once
            for i in range(RECENT_PER_ROOM + 3):
                await bench.publish("x1", "m", 100 + i)
        return page

    bench.stream.after = after  # type: ignore[method-assign]
    replay = await bench.feed.replay_for(
        {"x1": start}, sid="r", rooms_of_socket={"x1"}, max_bytes=1 << 20
    )
    assert isinstance(replay, Replay)
    assert calls >= 2
    seqs = [s for s, _ in replay.items]
    assert seqs == sorted(set(seqs))
    assert len(seqs) == RECENT_PER_ROOM + 3
    assert replay.upto == seqs[-1]


async def test_a_recreated_stream_is_noticed_when_positions_go_back(bench: Bench) -> None:
    a = await bench.connect("a", 4, "chat")
    for i in range(3):
        await bench.publish("chat", "m", i)
    bench.stream.recreate()
    await bench.publish("chat", "m", 3)  # position 1 again: dropped, the stream re-read
    await settle()
    assert bench.stream.refreshes == 1
    assert bench.feed.epoch == "e2"
    s = await bench.publish("chat", "m", 4)
    assert received(a)[-1] == ["m", 4, f"e2:{s}"]
    assert [r[1] for r in received(a)] == [0, 1, 2, 4]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.sampled_from(["r1", "r2", "r3"]), st.sampled_from(["live", "lost", "dup"])),
        max_size=40,
    )
)
def test_whatever_is_lost_or_repeated_every_socket_gets_each_position_once_in_order(
    script: list[tuple[str, str]],
) -> None:
    """Messages on three history rooms, some lost on the way, some re-sent: once each
    room's first and last message arrived, a socket in every room has every position
    exactly once, in order within each room, and a socket in one room has exactly that
    room's, in order. (Across rooms, order holds from a gap's detection on: a message of
    another room handed on before the lost one's room spoke again precedes the repair.)"""

    async def run() -> None:
        async with AsyncExitStack() as stack:
            b = Bench(stack, FakeStream())
            await b.start()
            everywhere = await b.connect("all", 4, "r1", "r2", "r3")
            only_r2 = await b.connect("two", 4, "r2")
            sent: list[tuple[str, bytes, int, int]] = []
            rooms = ("r1", "r2", "r3")
            # each room's first message arrives (a room's chain starts there: design) and
            # so does its last (a gap shows only when the room's next message comes)
            first = [(r, "live") for r in rooms]
            for room, fate in [*first, *script, *((r, "live") for r in rooms)]:
                if fate == "dup" and sent:
                    await b.republish(*sent[-1])
                    continue
                body = b.body([room], "m", room)
                seq, prev = b.stream.store(room, body)
                if fate != "lost":
                    await b.republish(room, body, seq, prev)
                    sent.append((room, body, seq, prev))
                if len(sent) % 7 == 0:
                    await settle()  # some repairs finish between messages, some later
            for _ in range(5):
                await settle()
            stored = [(s, subject) for s, subject, _, _ in b.stream.messages]
            got_all = [position(args) for args in received(everywhere)]
            assert sorted(got_all) == [s for s, _ in stored]  # each once
            for room in rooms:  # in order within each room
                mine = [s for s, subj in stored if subj == S.history(room)]
                assert [s for s in got_all if s in mine] == mine
            got_two = [position(args) for args in received(only_r2)]
            assert got_two == [s for s, subj in stored if subj == S.history("r2")]

    asyncio.run(run())


async def test_a_quiet_rooms_messages_lost_while_nats_was_away_come_after_the_reconnect(
    bench: Bench,
) -> None:
    """No next message would reveal the gap of a quiet room: the reconnect reads every
    followed room's messages after its last position."""
    a = await bench.connect("a", 4, "quiet", "busy")
    s1 = await bench.publish("quiet", "q", 1)
    await bench.publish("busy", "b", 1)
    broker = bench.gw.broker
    assert isinstance(broker, MemoryBroker)
    await broker.disconnect()
    s2 = await bench.publish("quiet", "q", 2)  # re-published while we were away: lost
    s3 = await bench.publish("busy", "b", 2)
    await broker.reconnect()
    await settle()
    assert received(a)[2:] == [["q", 2, off(s2)], ["b", 2, off(s3)]]  # room by room
    assert received(a)[0] == ["q", 1, off(s1)]
    assert metric(bench.gw, "sailcast_gateway_history_repaired_messages_total") == 2
    s4 = await bench.publish("quiet", "q", 3)
    assert received(a)[-1] == ["q", 3, off(s4)]
    assert len(received(a)) == 5
