"""History rooms on the live path and the replay, against a real nats-server with
JetStream and a real history stream: a python-socketio client gets each history event
with its offset as last argument (and a `null` after a non-history event whose last
argument is a string, so socket.io-client never takes it for an offset); the recovery
reads (`replay_for`) fetch what a socket missed in order and refuse when the stream no
longer holds all of it."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import nats
import pytest
from nats.aio.client import Client as NatsClient

from gateway.embedded_nats import EmbeddedNats
from gateway.history.direct_get import DirectGet
from gateway.history.feed import (
    HISTORY_TRIMMED,
    NO_HISTORY,
    HistoryFeed,
    RecoveryRefused,
    Replay,
)
from gateway.history.stream import HistoryStream
from gateway.metrics import GatewayMetrics
from gateway.settings import HistorySettings
from publisher import Publisher
from shared.envelope import KIND_BROADCAST, encode_args, encode_data
from shared.subjects import Subjects
from tests.helpers import GatewayProcess, RecordingClient

pytestmark = pytest.mark.integration


@pytest.fixture
async def nc(nats_server: EmbeddedNats) -> AsyncIterator[NatsClient]:
    client = await nats.connect(nats_server.url)
    yield client
    await client.close()


def body(room: str, event: str, data: Any) -> bytes:
    return encode_data(KIND_BROADCAST, encode_args(event, data), ts=time.time(), rooms=[room])


async def store(nc: NatsClient, subjects: Subjects, room: str, data: Any) -> int:
    ack = await nc.jetstream().publish(subjects.history(room), body(room, "m", data))
    return int(ack.seq)


async def test_a_client_gets_history_events_with_their_offset_last(
    nc: NatsClient,
    prefix: str,
    gateway_factory: Callable[..., GatewayProcess],
    client_factory: Callable[..., Any],
    publisher: Publisher,
) -> None:
    rules = "chat*=100/2m"
    gw = gateway_factory(history=rules, history_storage="memory")
    subjects = Subjects(prefix)
    stream = await HistoryStream.ensure(
        nc, subjects, HistorySettings(history=rules, history_storage="memory")
    )
    client: RecordingClient = await client_factory(gw)
    await publisher.sockets.join(client.sid, ["chat", "plain"])
    s1 = await store(nc, subjects, "chat", {"n": 1})
    await client.wait_count(1)
    await publisher.sockets.broadcast("plain", "text", "hello")  # a room without history
    await publisher.sockets.broadcast("plain", "obj", {"k": "v"})
    await publisher.flush()  # another connection than `nc`: in NATS before the next store
    s2 = await store(nc, subjects, "chat", {"n": 2})
    events = await client.wait_count(4)
    assert events == [
        ("m", [{"n": 1}, f"{stream.epoch}:{s1}"]),
        ("text", ["hello", None]),
        ("obj", {"k": "v"}),
        ("m", [{"n": 2}, f"{stream.epoch}:{s2}"]),
    ]


async def test_replay_for_reads_the_real_stream_and_refuses_when_it_was_trimmed(
    nc: NatsClient, prefix: str
) -> None:
    subjects = Subjects(prefix)
    stream = await HistoryStream.ensure(
        nc, subjects, HistorySettings(history="chat*=4/2m", history_storage="memory")
    )
    delivered: list[int] = []
    feed = HistoryFeed(
        stream,
        DirectGet(nc, stream.name),
        subjects,
        lambda room, data, seq: delivered.append(seq),
        GatewayMetrics(),
    )
    assert feed.epoch == stream.epoch
    seqs = [await store(nc, subjects, "chat:a", i) for i in range(3)]
    other = await store(nc, subjects, "chat:b", "b")

    replay = await feed.replay_for(
        {"chat:a": seqs[0], "chat:b": 0},
        sid="s1",
        rooms_of_socket={"chat:a", "chat:b"},
        max_bytes=1 << 20,
    )
    assert isinstance(replay, Replay)
    assert [s for s, _ in replay.items] == [seqs[1], seqs[2], other]
    assert replay.items[0][1] == b'["m",1]'
    assert replay.upto == other
    sent = feed.go_live("s1", replay)
    assert [p.text for p in sent][:1] == [f'42["m",1,"{stream.epoch}:{seqs[1]}"]']

    refused = await feed.replay_for(
        {"elsewhere": 0}, sid="s1", rooms_of_socket={"elsewhere"}, max_bytes=1 << 20
    )
    assert refused == RecoveryRefused(NO_HISTORY)

    for i in range(4):  # chat:a holds at most 4: the ones after seqs[0] are pushed out
        await store(nc, subjects, "chat:a", 10 + i)
    refused = await feed.replay_for(
        {"chat:a": seqs[0]}, sid="s1", rooms_of_socket={"chat:a"}, max_bytes=1 << 20
    )
    assert refused == RecoveryRefused(HISTORY_TRIMMED)

    await nc.jetstream().purge_stream(stream.name)
    await stream.refresh()
    last = await store(nc, subjects, "chat:b", "after purge")
    refused = await feed.replay_for(
        {"chat:b": other}, sid="s1", rooms_of_socket={"chat:b"}, max_bytes=1 << 20
    )
    assert refused == RecoveryRefused(HISTORY_TRIMMED)
    ok = await feed.replay_for(
        {"chat:b": last - 1}, sid="s1", rooms_of_socket={"chat:b"}, max_bytes=1 << 20
    )
    assert isinstance(ok, Replay)
    assert [s for s, _ in ok.items] == [last]


async def test_direct_get_pages_a_rooms_messages(nc: NatsClient, prefix: str) -> None:
    subjects = Subjects(prefix)
    stream = await HistoryStream.ensure(
        nc, subjects, HistorySettings(history="*=100/2m", history_storage="memory")
    )
    seqs = [await store(nc, subjects, "r", i) for i in range(5)]
    await store(nc, subjects, "elsewhere", "x")
    reader = DirectGet(nc, stream.name)
    page = await reader.after(subjects.history("r"), seqs[0], batch=2, max_bytes=1 << 20)
    assert [m.seq for m in page.messages] == seqs[1:3]
    assert page.pending == 2
    rest = await reader.after(subjects.history("r"), seqs[2], batch=10, max_bytes=1 << 20)
    assert [m.seq for m in rest.messages] == seqs[3:]
    assert rest.pending == 0
    assert abs(rest.messages[0].time_s - time.time()) < 30
    empty = await reader.after(subjects.history("r"), seqs[-1], batch=10, max_bytes=1 << 20)
    assert empty.messages == []
    assert await reader.last_seq() == seqs[-1] + 1
