"""The session store (gateway/recovery/sessions.py) on a real nats-server's KV bucket:
records written coalesced and read back, a takeover's claim wins and the gateway that
lost the session stops writing it (compare-and-set), the TTL ends a session nobody
refreshes and the refresh keeps a live one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest_asyncio

from gateway.broker.nats_broker import NatsBroker
from gateway.embedded_nats import EmbeddedNats
from gateway.recovery.sessions import (
    SessionRecord,
    SessionStore,
    StoredSession,
    is_pid,
    new_pid,
    open_bucket,
)
from gateway.settings import HistorySettings
from shared.config import NatsSettings, parse_servers
from shared.history import sessions_bucket


@pytest_asyncio.fixture
async def broker(nats_server: EmbeddedNats) -> AsyncIterator[NatsBroker]:
    b = await NatsBroker.connect(
        NatsSettings(servers=parse_servers(nats_server.url)), name="test-sessions"
    )
    yield b
    await b.close()


async def store_on(
    broker: NatsBroker, prefix: str, gw: str, window_s: float = 60.0
) -> tuple[SessionStore, list[str]]:
    settings = HistorySettings(history="*=10/1m", recovery_window_s=window_s)
    kv = await open_bucket(broker.client.jetstream(), sessions_bucket(prefix), settings)
    writes: list[str] = []
    store = SessionStore(
        kv, gateway_id=gw, window_s=window_s, epoch=lambda: "e1", on_write=writes.append
    )
    store.start()
    return store, writes


async def eventually(check: object, timeout_s: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        assert callable(check)
        if await check():
            return
        assert loop.time() < deadline, "condition not met"
        await asyncio.sleep(0.05)


async def test_a_session_is_written_coalesced_and_read_back(
    broker: NatsBroker, prefix: str
) -> None:
    store, writes = await store_on(broker, prefix, "gwa")
    try:
        pid = new_pid()
        assert is_pid(pid)
        store.track("s1", pid, data={"user": 7}, rooms={}, revision=None)
        for n in range(20):  # many changes within the coalescing window: few writes
            store.joined("s1", {f"room{n}": n})
        store.left("s1", ["room0"])

        async def written() -> bool:
            got = await store.get(pid)
            return got is not None and len(got.record.rooms) == 19

        await eventually(written)
        got = await store.get(pid)
        assert got is not None
        assert got.record.sid == "s1"
        assert got.record.data == {"user": 7}
        assert got.record.gw == "gwa"
        assert got.record.live
        assert got.record.epoch == "e1"
        assert got.record.rooms == {f"room{n}": n for n in range(1, 20)}
        assert writes.count("ok") <= 3

        store.closed("s1")

        async def closed() -> bool:
            got = await store.get(pid)
            return got is not None and not got.record.live

        await eventually(closed)
        assert len(store) == 0  # its last word written: nothing more to do
        assert await store.get(new_pid()) is None

        ended = new_pid()  # a goodbye (client or server disconnect): nothing to recover
        store.track("s2", ended, data=None, rooms={}, revision=None)

        async def made() -> bool:
            return await store.get(ended) is not None

        await eventually(made)
        store.closed("s2", recoverable=False)

        async def deleted() -> bool:
            return await store.get(ended) is None

        await eventually(deleted)
    finally:
        await store.stop()


async def test_a_takeover_wins_and_the_old_gateway_stops_writing(
    broker: NatsBroker, prefix: str
) -> None:
    old, old_writes = await store_on(broker, prefix, "gwa")
    new, _ = await store_on(broker, prefix, "gwb")
    try:
        pid = new_pid()
        old.track("s1", pid, data=None, rooms={"a": 1}, revision=None)

        async def written() -> bool:
            return await old.get(pid) is not None

        await eventually(written)
        session = await new.get(pid)
        assert session is not None
        revision = await new.claim(session, data={"again": True})
        assert revision is not None
        new.track("s1", pid, data={"again": True}, rooms={"a": 1}, revision=revision)
        old.joined("s1", {"b": 2})  # the old gateway has not heard yet

        async def lost() -> bool:
            return "conflict" in old_writes

        await eventually(lost)
        assert len(old) == 0  # it stopped writing the session
        got = await new.get(pid)
        assert got is not None
        assert got.record.gw == "gwb"
        assert got.record.rooms == {"a": 1}
        assert got.record.data == {"again": True}
    finally:
        await old.stop()
        await new.stop()


async def test_a_claim_retries_when_the_old_gateway_wrote_in_between(
    broker: NatsBroker, prefix: str
) -> None:
    store, _ = await store_on(broker, prefix, "gwb")
    try:
        pid = new_pid()
        kv = await open_bucket(
            broker.client.jetstream(), sessions_bucket(prefix), HistorySettings()
        )
        record = SessionRecord("s9", {"a": 3}, None, "e1", "gwa", True, 0.0)
        first = await kv.create(pid, record.encode())
        await kv.update(pid, record.encode(), last=first)  # the old gateway's late write
        revision = await store.claim(StoredSession(pid, record, first), data=None)
        assert revision is not None
        got = await store.get(pid)
        assert got is not None
        assert got.revision == revision
        assert got.record.gw == "gwb"
    finally:
        await store.stop()


async def test_the_window_ends_a_session_unless_it_is_refreshed(
    broker: NatsBroker, prefix: str
) -> None:
    store, writes = await store_on(broker, prefix, "gwa", window_s=1.5)
    try:
        live, gone = new_pid(), new_pid()
        store.track("s-live", live, data=None, rooms={}, revision=None)
        store.track("s-gone", gone, data=None, rooms={}, revision=None)
        await asyncio.sleep(0.3)
        store.closed("s-gone")
        await asyncio.sleep(2.5)  # past the window: only the refreshed one is left
        assert await store.get(gone) is None
        kept = await store.get(live)
        assert kept is not None
        assert kept.record.live
        assert writes.count("ok") >= 4  # two creates, a close, refreshes
    finally:
        await store.stop()


async def test_a_new_window_updates_the_bucket(broker: NatsBroker, prefix: str) -> None:
    js = broker.client.jetstream()
    name = sessions_bucket(prefix)
    await open_bucket(js, name, HistorySettings(history="*=1/1m", recovery_window_s=60))
    await open_bucket(js, name, HistorySettings(history="*=1/1m", recovery_window_s=30))
    info = await js.stream_info(f"KV_{name}")
    assert info.config.max_age == 30
