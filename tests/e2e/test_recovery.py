"""Connection-state recovery end to end (docs/recovery.md): real nats-server with
JetStream, real gateway processes, real npm clients (socket.io-client 4, sails.io.js
1.2.1 with and without the add-on) and python-socketio.

Each client connects through a TCP proxy the test controls (`CutProxy`): it cuts every
connection (telling the gateway, or leaving the gateway's side open as a dead network
path would), refuses connections while "down" (so messages can be published while the
client is surely away), and points new connections at another gateway. Messages are
published to the history rooms as workers publish them (JetStream, awaiting the ack).
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import jwt
import nats
import pytest
import pytest_asyncio
from nats.js import JetStreamContext

from gateway.embedded_nats import EmbeddedNats
from publisher import Allow, ConnectCheck, Publisher, Router
from shared.history import parse_offset, stream_name
from tests.helpers import GatewayProcess, connect_client
from tests.recovery_harness import away, numbers

pytestmark = pytest.mark.e2e

HISTORY = {"history": "chat*=100/2m", "history_storage": "memory"}
SESSION_WRITTEN_S = 0.4
"""Longer than the session store's coalescing (0.1 s) and a KV round trip."""


@pytest_asyncio.fixture
async def js(nats_server: EmbeddedNats) -> AsyncIterator[JetStreamContext]:
    nc = await nats.connect(nats_server.url)
    yield nc.jetstream()
    await nc.close()


class Worker:
    """An app worker's publisher, connected at its first broadcast: after the gateways
    created the history stream, so it reads their rules at connect and sends history
    rooms' broadcasts through JetStream (stored once the ack is back)."""

    def __init__(self, url: str, prefix: str) -> None:
        self.url, self.prefix = url, prefix
        self.pub: Publisher | None = None

    async def publish(self, room: str, n: int, **extra: Any) -> None:
        if self.pub is None:
            self.pub = await Publisher.connect(self.url, prefix=self.prefix)
            assert self.pub.history_rules, "the worker sees no history rules"
        await self.pub.sockets.broadcast(room, "m", {"n": n, **extra})


@pytest_asyncio.fixture
async def worker(nats_server: EmbeddedNats, prefix: str) -> AsyncIterator[Worker]:
    w = Worker(nats_server.url, prefix)
    yield w
    if w.pub is not None:
        await w.pub.close()


def offsets_of(events: list[dict[str, Any]]) -> list[tuple[str, int] | None]:
    return [parse_offset(e["args"][-1]) for e in events]


async def joined(publisher: Publisher, sid: str, room: str = "chat") -> None:
    await publisher.sockets.join(sid, room)
    await asyncio.sleep(SESSION_WRITTEN_S)  # the session record has the room


# -- socket.io-client 4 ------------------------------------------------------------------


@pytest.mark.parametrize("where", ["same", "other", "other_unnoticed"])
async def test_v4_recovers_id_rooms_and_missed_events_in_order(
    gateway_factory: Callable[..., GatewayProcess],
    proxies: Callable[[int], Any],
    node_clients: Callable[..., Any],
    publisher: Publisher,
    worker: Worker,
    where: str,
) -> None:
    gwa = gateway_factory("gwa", **HISTORY)
    gwb = gateway_factory("gwb", **HISTORY) if where != "same" else gwa
    proxy = await proxies(gwa.port)
    client = await node_clients(proxy.url, "v4")
    first = await client.next("connect")
    assert first["recovered"] is False
    await joined(publisher, first["id"])
    await worker.publish("chat", 1)
    assert numbers(await client.events(1)) == [1]

    await away(proxy, client, tell_gateway=where != "other_unnoticed")
    for n in (2, 3):
        await worker.publish("chat", n)
    proxy.target = gwb.port
    proxy.down = False
    back = await client.next("connect")
    assert back == {"step": "connect", "id": first["id"], "recovered": True}
    await worker.publish("chat", 4)  # the room was kept: live again
    got = await client.events(4)
    assert numbers(got) == [1, 2, 3, 4]  # missed ones first, in order, once
    positions = offsets_of(got)
    assert all(p is not None for p in positions)
    assert [p[1] for p in positions if p] == sorted({p[1] for p in positions if p})
    await asyncio.sleep(0.3)
    assert numbers(client.received()) == [1, 2, 3, 4]  # no late duplicate
    assert gwb.metric('sailcast_gateway_recoveries_total{outcome="recovered",reason="ok"}') == 1
    if where == "other_unnoticed":  # the old connection was evicted by gwb's takeover
        assert gwa.metric("sailcast_gateway_connections") == 0
        evicted = 'sailcast_gateway_control_requests_total{kind="evict",outcome="ok"}'
        assert gwa.metric(evicted) == 1


async def test_v4_recovers_on_another_gateway_after_a_sigkill(
    gateway_factory: Callable[..., GatewayProcess],
    proxies: Callable[[int], Any],
    node_clients: Callable[..., Any],
    publisher: Publisher,
    worker: Worker,
) -> None:
    gwa = gateway_factory("gwa", **HISTORY)
    gwb = gateway_factory("gwb", **HISTORY)
    proxy = await proxies(gwa.port)
    client = await node_clients(proxy.url, "v4")
    first = await client.next("connect")
    await joined(publisher, first["id"])
    await worker.publish("chat", 1)
    await client.events(1)
    proxy.down = True
    gwa.proc.send_signal(signal.SIGKILL)  # nothing written on the way out
    await asyncio.to_thread(gwa.proc.wait, 10)
    await client.next("disconnect")
    for n in (2, 3):
        await worker.publish("chat", n)
    proxy.target = gwb.port
    proxy.down = False
    back = await client.next("connect")
    assert back == {"step": "connect", "id": first["id"], "recovered": True}
    await worker.publish("chat", 4)
    assert numbers(await client.events(4)) == [1, 2, 3, 4]


async def test_v4_recovers_on_another_gateway_after_a_drain(
    gateway_factory: Callable[..., GatewayProcess],
    proxies: Callable[[int], Any],
    node_clients: Callable[..., Any],
    publisher: Publisher,
    worker: Worker,
) -> None:
    gwa = gateway_factory("gwa", **HISTORY)
    gwb = gateway_factory("gwb", **HISTORY)
    proxy = await proxies(gwa.port)
    client = await node_clients(proxy.url, "v4")
    first = await client.next("connect")
    await joined(publisher, first["id"])
    proxy.down = True
    gwa.proc.send_signal(signal.SIGTERM)  # a rolling restart: 1001 to every client
    assert await asyncio.to_thread(gwa.proc.wait, 20) == 0
    await client.next("disconnect")
    await worker.publish("chat", 1)
    proxy.target = gwb.port
    proxy.down = False
    back = await client.next("connect")
    assert back == {"step": "connect", "id": first["id"], "recovered": True}
    await worker.publish("chat", 2)
    assert numbers(await client.events(2)) == [1, 2]


async def test_v4_said_goodbye_so_its_next_connect_is_fresh(
    gateway_factory: Callable[..., GatewayProcess],
    proxies: Callable[[int], Any],
    node_clients: Callable[..., Any],
    publisher: Publisher,
) -> None:
    """As Socket.IO 4: the client's own disconnect() ends the session."""
    gwa = gateway_factory("gwa", **HISTORY)
    proxy = await proxies(gwa.port)
    client = await node_clients(proxy.url, "v4")
    first = await client.next("connect")
    await joined(publisher, first["id"])
    client.command("bounce")
    back = await client.next("connect")
    assert back["recovered"] is False
    assert back["id"] != first["id"]


async def test_v4_gets_a_fresh_session_when_the_window_has_passed(
    gateway_factory: Callable[..., GatewayProcess],
    proxies: Callable[[int], Any],
    node_clients: Callable[..., Any],
    publisher: Publisher,
    worker: Worker,
) -> None:
    gwa = gateway_factory("gwa", recovery_window_s=1, **HISTORY)
    proxy = await proxies(gwa.port)
    client = await node_clients(proxy.url, "v4")
    first = await client.next("connect")
    await joined(publisher, first["id"])
    await away(proxy, client)
    await worker.publish("chat", 2)
    await asyncio.sleep(2.5)  # the session record's TTL ends it
    proxy.down = False
    back = await client.next("connect")
    assert back["recovered"] is False
    assert back["id"] != first["id"]
    await asyncio.sleep(0.3)
    assert client.received() == []  # nothing replayed, no room kept
    assert gwa.metric('sailcast_gateway_recoveries_total{outcome="fresh",reason="expired"}') == 1


async def test_v4_gets_a_fresh_session_when_the_stream_was_recreated(
    gateway_factory: Callable[..., GatewayProcess],
    proxies: Callable[[int], Any],
    node_clients: Callable[..., Any],
    publisher: Publisher,
    worker: Worker,
    js: JetStreamContext,
) -> None:
    gwa = gateway_factory("gwa", **HISTORY)
    proxy = await proxies(gwa.port)
    client = await node_clients(proxy.url, "v4")
    first = await client.next("connect")
    await joined(publisher, first["id"])
    await worker.publish("chat", 1)
    await client.events(1)
    await away(proxy, client)
    await js.delete_stream(stream_name(publisher.subjects.prefix))
    gwb = gateway_factory("gwb", **HISTORY)  # creates the stream anew: another epoch
    proxy.target = gwb.port
    proxy.down = False
    back = await client.next("connect")
    assert back["recovered"] is False
    assert back["id"] != first["id"]
    assert gwb.metric('sailcast_gateway_recoveries_total{outcome="fresh",reason="epoch"}') == 1


async def test_v4_gets_a_fresh_session_when_the_replay_is_over_its_bound(
    gateway_factory: Callable[..., GatewayProcess],
    proxies: Callable[[int], Any],
    node_clients: Callable[..., Any],
    publisher: Publisher,
    worker: Worker,
) -> None:
    gwa = gateway_factory("gwa", max_buffered_bytes=20_000, **HISTORY)
    proxy = await proxies(gwa.port)
    client = await node_clients(proxy.url, "v4")
    first = await client.next("connect")
    await joined(publisher, first["id"])
    await away(proxy, client)
    big = "x" * 1000
    for n in range(40):  # ~40 KB missed, twice the socket's outbound bound
        await worker.publish("chat", n, pad=big)
    proxy.down = False
    back = await client.next("connect")
    assert back["recovered"] is False
    assert (
        gwa.metric('sailcast_gateway_recoveries_total{outcome="fresh",reason="replay_too_large"}')
        == 1
    )


async def test_v4_gets_a_fresh_session_when_its_history_was_trimmed(
    gateway_factory: Callable[..., GatewayProcess],
    proxies: Callable[[int], Any],
    node_clients: Callable[..., Any],
    publisher: Publisher,
    worker: Worker,
) -> None:
    gwa = gateway_factory("gwa", history="chat*=3/2m", history_storage="memory")
    proxy = await proxies(gwa.port)
    client = await node_clients(proxy.url, "v4")
    first = await client.next("connect")
    await joined(publisher, first["id"])
    await away(proxy, client)
    for n in range(5):  # the room keeps 3: two were pushed out
        await worker.publish("chat", n)
    proxy.down = False
    back = await client.next("connect")
    assert back["recovered"] is False
    fresh = gwa.metrics()
    assert (
        sum(
            v
            for k, v in fresh.items()
            if k.startswith('sailcast_gateway_recoveries_total{outcome="fresh"')
            and ("history_trimmed" in k or "history_exceeded" in k)
        )
        == 1
    )
    await asyncio.sleep(0.3)
    assert client.received() == []  # nothing of a partial replay


def token(secret: str, ttl_s: float) -> str:
    return str(jwt.encode({"sub": "u7", "exp": int(time.time() + ttl_s)}, secret, "HS256"))


@pytest.mark.parametrize("skip_hook", [False, True])
async def test_the_connect_check_runs_on_recovery_unless_told_not_to(
    gateway_factory: Callable[..., GatewayProcess],
    proxies: Callable[[int], Any],
    node_clients: Callable[..., Any],
    publisher: Publisher,
    skip_hook: bool,
) -> None:
    """A token valid at connect and expired by the reconnect: the check refuses the
    recovery (by default), or is not asked (--recovery-skip-connect-hook)."""
    secret = "a-32-byte-or-longer-secret-for-the-recovery-test"
    gwa = gateway_factory(
        "gwa",
        before_connect="jwt",
        jwt_secret=secret,
        jwt_leeway_s=0,
        recovery_skip_connect_hook=str(skip_hook).lower(),
        **HISTORY,
    )
    proxy = await proxies(gwa.port)
    client = await node_clients(proxy.url, "v4", "m", token(secret, 2.0))
    first = await client.next("connect")
    await joined(publisher, first["id"])
    await away(proxy, client)
    await asyncio.sleep(2.5)  # the token expires
    proxy.down = False
    if skip_hook:
        back = await client.next("connect")
        assert back == {"step": "connect", "id": first["id"], "recovered": True}
    else:
        refused = await client.next("connect_error")
        while refused["message"] in ("websocket error", "timeout"):  # proxy down
            refused = await client.next("connect_error")
        assert refused["message"] == "Unauthorized: token expired"
        assert [s for s in client.steps if s["step"] == "connect"] == [first]


async def test_a_recovered_socket_keeps_its_user_room_and_identity(
    gateway_factory: Callable[..., GatewayProcess],
    proxies: Callable[[int], Any],
    node_clients: Callable[..., Any],
    publisher: Publisher,
    serve: Callable[[Router], Any],
) -> None:
    """Issue 12: the worker's before-connect check makes the socket user u7's;
    recovered on another gateway that does not ask again, it is u7's still (from its
    session record), in u7's room (which keeps no history: it follows from the
    identity), and no after-connect notice is sent for it (it never left)."""
    router = Router()
    asked: list[str] = []

    @router.before_connect
    async def check(c: ConnectCheck) -> Allow:
        asked.append(c.gateway_id)
        return Allow(user_id="u7", info={"name": "Seven"})

    await serve(router)
    config = {"before_connect": "workers", "recovery_skip_connect_hook": "true", **HISTORY}
    gwa, gwb = gateway_factory("gwa", **config), gateway_factory("gwb", **config)
    proxy = await proxies(gwa.port)
    client = await node_clients(proxy.url, "v4", "m", "any-token")
    first = await client.next("connect")
    await joined(publisher, first["id"])
    await publisher.sockets.broadcast_to_user("u7", "m", {"n": 1})
    assert numbers(await client.events(1)) == [1]
    await away(proxy, client)
    proxy.target = gwb.port
    proxy.down = False
    back = await client.next("connect")
    assert back == {"step": "connect", "id": first["id"], "recovered": True}
    await publisher.sockets.broadcast_to_user("u7", "m", {"n": 2})
    assert numbers(await client.events(2)) == [1, 2]
    assert gwb.metric("sailcast_gateway_sockets_with_user") == 1
    assert asked == ["gwa"]  # gwb took who it is from the session
    sent = 'sailcast_gateway_after_connect_notices_total{outcome="sent"}'
    assert (gwa.metric(sent), gwb.metric(sent)) == (1, 0)


# -- sails.io.js -------------------------------------------------------------------------


async def test_sails_io_js_with_the_add_on_recovers(
    gateway_factory: Callable[..., GatewayProcess],
    proxies: Callable[[int], Any],
    node_clients: Callable[..., Any],
    publisher: Publisher,
    worker: Worker,
) -> None:
    gwa = gateway_factory("gwa", **HISTORY)
    gwb = gateway_factory("gwb", **HISTORY)
    proxy = await proxies(gwa.port)
    client = await node_clients(proxy.url, "sails-addon")
    first = await client.next("session")
    assert first["session"]["recovered"] is False
    sid = first["session"]["sid"]
    assert first["id"] == sid
    await joined(publisher, sid)
    await worker.publish("chat", 1)
    got = await client.events(1)
    assert got[0]["args"] == [{"n": 1}]  # the position was popped before the handler
    await away(proxy, client)
    for n in (2, 3):
        await worker.publish("chat", n)
    proxy.target = gwb.port
    proxy.down = False
    back = await client.next("session")
    assert back["session"] == {"pid": first["session"]["pid"], "sid": sid, "recovered": True}
    assert back["id"] == sid
    assert back["recovered"] is True  # io.socket.recovered
    await worker.publish("chat", 4)
    got = await client.events(4)
    assert [e["args"] for e in got] == [[{"n": n}] for n in (1, 2, 3, 4)]


async def test_stock_sails_io_js_is_unchanged(
    gateway_factory: Callable[..., GatewayProcess],
    proxies: Callable[[int], Any],
    node_clients: Callable[..., Any],
    publisher: Publisher,
    worker: Worker,
) -> None:
    gwa = gateway_factory("gwa", **HISTORY)
    proxy = await proxies(gwa.port)
    client = await node_clients(proxy.url, "sails-stock")
    first = await client.next("connect")
    assert first["recovered"] is None
    await joined(publisher, first["id"])
    await worker.publish("chat", 1)
    got = await client.events(1)
    assert got[0]["args"] == [{"n": 1}]  # exactly what was sent: no position added
    await away(proxy, client)
    await worker.publish("chat", 2)
    proxy.down = False
    back = await client.next("connect")
    assert back["id"] != first["id"]  # a new socket, as today
    await worker.publish("chat", 3)
    await publisher.sockets.broadcast(back["id"], "m", {"n": 9})
    got = await client.events(2)
    assert [e["args"] for e in got] == [[{"n": 1}], [{"n": 9}]]  # no room, no replay
    assert not [s for s in client.steps if s["step"] == "session"]


async def test_python_socketio_connects_and_receives_as_before(
    gateway_factory: Callable[..., GatewayProcess],
    publisher: Publisher,
    worker: Worker,
) -> None:
    """python-socketio has no recovery: it ignores the pid, and a reconnect is a new
    socket. A history event ends with its position (as any Socket.IO 4 server with
    recovery on sends it); other events are exactly as sent."""
    gwa = gateway_factory("gwa", **HISTORY)
    client = await connect_client(gwa.url)
    try:
        await publisher.sockets.join(client.sid, "chat")
        await worker.publish("chat", 1)
        await publisher.sockets.broadcast(client.sid, "plain", {"n": 2})
        await client.wait_count(2)
        (hist,) = client.named("m")
        assert hist[0] == {"n": 1}
        assert parse_offset(hist[1]) is not None
        assert client.named("plain") == [{"n": 2}]
        old = client.sid
        await client.client.disconnect()
        await client.client.connect(gwa.url, transports=["websocket"], wait_timeout=10)
        assert client.sid != old
    finally:
        await client.disconnect()
