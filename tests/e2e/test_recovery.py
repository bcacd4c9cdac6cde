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
import contextlib
import json
import shutil
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import jwt
import nats
import pytest
import pytest_asyncio
from nats.js import JetStreamContext

from gateway.embedded_nats import EmbeddedNats
from publisher import Publisher
from shared.history import parse_offset, stream_name
from tests.helpers import GatewayProcess, connect_client

pytestmark = pytest.mark.e2e

JS_DIR = Path(__file__).parent / "js"
STEP_TIMEOUT_S = 15.0
HISTORY = {"history": "chat*=100/2m", "history_storage": "memory"}
SESSION_WRITTEN_S = 0.4
"""Longer than the session store's coalescing (0.1 s) and a KV round trip."""


class CutProxy:
    """127.0.0.1:<port> → 127.0.0.1:<target>, byte for byte, with a few scissors."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.down = False
        self.port = 0
        self._pairs: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = []
        self._held: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.down:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.transport.abort()
            return
        pair = (writer, up_writer)
        self._pairs.append(pair)
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pump(src, dst))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        if not dst.transport.is_closing() and dst not in self._held:
            dst.transport.abort()

    def cut(self, *, tell_gateway: bool = True) -> None:
        """Drop every client connection; the gateway's side is closed too, or left
        open and unread (the gateway sees nothing: a dead network path)."""
        for client, upstream in self._pairs:
            if not tell_gateway:
                self._held.append(upstream)
            client.transport.abort()
            if tell_gateway:
                upstream.transport.abort()
        self._pairs.clear()

    async def close(self) -> None:
        self.cut()
        for w in self._held:
            w.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        if self._server is not None:
            self._server.close()


class NodeClient:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.steps: list[dict[str, Any]] = []

    async def next(self, step: str) -> dict[str, Any]:
        """The next line of kind `step`; the lines before it are kept in `steps`."""
        assert self.proc.stdout is not None
        while True:
            try:
                line = await asyncio.wait_for(self.proc.stdout.readline(), STEP_TIMEOUT_S)
            except TimeoutError:
                raise AssertionError(
                    f"no {step!r} in {STEP_TIMEOUT_S}s: {self.steps[-8:]}"
                ) from None
            if not line:
                err = await self.proc.stderr.read() if self.proc.stderr else b""
                raise AssertionError(f"client exited: {self.steps[-5:]} {err.decode()[-2000:]}")
            if not line.startswith(b"{"):
                continue
            data: dict[str, Any] = json.loads(line)
            assert data["step"] != "error", data
            self.steps.append(data)
            if data["step"] == step:
                return data

    async def events(self, n: int) -> list[dict[str, Any]]:
        """Every event so far, once there are `n`."""
        while len(self.received()) < n:
            await self.next("event")
        return self.received()

    def received(self) -> list[dict[str, Any]]:
        return [s for s in self.steps if s["step"] == "event"]

    def command(self, cmd: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(cmd.encode() + b"\n")

    async def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 5)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


@pytest_asyncio.fixture
async def proxies() -> AsyncIterator[Callable[[int], Any]]:
    made: list[CutProxy] = []

    async def make(target: int) -> CutProxy:
        proxy = CutProxy(target)
        await proxy.start()
        made.append(proxy)
        return proxy

    yield make
    for p in made:
        await p.close()


@pytest_asyncio.fixture
async def node_clients() -> AsyncIterator[Callable[..., Any]]:
    made: list[NodeClient] = []
    node = shutil.which("node")

    async def start(url: str, stack: str, events: str = "m", token: str = "") -> NodeClient:
        if node is None or not (JS_DIR / "node_modules" / "socket.io-client-v4").is_dir():
            pytest.fail("the npm clients are missing: run `bash tests/e2e/setup.sh` (needs node)")
        proc = await asyncio.create_subprocess_exec(
            node,
            str(JS_DIR / "recovery_client.js"),
            url,
            stack,
            events,
            *([token] if token else []),
            cwd=JS_DIR,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        client = NodeClient(proc)
        made.append(client)
        return client

    yield start
    for c in made:
        await c.close()


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


def numbers(events: list[dict[str, Any]]) -> list[int]:
    return [e["args"][0]["n"] for e in events]


def offsets_of(events: list[dict[str, Any]]) -> list[tuple[str, int] | None]:
    return [parse_offset(e["args"][-1]) for e in events]


async def joined(publisher: Publisher, sid: str, room: str = "chat") -> None:
    await publisher.sockets.join(sid, room)
    await asyncio.sleep(SESSION_WRITTEN_S)  # the session record has the room


async def away(proxy: CutProxy, client: NodeClient, *, tell_gateway: bool = True) -> None:
    proxy.down = True
    proxy.cut(tell_gateway=tell_gateway)
    await client.next("disconnect")


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
