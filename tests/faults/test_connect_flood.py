"""A flood of websocket connects: as fast as bounded concurrency allows, raw Engine.IO
frames over aiohttp. The gateway stays ready, every attempt is accepted or refused
cleanly (no hang, no reset), and once the clients are gone — some saying goodbye, some
closing the websocket, some just vanishing — the gauges, the NATS subscriptions and the
gateway's file descriptors are back where they started."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
import pytest

from publisher import Publisher
from tests.faults.faultkit import (
    MonitoredNats,
    RawWebSocket,
    fd_count,
    raise_fd_limit,
    rss_bytes,
    wait_until,
)
from tests.helpers import GatewayProcess

pytestmark = pytest.mark.integration

CONNECTS = 2000
CONCURRENCY = 64
CONNECT_TIMEOUT_S = 20.0
SHARED_ROOMS = 10
FIXED_SUBSCRIPTIONS = 5  # blast, mr (multi-room), gw.all, gw.hb, gw.id.<id>


@dataclass
class Flood:
    held: list[aiohttp.ClientWebSocketResponse] = field(default_factory=list)
    sids: list[str] = field(default_factory=list)
    refused: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)

    def count(self, into: dict[str, int], key: str) -> None:
        into[key] = into.get(key, 0) + 1


async def connect_one(session: aiohttp.ClientSession, url: str, flood: Flood) -> None:
    started = time.monotonic()
    ws: aiohttp.ClientWebSocketResponse | None = None
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            ws = await session.ws_connect(url, autoping=False, max_msg_size=0)
            opened = await ws.receive()
            if opened.type != aiohttp.WSMsgType.TEXT or not opened.data.startswith("0{"):
                flood.count(flood.refused, f"open:{opened.type.name}")
                await ws.close()
                return
            await ws.send_str("40")
            answer = await ws.receive()
            while answer.type == aiohttp.WSMsgType.TEXT and answer.data == "2":
                await ws.send_str("3")
                answer = await ws.receive()
    except aiohttp.WSServerHandshakeError as exc:
        flood.count(flood.refused, f"http:{exc.status}")
        return
    except TimeoutError:
        flood.count(flood.errors, "timeout")
        if ws is not None:
            await ws.close()
        return
    except (aiohttp.ClientError, OSError) as exc:
        flood.count(flood.errors, type(exc).__name__)
        return
    data = answer.data if answer.type == aiohttp.WSMsgType.TEXT else ""
    if data.startswith("40{"):
        flood.held.append(ws)
        flood.sids.append(data[data.index('"sid":"') + 7 :].split('"', 1)[0])
        flood.latencies.append(time.monotonic() - started)
    elif data.startswith("44"):  # CONNECT_ERROR: a clean refusal by the gateway
        flood.count(flood.refused, "connect_error")
        await ws.close()
    else:
        flood.count(flood.errors, f"unexpected:{answer.type.name}:{data[:20]}")
        await ws.close()


async def close_one(i: int, ws: aiohttp.ClientWebSocketResponse) -> None:
    """Three ways to leave: Socket.IO DISCONNECT then close, a websocket close, or
    vanish (TCP abort, as when a phone loses coverage)."""
    with contextlib.suppress(Exception):
        if i % 3 == 0:
            await ws.send_str("41")
            await ws.close()
        elif i % 3 == 1:
            await ws.close()
        else:
            conn = ws._conn  # aiohttp keeps the connection here; we want a hard abort
            if conn is not None and conn.transport is not None:
                conn.transport.abort()


async def watch_ready(
    session: aiohttp.ClientSession, url: str, stop: asyncio.Event
) -> dict[int, int]:
    seen: dict[int, int] = {}
    while not stop.is_set():
        try:
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=10)) as r:
                seen[r.status] = seen.get(r.status, 0) + 1
        except (aiohttp.ClientError, TimeoutError):
            seen[0] = seen.get(0, 0) + 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.2)
    return seen


async def test_connect_flood(
    monitored_nats: MonitoredNats, gateway_factory: Callable[..., GatewayProcess], prefix: str
) -> None:
    limit = raise_fd_limit(2 * CONNECTS + 1024)  # before the gateway starts: it inherits it
    if limit < CONNECTS + 256:
        pytest.skip(f"file descriptor limit {limit} is too low for {CONNECTS} connections")
    nats = monitored_nats
    gw = gateway_factory("flood", nats_url=nats.url)
    pub = await Publisher.connect(nats.url, prefix=prefix)
    ws_url = f"ws://127.0.0.1:{gw.port}/socket.io/?EIO=4&transport=websocket"
    gw_name = "sailcast-gateway-flood"
    flood = Flood()
    try:
        await asyncio.sleep(0.2)
        base = {
            "fds": fd_count(gw.proc.pid),
            "rss": rss_bytes(gw.proc.pid),
            "subs": gw.metric("sailcast_gateway_broker_subscriptions"),
            "nats_subs": nats.subscriptions_of(gw_name),
        }
        assert gw.metric("sailcast_gateway_connections") == 0
        assert gw.metric("sailcast_gateway_rooms") == 0
        assert base["subs"] == FIXED_SUBSCRIPTIONS

        connector = aiohttp.TCPConnector(limit=0, force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:
            stop = asyncio.Event()
            watcher = asyncio.create_task(
                watch_ready(session, f"http://127.0.0.1:{gw.metrics_port}/readyz", stop)
            )
            gate = asyncio.Semaphore(CONCURRENCY)

            async def bounded() -> None:
                async with gate:
                    await connect_one(session, ws_url, flood)

            started = time.monotonic()
            await asyncio.wait_for(
                asyncio.gather(*(bounded() for _ in range(CONNECTS))), timeout=120
            )
            elapsed = time.monotonic() - started
            accepted = len(flood.held)

            # a tenth of them join shared rooms, as an app would right after connecting
            joiners = flood.sids[::10]
            for i in range(0, len(joiners), CONCURRENCY):
                batch = joiners[i : i + CONCURRENCY]
                await asyncio.gather(
                    *(pub.sockets.join(s, f"flood-{n % SHARED_ROOMS}") for n, s in enumerate(batch))
                )
            peak = {
                "conns": gw.metric("sailcast_gateway_connections"),
                "rooms": gw.metric("sailcast_gateway_rooms"),
                "subs": gw.metric("sailcast_gateway_broker_subscriptions"),
                "rss": rss_bytes(gw.proc.pid),
            }
            ready_during = await asyncio.to_thread(gw.http_status, "/readyz")

            close_started = time.monotonic()
            await asyncio.gather(*(close_one(i, ws) for i, ws in enumerate(flood.held)))
            drained_s = await wait_until(
                lambda: gw.metric("sailcast_gateway_connections") == 0,
                30,
                "connections gauge back to 0",
            )
            drained_s = time.monotonic() - close_started
            await wait_until(
                lambda: (
                    gw.metric("sailcast_gateway_broker_subscriptions") == base["subs"]
                    and gw.metric("sailcast_gateway_rooms") == 0
                ),
                10,
                "rooms and subscriptions back to baseline",
            )
            stop.set()
            ready_seen = await watcher

        await wait_until(
            lambda: nats.subscriptions_of(gw_name) == base["nats_subs"],
            10,
            "the gateway's NATS subscriptions back to baseline (server side)",
        )
        await wait_until(
            lambda: fd_count(gw.proc.pid) <= base["fds"] + 5, 10, "gateway file descriptors"
        )
        after_rss = rss_bytes(gw.proc.pid)
        connects = gw.metric("sailcast_gateway_connects_total")
        gone = sum(
            v for k, v in gw.metrics().items() if k.startswith("sailcast_gateway_disconnects_total")
        )
        lat = sorted(flood.latencies)
        print(
            f"\nconnect flood: {CONNECTS} websocket connects, concurrency {CONCURRENCY}: "
            f"{accepted} accepted, refused {flood.refused or 0}, errors {flood.errors or 0}; "
            f"{accepted / elapsed:.0f} connects/s (connect p50 {lat[len(lat) // 2] * 1000:.0f} "
            f"ms, p99 {lat[int(len(lat) * 0.99)] * 1000:.0f} ms); readyz during flood "
            f"{ready_seen}; at peak {peak['conns']:.0f} connections, {peak['rooms']:.0f} rooms, "
            f"{peak['subs']:.0f} NATS subscriptions, RSS {base['rss'] / 1e6:.0f} -> "
            f"{peak['rss'] / 1e6:.0f} MB ({after_rss / 1e6:.0f} MB after); all gone "
            f"{drained_s:.2f}s after the clients left; connects_total {connects:.0f}, "
            f"disconnects_total {gone:.0f}"
        )
        assert not flood.errors, f"connects that neither succeeded nor were refused: {flood.errors}"
        assert accepted + sum(flood.refused.values()) == CONNECTS
        assert accepted == CONNECTS, f"refused without a configured limit: {flood.refused}"
        assert peak["conns"] == accepted
        assert peak["rooms"] == accepted + SHARED_ROOMS
        assert peak["subs"] == FIXED_SUBSCRIPTIONS + 2 * accepted + SHARED_ROOMS
        assert ready_during == 200
        assert set(ready_seen) == {200}, f"/readyz answers during the flood: {ready_seen}"
        assert connects == accepted
        assert gone == accepted
        assert gw.http_status("/healthz") == 200
    finally:
        for ws in flood.held:
            with contextlib.suppress(Exception):
                await ws.close()
        await pub.close()
        gw.stop()


HALF_OPEN = 400


async def test_half_open_sessions_are_reaped(
    gateway_factory: Callable[..., GatewayProcess], prefix: str
) -> None:
    """Engine.IO sessions that never connect the Socket.IO namespace — polling
    handshakes never followed up, websockets that never send `40` nor answer a ping —
    hold a socket each until ping_interval + ping_timeout, and the connections gauge
    does not show them (it counts namespace-connected sockets). Then they are gone."""
    raise_fd_limit(4 * HALF_OPEN + 1024)
    gw = gateway_factory("halfopen", ping_interval_s=1, ping_timeout_s=1)
    base_fds = fd_count(gw.proc.pid)
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    held: list[aiohttp.ClientWebSocketResponse] = []
    readers: list[asyncio.Task[None]] = []

    async def ignore(ws: aiohttp.ClientWebSocketResponse) -> None:
        # reads (so that aiohttp answers the server's close) but never answers a ping
        with contextlib.suppress(Exception):
            async for _msg in ws:
                pass

    async with aiohttp.ClientSession(connector=connector) as session:
        gate = asyncio.Semaphore(CONCURRENCY)
        base = f"http://127.0.0.1:{gw.port}/socket.io/?EIO=4&transport="

        async def poll_handshake() -> None:
            async with gate, session.get(base + "polling") as r:
                body = await r.text()
                assert r.status == 200
                assert body.startswith("0{")

        async def ws_open_only() -> None:
            async with gate:
                ws = await session.ws_connect(base + "websocket", autoping=False)
                opened = await ws.receive()
                assert opened.data.startswith("0{")
                held.append(ws)
                readers.append(asyncio.ensure_future(ignore(ws)))

        started = time.monotonic()
        await asyncio.wait_for(
            asyncio.gather(
                *(poll_handshake() for _ in range(HALF_OPEN)),
                *(ws_open_only() for _ in range(HALF_OPEN)),
            ),
            timeout=60,
        )
        peak_fds = fd_count(gw.proc.pid)
        gauge = gw.metric("sailcast_gateway_connections")
        reaped_s = await wait_until(
            lambda: fd_count(gw.proc.pid) <= base_fds + 5, 20, "half-open sessions reaped"
        )
        reaped_s = time.monotonic() - started
        for ws in held:
            with contextlib.suppress(Exception):
                await ws.close()
        for r in readers:
            r.cancel()
    print(
        f"\nhalf-open sessions: {HALF_OPEN} polling handshakes + {HALF_OPEN} websockets "
        f"without a namespace connect: gateway fds {base_fds} -> {peak_fds} while the "
        f"connections gauge read {gauge:.0f}; all reaped {reaped_s:.1f}s after the first "
        "(ping interval 1 s + timeout 1 s here; 25 s + 20 s by default), the "
        "connections gauge never saw them"
    )
    assert gauge == 0
    assert peak_fds >= base_fds + HALF_OPEN  # each held websocket is one socket
    assert gw.http_status("/healthz") == 200
    assert gw.http_status("/readyz") == 200


async def test_connect_flood_over_max_connections(
    gateway_factory: Callable[..., GatewayProcess],
) -> None:
    """Over --max-connections, the surplus is refused cleanly: a Socket.IO connect error
    the client can act on, counted as refusals_total{reason="max_connections"}."""
    limit, attempts = 300, 500
    raise_fd_limit(2 * attempts + 1024)
    gw = gateway_factory("full", max_connections=limit)
    ws_url = f"ws://127.0.0.1:{gw.port}/socket.io/?EIO=4&transport=websocket"
    flood = Flood()
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    try:
        async with aiohttp.ClientSession(connector=connector) as session:
            gate = asyncio.Semaphore(CONCURRENCY)

            async def bounded() -> None:
                async with gate:
                    await connect_one(session, ws_url, flood)

            await asyncio.wait_for(asyncio.gather(*(bounded() for _ in range(attempts))), 60)
            refused = gw.metric('sailcast_gateway_refusals_total{reason="max_connections"}')
            peak = gw.metric("sailcast_gateway_connections")
            ready = gw.http_status("/readyz")
            await asyncio.gather(*(close_one(i, ws) for i, ws in enumerate(flood.held)))
            await wait_until(lambda: gw.metric("sailcast_gateway_connections") == 0, 20, "all gone")
    finally:
        for ws in flood.held:
            with contextlib.suppress(Exception):
                await ws.close()
    print(
        f"\nconnect flood over --max-connections {limit}: {attempts} attempts, "
        f"{len(flood.held)} accepted, refused {flood.refused}, errors {flood.errors or 0}; "
        f"refusals_total{{max_connections}} {refused:.0f}; /readyz {ready} while full"
    )
    assert not flood.errors
    assert len(flood.held) == limit
    assert flood.refused == {"connect_error": attempts - limit}
    assert refused == attempts - limit
    assert peak == limit
    assert ready == 200


async def test_disconnect_reasons_are_labelled(
    gateway_factory: Callable[..., GatewayProcess], publisher: Publisher
) -> None:
    """Each way a socket goes has its own disconnects_total label; none is `other`."""
    gw = gateway_factory("reasons", ping_interval_s=1, ping_timeout_s=1)
    said_bye, closed_ws, vanished, silent, kicked = [
        await RawWebSocket.open(gw.port) for _ in range(5)
    ]
    for ws in (said_bye, closed_ws, vanished, silent, kicked):
        await ws.eio_connect()
    said_bye.send_text("41")  # Socket.IO DISCONNECT
    await closed_ws.close()  # websocket close frame, then TCP close
    vanished.abort()  # TCP reset, no goodbye at all
    await publisher.sockets.disconnect(kicked.sid)  # a worker disconnects it
    # `silent` never answers a ping
    await wait_until(lambda: gw.metric("sailcast_gateway_connections") == 0, 15, "all gone")
    for ws in (said_bye, silent, kicked):
        ws.abort()
    labels = {
        k.split('reason="', 1)[1].rstrip('"}'): int(v)
        for k, v in gw.metrics().items()
        if k.startswith("sailcast_gateway_disconnects_total{") and v
    }
    print(f"\ndisconnect reasons for bye / ws close / TCP reset / worker / silent: {labels}")
    assert labels.get("other", 0) == 0, labels
    assert labels.get("client") == 1
    assert labels.get("server") == 1
    assert labels.get("ping") == 1
    assert labels.get("transport_close", 0) + labels.get("transport_error", 0) == 2
