"""Stored publishes pipelined (publisher/pipeline.py), against a real nats-server with
JetStream: many broadcasts to history rooms are all stored, in order, once flushed; a
failed ack surfaces from flush (or the next broadcast) as PublishFailed and is counted;
the window bounds the acks awaited; close and the SyncPublisher's flush wait for them."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator

import nats
import orjson
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from prometheus_client import CollectorRegistry

from gateway.embedded_nats import EmbeddedNats
from gateway.history.stream import HistoryStream
from gateway.settings import HistorySettings
from publisher import FailedPublish, Publisher, PublishFailed, SyncPublisher
from shared.envelope import decode_data
from shared.history import stream_name
from shared.subjects import Subjects, room_name

pytestmark = pytest.mark.integration

RULES = "chat:*=10000/2m"


@pytest.fixture
async def nc(nats_server: EmbeddedNats) -> AsyncIterator[NatsClient]:
    client = await nats.connect(nats_server.url)
    yield client
    await client.close()


async def make_stream(nc: NatsClient, prefix: str) -> HistoryStream:
    return await HistoryStream.ensure(
        nc, Subjects(prefix), HistorySettings(history=RULES, history_storage="memory")
    )


async def stored_count(nc: NatsClient, prefix: str) -> int:
    info = await nc.jetstream().stream_info(stream_name(prefix))
    return int(info.state.messages)


async def silent_store(nc: NatsClient, prefix: str) -> list[Msg]:
    """The stream deleted and something else on `<p>.h.>` that never answers: every
    stored publish is received and its ack never comes (as from a hung JetStream)."""
    got: list[Msg] = []

    async def swallow(msg: Msg) -> None:
        got.append(msg)

    await nc.jetstream().delete_stream(stream_name(prefix))
    await nc.subscribe(f"{prefix}.h.>", cb=swallow)
    await nc.flush()
    return got


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


async def test_many_stored_broadcasts_then_flush_are_all_stored_in_order(
    nc: NatsClient, nats_server: EmbeddedNats, prefix: str
) -> None:
    await make_stream(nc, prefix)
    got: list[Msg] = []
    n = 3000
    all_in = asyncio.Event()

    async def on_msg(msg: Msg) -> None:
        got.append(msg)
        if len(got) == n:
            all_in.set()

    await nc.subscribe(f"{prefix}.r.>", cb=on_msg)  # the re-published copies, in order
    await nc.flush()
    async with await Publisher.connect(nats_server.url, prefix=prefix, stored_window=64) as pub:
        for i in range(n):
            await pub.sockets.broadcast(f"chat:{i % 3}", "said", {"n": i})
            assert pub.stored_pending <= 64
        await pub.flush()
        assert pub.stored_pending == 0
        assert await stored_count(nc, prefix) == n  # at once: flush waited for the acks
        assert pub.stats.messages == n  # every ack checked (and counted) as stored
    await asyncio.wait_for(all_in.wait(), 10)
    per_room: dict[str, list[tuple[int, int]]] = {}
    for msg in got:
        assert msg.headers is not None
        data = orjson.loads(decode_data(msg.data).args)[1]
        room = room_name(msg.subject.rsplit(".", 1)[-1])
        per_room.setdefault(room, []).append((int(msg.headers["Nats-Sequence"]), data["n"]))
    assert sorted(per_room) == ["chat:0", "chat:1", "chat:2"]
    for room, seen in per_room.items():
        positions = [p for p, _ in seen]
        assert positions == sorted(positions), room  # stream sequences increase per room
        assert [i for _, i in seen] == list(range(int(room[-1]), n, 3)), room  # call order


async def test_a_deleted_stream_surfaces_from_flush_as_publish_failed_and_is_counted(
    nc: NatsClient, nats_server: EmbeddedNats, prefix: str
) -> None:
    await make_stream(nc, prefix)
    registry = CollectorRegistry()
    heard: list[FailedPublish] = []
    async with await Publisher.connect(
        nats_server.url, prefix=prefix, registry=registry, on_error=heard.append
    ) as pub:
        for _ in range(2):  # a retry: stored once, its PubAck says "duplicate"
            await pub.sockets.broadcast("chat:1", "paid", 1, msg_id="order-1")
        await pub.flush()
        assert value(registry, "sailcast_publisher_stored_duplicates_total", kind="broadcast") == 1
        assert await stored_count(nc, prefix) == 1
        await nc.jetstream().delete_stream(stream_name(prefix))
        for i in range(3):
            await pub.sockets.broadcast("chat:1", "said", {"n": i})  # returns once sent
        with pytest.raises(PublishFailed, match="no history stream answered") as failed:
            await pub.flush()
        assert failed.value.count == 3
        assert [(f.event, f.room) for f in failed.value.failures] == [("said", "chat:1")] * 3
        assert heard == list(failed.value.failures)  # the same reports went to on_error
        assert pub.failed_total == 3
        assert value(registry, "sailcast_publisher_errors_total", kind="broadcast") == 3
        failures = "sailcast_publisher_stored_failures_total"
        assert value(registry, failures, reason="no_stream") == 3
        await pub.flush()  # reported once: nothing failed since


async def test_the_next_broadcast_raises_what_failed_before_and_sends_nothing(
    nc: NatsClient, nats_server: EmbeddedNats, prefix: str
) -> None:
    await make_stream(nc, prefix)
    heard = asyncio.Event()
    async with await Publisher.connect(
        nats_server.url, prefix=prefix, request_timeout_s=0.3, on_error=lambda _: heard.set()
    ) as pub:
        got = await silent_store(nc, prefix)  # rules still read: chat:* is stored
        await pub.sockets.broadcast("chat:1", "first", 1)
        async with asyncio.timeout(5):
            await heard.wait()
        with pytest.raises(PublishFailed, match="not confirmed stored within") as failed:
            await pub.sockets.broadcast("chat:1", "second", 2)
        assert [f.event for f in failed.value.failures] == ["first"]
        await nc.flush()
        assert [decode_data(m.data).args for m in got] == [b'["first",1]']  # not sent
        await pub.flush()  # taken by the broadcast: not raised twice


async def test_the_window_bounds_the_acks_awaited(
    nc: NatsClient, nats_server: EmbeddedNats, prefix: str
) -> None:
    await make_stream(nc, prefix)
    async with await Publisher.connect(
        nats_server.url, prefix=prefix, stored_window=8, request_timeout_s=1.0
    ) as pub:
        got = await silent_store(nc, prefix)
        started = time.monotonic()
        raised: list[PublishFailed] = []
        most = 0

        async def twenty() -> None:
            nonlocal most
            for i in range(20):
                try:
                    await pub.sockets.broadcast("chat:1", "said", i)
                except PublishFailed as exc:  # the ones before timed out meanwhile
                    raised.append(exc)
                most = max(most, pub.stored_pending)

        sending = asyncio.ensure_future(twenty())
        await asyncio.sleep(0.4)
        await nc.flush()
        assert pub.stored_pending == 8
        assert len(got) == 8  # the ninth waits for room
        assert not sending.done()
        await asyncio.wait_for(sending, 10)  # room came as the first ones timed out
        # not before the first round of timeouts (1 s); a second round is needed only
        # when the first round's failures are all reported by one call: under load they
        # time out one by one and each of up to 8 calls raises one (sending nothing)
        assert time.monotonic() - started >= 1.0
        assert most == 8
        with pytest.raises(PublishFailed, match=r"not confirmed stored within 1\.0s") as last:
            await pub.flush()
        assert pub.stored_pending == 0
        await nc.flush()
        # a call that raised sent nothing; every message sent was reported exactly once
        assert len(got) + len(raised) == 20
        assert sum(e.count for e in [*raised, last.value]) == len(got)


async def test_close_waits_for_pending_acks(
    nc: NatsClient, nats_server: EmbeddedNats, prefix: str
) -> None:
    await make_stream(nc, prefix)
    pub = await Publisher.connect(nats_server.url, prefix=prefix)
    for i in range(2000):
        await pub.sockets.broadcast("chat:1", "said", i)
    await pub.close()
    assert pub.stored_pending == 0
    assert pub.stats.messages == 2000  # every ack came back before the connection closed
    assert await stored_count(nc, prefix) == 2000


async def test_wait_stored_raises_at_the_call(
    nc: NatsClient, nats_server: EmbeddedNats, prefix: str
) -> None:
    await make_stream(nc, prefix)
    heard: list[FailedPublish] = []
    async with await Publisher.connect(
        nats_server.url, prefix=prefix, on_error=heard.append
    ) as pub:
        await pub.sockets.broadcast(["chat:1", "chat:2"], "said", 1, wait_stored=True)
        assert await stored_count(nc, prefix) == 2  # confirmed when the call returned
        await nc.jetstream().delete_stream(stream_name(prefix))
        with pytest.raises(Exception, match="no history stream answered") as raised:
            await pub.sockets.broadcast("chat:1", "said", 2, wait_stored=True)
        assert not isinstance(raised.value, PublishFailed)  # its own failure, at the call
        await pub.flush()  # not reported again
        assert heard == []


def test_the_sync_twins_flush_waits_for_the_acks(nats_server: EmbeddedNats, prefix: str) -> None:
    async def setup() -> None:
        admin = await nats.connect(nats_server.url)
        await make_stream(admin, prefix)
        await admin.close()

    asyncio.run(setup())
    sync = SyncPublisher.connect(nats_server.url, prefix=prefix, request_timeout_s=1.0)
    try:
        for i in range(500):
            sync.sockets.broadcast("chat:1", "said", i)
        sync.flush()

        async def count() -> int:
            admin = await nats.connect(nats_server.url)
            try:
                return await stored_count(admin, prefix)
            finally:
                await admin.close()

        assert asyncio.run(count()) == 500  # stored when flush returned
        sync.sockets.broadcast("chat:2", "sure", 1, wait_stored=True)
        assert asyncio.run(count()) == 501  # stored when the call returned

        # acks that never come: flush returns only once they are given up on
        async def hang() -> None:
            admin = await nats.connect(nats_server.url)
            await silent_store(admin, prefix)
            await asyncio.sleep(3)  # keep swallowing while the twin publishes
            await admin.close()

        hung = threading.Thread(target=lambda: asyncio.run(hang()))
        hung.start()
        time.sleep(0.5)
        for i in range(5):
            sync.sockets.broadcast("chat:1", "lost", i)
        started = time.monotonic()
        with pytest.raises(PublishFailed, match="not confirmed stored") as failed:
            sync.flush()
        assert time.monotonic() - started >= 0.5  # it waited for the missing acks
        assert failed.value.count == 5
        assert sync.failed_total == 5
        hung.join()
    finally:
        sync.close()


async def test_a_nats_outage_reports_the_unconfirmed_and_a_retry_with_msg_id_stores_once(
    prefix: str,
) -> None:
    """NATS stopped under pipelined stored publishes: their acks never come, flush raises
    them (after NATS is back), and retrying them with their msg_id stores each once,
    including those nats-py sent from its reconnect buffer meanwhile."""
    server = EmbeddedNats().start()
    try:
        admin = await nats.connect(server.url)
        await HistoryStream.ensure(
            admin, Subjects(prefix), HistorySettings(history=RULES, history_storage="file")
        )
        await admin.close()
        async with await Publisher.connect(server.url, prefix=prefix, request_timeout_s=1.0) as pub:
            for i in range(50):
                await pub.sockets.broadcast("chat:1", "said", i, msg_id=f"m{i}")
            await pub.flush()
            server.stop()
            for i in range(50, 70):  # sent (or buffered by nats-py) while NATS is down
                await pub.sockets.broadcast("chat:1", "said", i, msg_id=f"m{i}")
            await asyncio.sleep(1.5)  # their acks are overdue
            await asyncio.to_thread(server.start)  # same port, same store
            with pytest.raises(PublishFailed, match="not confirmed stored") as failed:
                await pub.flush(timeout=10)
            assert failed.value.count == 20
            for i in range(50, 70):  # the worker retries what flush reported
                await pub.sockets.broadcast("chat:1", "said", i, msg_id=f"m{i}")
            await pub.flush(timeout=10)
        admin = await nats.connect(server.url)
        assert await stored_count(admin, prefix) == 70  # each once
        await admin.close()
    finally:
        server.close()
