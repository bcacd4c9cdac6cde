"""A dead NATS, the sync publisher, and fork safety."""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from nats import connect as nats_connect

from gateway.embedded_nats import EmbeddedNats
from publisher import (
    FailedPublish,
    Publisher,
    PublisherClosed,
    PublishFailed,
    SyncPublisher,
    TransportError,
)
from tests.helpers import GatewayProcess, quiet

pytestmark = pytest.mark.integration


async def wait_until(cond: Callable[[], bool], timeout: float, what: str) -> float:
    started = time.monotonic()
    while not cond():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what} did not happen within {timeout}s")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def test_nats_restart_clients_stay_and_delivery_resumes(
    gateway_factory: Callable[..., GatewayProcess], prefix: str, client_factory: Any
) -> None:
    nats = EmbeddedNats().start()
    try:
        gws = [gateway_factory("ga", nats_url=nats.url), gateway_factory("gb", nats_url=nats.url)]
        a = await client_factory(gws[0])
        b = await client_factory(gws[1])
        pub = await Publisher.connect(nats.url, prefix=prefix)
        await pub.sockets.join([a.sid, b.sid], "lobby")
        await pub.sockets.broadcast("lobby", "n", "before")
        await quiet([a, b], pub)

        nats.stop()
        await wait_until(lambda: gws[0].http_status("/readyz") == 503, 10, "readyz going red")
        nats.start()  # same port
        down_at = time.monotonic()
        await wait_until(lambda: all(g.http_status("/readyz") == 200 for g in gws), 15, "recovery")
        recovered_s = time.monotonic() - down_at
        await wait_until(lambda: pub.connected, 15, "publisher reconnect")

        assert a.client.connected
        assert b.client.connected
        await pub.sockets.broadcast("lobby", "n", "after")
        await quiet([a, b], pub)
        assert [d for _, d in a.events] == ["before", "after"]
        assert [d for _, d in b.events] == ["before", "after"]
        # membership operations work again too
        await pub.sockets.join(a.sid, "new-room")
        assert "new-room" in await pub.sockets.rooms(a.sid)
        assert gws[0].metric("sailcast_gateway_nats_reconnects_total") >= 1
        print(f"\nNATS restart: gateways ready again {recovered_s:.2f}s after the server came back")
        await pub.close()
    finally:
        nats.close()


async def test_publisher_against_dead_nats_fails_clearly(prefix: str) -> None:
    nats = EmbeddedNats().start()
    url = nats.url
    nats.close()
    with pytest.raises(TransportError, match="cannot connect to NATS"):
        await Publisher.connect(url, prefix=prefix)


async def test_sync_publisher_from_threads(
    two_gateways: list[GatewayProcess], nats_server: EmbeddedNats, prefix: str, client_factory: Any
) -> None:
    a = await client_factory(two_gateways[0])
    b = await client_factory(two_gateways[1])
    sync = SyncPublisher(nats_server.url, prefix=prefix)
    try:

        def work() -> None:
            sync.sockets.join([a.sid, b.sid], "lobby")
            for i in range(5):
                sync.sockets.broadcast("lobby", "n", i, omit=a.sid if i == 0 else None)
            sync.flush()

        t = threading.Thread(target=work)
        t.start()
        await asyncio.get_running_loop().run_in_executor(None, t.join)
        async with await Publisher.connect(nats_server.url, prefix=prefix) as pub:
            await quiet([a, b], pub)
        assert [d for _, d in a.events] == [1, 2, 3, 4]
        assert [d for _, d in b.events] == [0, 1, 2, 3, 4]
        assert await asyncio.to_thread(sync.sockets.rooms, a.sid) == sorted([a.sid, "lobby"])
    finally:
        sync.close()


async def test_sync_broadcasts_queue_but_keep_order_and_raise_at_the_call_site(
    two_gateways: list[GatewayProcess], nats_server: EmbeddedNats, prefix: str, client_factory: Any
) -> None:
    from publisher import NotSerializable

    a = await client_factory(two_gateways[0])
    b = await client_factory(two_gateways[1])
    sync = SyncPublisher(nats_server.url, prefix=prefix)
    try:

        def work() -> None:
            sync.sockets.join([a.sid, b.sid], "room")
            with pytest.raises(NotSerializable):
                sync.sockets.broadcast("room", "bad", {"x": object()})
            for i in range(500):
                sync.sockets.broadcast("room", "n", i)
            # queued broadcasts go out before the leave: b still gets all 500
            sync.sockets.leave(b.sid, "room")
            sync.sockets.broadcast("room", "n", "after-leave")
            sync.sockets.blast("bye", None, omit=a.sid)
            sync.flush()

        await asyncio.to_thread(work)
        async with await Publisher.connect(nats_server.url, prefix=prefix) as pub:
            await quiet([a, b], pub)
        assert [d for _, d in a.events] == [*range(500), "after-leave"]
        assert [d for _, d in b.events] == [*range(500), None]
    finally:
        sync.close()


def _child_broadcast(sync: SyncPublisher, room: str, queue: Any) -> None:
    try:
        sync.sockets.broadcast(room, "from-child", {"ok": True})
        sync.flush()
        queue.put("sent")
    except Exception as exc:  # report, the parent asserts
        queue.put(repr(exc))


async def test_sync_publisher_survives_fork(
    two_gateways: list[GatewayProcess], nats_server: EmbeddedNats, prefix: str, client_factory: Any
) -> None:
    a = await client_factory(two_gateways[0])
    sync = SyncPublisher(nats_server.url, prefix=prefix)
    try:
        sync.sockets.join(a.sid, "forked")  # the parent used it before forking
        ctx = multiprocessing.get_context("fork")
        q = ctx.Queue()
        proc = ctx.Process(target=_child_broadcast, args=(sync, "forked", q))
        proc.start()
        result = await asyncio.to_thread(q.get, True, 20)
        await asyncio.to_thread(proc.join, 10)
        assert result == "sent"
        await a.wait_for(lambda ev: ("from-child", {"ok": True}) in ev, timeout=10)
        sync.sockets.broadcast("forked", "from-parent", 1)  # parent still works
        await a.wait_for(lambda ev: ("from-parent", 1) in ev, timeout=10)
    finally:
        sync.close()


async def test_sync_publisher_starts_while_nats_is_down_and_connects_once_it_is_up(
    prefix: str,
) -> None:
    """A Django project builds its publisher at import time: that must work with NATS
    down; the first use says clearly what is wrong, a later call just works."""
    import nats

    probe = EmbeddedNats().start()  # find a free port, then leave it unused
    port = probe.port
    probe.close()
    url = f"nats://sail:s3cret@127.0.0.1:{port}"

    sync = SyncPublisher(url, prefix=prefix, connect_timeout_s=1.0)  # does not connect
    server: EmbeddedNats | None = None
    try:
        assert not sync.connected
        with pytest.raises(TransportError) as failed:
            await asyncio.to_thread(sync.sockets.broadcast, "lobby", "n", 1)
        message = str(failed.value)
        assert f"127.0.0.1:{port}" in message
        assert "s3cret" not in message
        assert "tries again on the next call" in message
        assert failed.value.__cause__ is not None  # the cause is chained

        server = EmbeddedNats(port, extra_args=("--user", "sail", "--pass", "s3cret")).start()
        nc = await nats.connect(url)
        try:
            sub = await nc.subscribe(sync.subjects.room("lobby"))
            await nc.flush()

            def use() -> None:
                sync.sockets.broadcast("lobby", "n", 2)
                sync.flush()

            await asyncio.to_thread(use)  # the next call connects and publishes
            msg = await sub.next_msg(timeout=5)
            assert msg.data.endswith(b'["n",2]')
            assert sync.connected
        finally:
            await nc.close()
    finally:
        await asyncio.to_thread(sync.close)
        if server is not None:
            server.close()


# -- queued publishes that fail after their call returned (issue 16 #2) --------------------
SERVER_MAX_PAYLOAD_BYTES = 8192
BIG = "x" * 16_000
"""Within the publisher's own limit (1 MiB), over the server's: nats-py refuses it when
the loop thread publishes it, after the call has returned."""


def small_payload_nats(tmp_path: Path) -> EmbeddedNats:
    conf = tmp_path / "nats.conf"
    conf.write_text(f"max_payload: {SERVER_MAX_PAYLOAD_BYTES}\n")
    return EmbeddedNats(jetstream=False, extra_args=("-c", str(conf))).start()


async def test_sync_queued_failures_are_reported_and_never_cost_a_later_call_its_message(
    gateway_factory: Callable[..., GatewayProcess],
    prefix: str,
    client_factory: Any,
    tmp_path: Path,
) -> None:
    nats = small_payload_nats(tmp_path)
    heard: list[FailedPublish] = []
    sync = SyncPublisher(nats.url, prefix=prefix, on_error=heard.append)
    try:
        a = await client_factory(gateway_factory("gw", nats_url=nats.url))

        def work() -> PublishFailed:
            sync.sockets.join(a.sid, "room")
            sync.sockets.broadcast("room", "m", 0)
            sync.sockets.broadcast("room", "big", BIG)
            sync.sockets.broadcast("room", "m", 1)  # returns, and its message is sent
            sync.sockets.broadcast(["room", "other"], "bigger", BIG)  # two publishes
            sync.sockets.join(a.sid, "second")  # raises nothing about the failures before
            sync.sockets.broadcast("second", "m", 2)
            with pytest.raises(PublishFailed) as failed:
                sync.flush()
            sync.flush()  # nothing failed since the last flush
            return failed.value

        failed = await asyncio.to_thread(work)
        await a.wait_for(lambda ev: bool(ev) and ev[-1] == ("m", 2))
        assert a.events == [("m", 0), ("m", 1), ("m", 2)]

        assert failed.count == 3
        assert [(f.kind, f.event, f.room) for f in failed.failures] == [
            ("broadcast", "big", "room"),
            ("broadcast", "bigger", "room"),
            ("broadcast", "bigger", "other"),
        ]
        for f in failed.failures:
            assert isinstance(f.error, TransportError)
            assert "maximum payload exceeded" in str(f.error)
        assert str(failed).startswith("3 queued publish(es) never reached NATS: broadcast 'big'")
        assert heard == list(failed.failures)  # on_error heard each one, in order
        assert sync.failed_total == 3

        # a failure nobody flushed is raised by close(), after closing
        def unflushed() -> PublishFailed:
            sync.sockets.blast("huge", BIG)
            sync.sockets.rooms(a.sid)  # waits for the outbox: the blast has failed
            with pytest.raises(PublishFailed) as at_close:
                sync.close()
            with pytest.raises(PublisherClosed):  # closed all the same
                sync.sockets.broadcast("room", "m", 3)
            return at_close.value

        at_close = await asyncio.to_thread(unflushed)
        assert [(f.kind, f.event, f.room) for f in at_close.failures] == [("blast", "huge", None)]
        assert sync.failed_total == 4
        assert len(heard) == 4
    finally:
        await asyncio.to_thread(sync.close)
        nats.close()


async def test_an_on_error_callback_that_misbehaves_does_not_stop_the_publisher(
    prefix: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """It runs on the publisher's thread: a blocking call from there would wait for
    itself, so it raises UsageError; whatever the callback raises is logged."""
    nats = small_payload_nats(tmp_path)
    seen: list[str] = []

    def on_error(failure: FailedPublish) -> None:
        seen.append(failure.event)
        sync.flush()  # not allowed here

    sync = SyncPublisher(nats.url, prefix=prefix, on_error=on_error)
    try:
        nc = await nats_connect(nats.url)
        sub = await nc.subscribe(sync.subjects.room("room"))
        await nc.flush()

        def work() -> int:
            sync.sockets.broadcast("room", "big", BIG)
            sync.sockets.broadcast("room", "small", 1)
            with pytest.raises(PublishFailed) as failed:
                sync.flush()
            return failed.value.count

        assert await asyncio.to_thread(work) == 1
        msg = await sub.next_msg(timeout=5)
        assert msg.data.endswith(b'["small",1]')
        assert seen == ["big"]
        assert "on_error callback raised" in caplog.text
        assert "called on its own thread" in caplog.text
        await nc.close()
    finally:
        await asyncio.to_thread(sync.close)
        nats.close()


async def test_leaving_a_with_block_reports_unflushed_failures(
    prefix: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`with SyncPublisher(...)` raises them on a normal exit; when the block is already
    leaving by an exception, that one propagates and the failures are logged."""
    nats = small_payload_nats(tmp_path)
    try:

        def block(fail: bool) -> None:
            with SyncPublisher(nats.url, prefix=prefix) as sync:
                sync.sockets.blast("huge", BIG)
                if fail:
                    raise KeyError("the task's own error")

        with pytest.raises(PublishFailed, match="blast 'huge' to everyone"):
            await asyncio.to_thread(block, False)
        with pytest.raises(KeyError, match="the task's own error"):
            await asyncio.to_thread(block, True)
        assert "blast 'huge' to everyone" in caplog.text
        assert "not raised: KeyError is propagating" in caplog.text
    finally:
        nats.close()
