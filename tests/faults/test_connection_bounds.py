"""One client cannot exhaust a gateway through its connections (issue 18 items 1-3,
issue 16 item 4): half-open websockets and one IP's sessions are bounded, request
headers are bounded, idle TCP connections cannot take the descriptors the ops port
needs, and binary attachments cannot pile up. Real gateway processes, raw sockets;
each test prints the figure it measures."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import resource
import socket
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from tests.faults.faultkit import (
    RawWebSocket,
    astatus,
    fd_count,
    raise_fd_limit,
    rss_bytes,
    wait_until,
)
from tests.helpers import GatewayProcess, connect_client
from tests.support.ws_frames import OP_BINARY, OP_CLOSE

pytestmark = pytest.mark.integration

REFUSALS = 'sailcast_gateway_refusals_total{{reason="{}"}}'
MIB = 1024 * 1024


def refusals(gw: GatewayProcess, reason: str) -> float:
    return gw.metric(REFUSALS.format(reason))


async def raw_upgrade(
    port: int, headers: str = "", timeout: float = 10.0
) -> tuple[int, socket.socket]:
    """A websocket upgrade to /socket.io/ with extra `headers` (CRLF-terminated lines);
    the HTTP status and the socket, left open (the caller closes it)."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setblocking(False)
    key = base64.b64encode(os.urandom(16)).decode()
    head = (
        "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{headers}\r\n"
    ).encode()
    async with asyncio.timeout(timeout):
        await loop.sock_connect(sock, ("127.0.0.1", port))
        await loop.sock_sendall(sock, head)
        got = b""
        while b"\r\n" not in got:
            chunk = await loop.sock_recv(sock, 4096)
            if not chunk:
                return 0, sock
            got += chunk
    return int(got.split(b" ", 2)[1]), sock


# -- 16.4: half-open websockets and one IP -----------------------------------------------
HALF_OPEN = 500
FULL = 20
PENDING = 16


async def test_half_open_websockets_count_against_max_connections(
    gateway_factory: Callable[..., GatewayProcess],
) -> None:
    """A full gateway (--max-connections sockets connected) accepts at most
    --max-pending-connections more sessions in their handshake; the rest of a flood of
    upgrades that never send CONNECT is answered 503, and those accepted are closed
    after --handshake-timeout-s, counted."""
    raise_fd_limit(2 * HALF_OPEN + 1024)
    gw = gateway_factory(
        "halfopen",
        max_connections=FULL,
        max_pending_connections=PENDING,
        handshake_timeout_s=2,
    )
    clients = [await connect_client(gw.url) for _ in range(FULL)]
    base_fds, base_rss = fd_count(gw.proc.pid), rss_bytes(gw.proc.pid)
    socks: list[socket.socket] = []
    statuses: dict[int, int] = {}
    gate = asyncio.Semaphore(64)

    async def upgrade() -> None:
        async with gate:
            status, sock = await raw_upgrade(gw.port)
            statuses[status] = statuses.get(status, 0) + 1
            socks.append(sock)

    try:
        await asyncio.wait_for(asyncio.gather(*(upgrade() for _ in range(HALF_OPEN))), 30)
        peak_fds, peak_rss = fd_count(gw.proc.pid), rss_bytes(gw.proc.pid)
        full = refusals(gw, "max_connections")
        reaped_s = await wait_until(
            lambda: refusals(gw, "handshake_timeout") >= statuses.get(101, 0), 10, "reaped"
        )
        await wait_until(lambda: fd_count(gw.proc.pid) <= base_fds + 5, 10, "fds back")
        ready = await astatus(gw, "/readyz")
    finally:
        for sock in socks:
            sock.close()
        for c in clients:
            await c.client.disconnect()
    print(
        f"\n{HALF_OPEN} websocket upgrades that never CONNECT, at --max-connections {FULL} "
        f"(full) with --max-pending-connections {PENDING}: HTTP statuses {statuses}; "
        f"gateway fds {base_fds} -> {peak_fds}, RSS +{(peak_rss - base_rss) / MIB:.1f} MB; "
        f"refusals_total{{max_connections}} {full:.0f}; accepted ones closed "
        f"{reaped_s:.1f}s later (--handshake-timeout-s 2); /readyz {ready} "
        "(before: all 500 accepted, fds 36 -> 536, RSS +6.6 MB, held for the ping window)"
    )
    assert statuses.get(101, 0) <= PENDING
    assert statuses.get(503, 0) >= HALF_OPEN - PENDING
    assert full >= HALF_OPEN - PENDING
    assert peak_fds <= base_fds + PENDING + 70  # the 64 in flight at most, beyond the budget
    assert ready == 200


async def test_connections_per_ip_follow_trust_proxy(
    gateway_factory: Callable[..., GatewayProcess],
) -> None:
    """--max-connections-per-ip counts the sessions of the client's address as
    --trust-proxy resolves it (here: the loopback proxy's X-Forwarded-For)."""
    limit = 5
    gw = gateway_factory("perip", max_connections_per_ip=limit, trust_proxy="loopback")
    url = f"{gw.url}/socket.io/?EIO=4&transport=websocket"
    held: list[aiohttp.ClientWebSocketResponse] = []
    statuses: list[int] = []

    async def open_ws(session: aiohttp.ClientSession, ip: str) -> int:
        try:
            ws = await session.ws_connect(url, headers={"X-Forwarded-For": ip}, autoping=False)
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status
        opened = await ws.receive()
        assert opened.data.startswith("0{")
        await ws.send_str("40")
        assert (await ws.receive()).data.startswith("40{")
        held.append(ws)
        return 101

    async with aiohttp.ClientSession() as session:
        try:
            statuses += [await open_ws(session, "203.0.113.7") for _ in range(limit + 2)]
            other = await open_ws(session, "203.0.113.8")
            refused = refusals(gw, "max_connections_per_ip")
            await held[0].close()
            await wait_until(lambda: gw.metric("sailcast_gateway_connections") == limit, 5, "gone")
            again = await open_ws(session, "203.0.113.7")
        finally:
            for ws in held:
                await ws.close()
    print(
        f"\n--max-connections-per-ip {limit} behind a trusted proxy: one forwarded address "
        f"got {statuses}, another {other}, after one left {again}; "
        f"refusals_total{{max_connections_per_ip}} {refused:.0f} (before: no such limit)"
    )
    assert statuses == [101] * limit + [429, 429]
    assert other == 101
    assert again == 101
    assert refused == 2


# -- 18.2: handshake headers --------------------------------------------------------------
HEAVY = 20
PAD_HEADERS = 120
PAD_BYTES = 8000


async def test_handshake_headers_are_bounded(
    gateway_factory: Callable[..., GatewayProcess],
) -> None:
    """~1 MB of request headers (120 × 8 KB lines, each within aiohttp's line limit) is
    answered 431 and costs the gateway nothing after; headers within --max-header-bytes
    are accepted."""
    gw = gateway_factory("headers")
    pad = "".join(f"X-Pad-{i:03d}: {'a' * PAD_BYTES}\r\n" for i in range(PAD_HEADERS))
    base_rss = rss_bytes(gw.proc.pid)
    socks: list[socket.socket] = []
    statuses: dict[int, int] = {}
    try:
        for _ in range(HEAVY):
            status, sock = await raw_upgrade(gw.port, pad)
            statuses[status] = statuses.get(status, 0) + 1
            socks.append(sock)
        await asyncio.sleep(0.5)
        heavy_rss = rss_bytes(gw.proc.pid)
        refused = refusals(gw, "header_too_large")
        within = f"X-Pad: {'b' * 7000}\r\n" * 2  # 14 KB, under the 16 KiB default
        before_ok = rss_bytes(gw.proc.pid)
        ok_statuses: dict[int, int] = {}
        for _ in range(HEAVY):
            status_ok, ok_sock = await raw_upgrade(gw.port, within)
            ok_statuses[status_ok] = ok_statuses.get(status_ok, 0) + 1
            socks.append(ok_sock)
        await asyncio.sleep(0.5)
        ok_per_socket = (rss_bytes(gw.proc.pid) - before_ok) / HEAVY
    finally:
        for sock in socks:
            sock.close()
    per_socket = (heavy_rss - base_rss) / HEAVY
    print(
        f"\n{HEAVY} websocket upgrades with {PAD_HEADERS * PAD_BYTES / 1e6:.2f} MB of headers "
        f"each: HTTP statuses {statuses}; gateway RSS +{per_socket / 1024:.0f} KB per "
        f"socket; refusals_total{{header_too_large}} {refused:.0f}; {HEAVY} with 14 KB of "
        f"headers: {ok_statuses}, +{ok_per_socket / 1024:.0f} KB per socket (before: "
        "all accepted, +1,931 KB per socket)"
    )
    assert statuses == {431: HEAVY}
    assert refused == HEAVY
    assert per_socket < 256 * 1024
    assert ok_statuses == {101: HEAVY}


# -- 18.3: idle TCP connections and the ops port ------------------------------------------
FD_LIMIT = 1024
IDLE = 1100


async def test_idle_connections_leave_the_ops_port_alive(
    gateway_factory: Callable[..., GatewayProcess], tmp_path: Path
) -> None:
    """With RLIMIT_NOFILE 1,024, 1,100 TCP connections that send nothing: /healthz and
    /readyz keep answering (the fd reserve), the surplus is refused, counted and logged
    (throttled), and the idle ones are closed after --handshake-timeout-s; then new
    clients connect again."""
    raise_fd_limit(IDLE + 1024)
    log_file = tmp_path / "gateway.log"
    gw = gateway_factory("idle", handshake_timeout_s=3, stderr_file=log_file)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.prlimit(gw.proc.pid, resource.RLIMIT_NOFILE, (FD_LIMIT, hard))
    base_fds = fd_count(gw.proc.pid)
    loop = asyncio.get_running_loop()
    socks: list[socket.socket] = []
    try:
        started = time.monotonic()
        for _ in range(IDLE):
            sock = socket.socket()
            sock.setblocking(False)
            with contextlib.suppress(OSError):
                await asyncio.wait_for(loop.sock_connect(sock, ("127.0.0.1", gw.port)), 2)
            socks.append(sock)
        await asyncio.sleep(0.5)
        peak_fds = fd_count(gw.proc.pid)
        health = [await astatus(gw, "/healthz"), await astatus(gw, "/readyz")]
        refused = refusals(gw, "fd_reserve")
        closed = await wait_until(
            lambda: fd_count(gw.proc.pid) <= base_fds + 5, 10, "idle connections closed"
        )
        closed_s = time.monotonic() - started
        del closed
        client = await connect_client(gw.url)
        await client.client.disconnect()
    finally:
        for sock in socks:
            sock.close()
    warnings = log_file.read_text().count("refused a client connection")
    print(
        f"\n{IDLE} idle TCP connections at RLIMIT_NOFILE {FD_LIMIT}: gateway fds "
        f"{base_fds} -> {peak_fds}; /healthz, /readyz {health}; refusals_total{{fd_reserve}} "
        f"{refused:.0f}, {warnings} log line(s); all closed {closed_s:.1f}s after the first "
        "(--handshake-timeout-s 3), then a new client connected (before: /healthz and "
        "/readyz refused, new clients failed, nothing logged, connections held >= 120 s)"
    )
    assert health == [200, 200]
    assert refused > 0
    assert 1 <= warnings <= 3
    assert peak_fds < FD_LIMIT


# -- 18.1: binary attachments -------------------------------------------------------------
SOCKETS = 10
FRAME = 1_000_000


async def test_binary_attachments_are_bounded(
    gateway_factory: Callable[..., GatewayProcess],
) -> None:
    """A packet announcing 1,000,000 attachments is refused; sockets that send ~1 MB
    attachment after attachment for a packet that never completes are cut once over
    --max-attachment-bytes; both counted in refusals_total{reason="attachments"}."""
    gw = gateway_factory("attach")
    base_rss = rss_bytes(gw.proc.pid)
    many = await RawWebSocket.open(gw.port)
    await many.eio_connect()
    many.send_text('451000000-["blob",{"_placeholder":true,"num":0}]')
    cut_many = await many.drain(5)
    socks = [await RawWebSocket.open(gw.port) for _ in range(SOCKETS)]
    payload = b"\x00" * FRAME
    peak_rss = base_rss
    try:
        for ws in socks:
            await ws.eio_connect()
            ws.send_text(
                '4510-["blob",'
                + ",".join(f'{{"_placeholder":true,"num":{i}}}' for i in range(10))
                + "]"
            )
        for _ in range(9):  # one short of completing the packet
            for ws in socks:
                ws.send_frame(OP_BINARY, payload)
            for ws in socks:
                with contextlib.suppress(ConnectionError):
                    await ws.writer.drain()
            await asyncio.sleep(0.05)
            peak_rss = max(peak_rss, rss_bytes(gw.proc.pid))
        cut_metric = 'sailcast_gateway_disconnects_total{reason="transport_error"}'
        with contextlib.suppress(AssertionError):
            await wait_until(lambda: gw.metric(cut_metric) >= SOCKETS + 1, 5, "cut")
        cut = int(gw.metric(cut_metric)) - 1  # the 1,000,000-attachment socket
        counted = refusals(gw, "attachments")
    finally:
        for ws in [many, *socks]:
            ws.abort()
    print(
        f"\n{SOCKETS} sockets sending 9 attachments of {FRAME / 1e6:.0f} MB for a 10-attachment "
        f"packet: {cut} cut; gateway RSS +{(peak_rss - base_rss) / MIB:.0f} MB at the peak; "
        f"a packet announcing 1,000,000 attachments: cut {bool(cut_many)}; "
        f"refusals_total{{attachments}} {counted:.0f} (before: 0 cut, RSS +88 MB, the "
        "1,000,000 cut but not counted)"
    )
    assert cut_many[-1][0] == OP_CLOSE
    assert cut == SOCKETS
    assert counted == SOCKETS + 1
    assert peak_rss - base_rss < SOCKETS * 5 * MIB  # 9 MB each without the bound
