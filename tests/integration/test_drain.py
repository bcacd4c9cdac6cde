"""SIGTERM: not ready at once, then clients are closed in a way that makes them
reconnect, within the deadline, and the process exits cleanly."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest
import socketio

from tests.helpers import GatewayProcess

pytestmark = pytest.mark.integration


async def test_rolling_restart_clients_come_back_by_themselves(
    gateway_factory: Callable[..., GatewayProcess],
) -> None:
    """SIGTERM a gateway, start its replacement on the same address: clients that were
    drained reconnect on their own (a Socket.IO-level disconnect would forbid that)."""
    gw = gateway_factory("old", drain_delay_s=0.5, drain_timeout_s=2)
    clients = []
    for _ in range(5):
        c = socketio.AsyncClient(
            reconnection=True, reconnection_delay=0.1, reconnection_delay_max=0.5
        )
        await c.connect(gw.url, transports=["websocket"])
        clients.append(c)
    old_sids = {c.get_sid() for c in clients}
    assert gw.http_status("/readyz") == 200

    started = time.monotonic()
    gw.proc.send_signal(signal.SIGTERM)
    deadline = started + 10
    while gw.http_status("/readyz") != 503:
        assert time.monotonic() < deadline, "readyz did not turn 503"
        await asyncio.sleep(0.02)
    not_ready_s = time.monotonic() - started
    code = await asyncio.to_thread(gw.proc.wait, 10)
    exited_s = time.monotonic() - started
    assert code == 0

    new = gateway_factory("new", port=gw.port)
    while not all(c.connected and c.get_sid() not in old_sids for c in clients):
        assert time.monotonic() < deadline + 10, "clients did not come back"
        await asyncio.sleep(0.05)
    back_s = time.monotonic() - started
    assert new.metric("sailcast_gateway_connections") == len(clients)
    print(
        f"\nrolling restart: not ready after {not_ready_s:.2f}s, old gateway exited after "
        f"{exited_s:.2f}s, all {len(clients)} clients back on the new one after {back_s:.2f}s"
    )
    for c in clients:
        await c.disconnect()


async def test_shutdown_is_not_held_up_by_long_polls(
    gateway_factory: Callable[..., GatewayProcess], client_factory: Any
) -> None:
    """A pending long-poll used to keep the HTTP server's shutdown waiting (~14 s)."""
    gw = gateway_factory("polled", drain_delay_s=0, drain_timeout_s=2)
    gone = await client_factory(gw, transport="polling")
    await gone.disconnect()
    stays = socketio.AsyncClient(reconnection=False)
    await stays.connect(gw.url, transports=["polling"])
    started = time.monotonic()
    gw.proc.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(gw.proc.wait, 15)
    took = time.monotonic() - started
    assert code == 0
    assert took < 5, f"shutdown took {took:.1f}s"
    await stays.disconnect()


async def test_shutdown_is_not_held_up_by_a_websocket_that_never_reads(
    gateway_factory: Callable[..., GatewayProcess],
) -> None:
    """A client that upgraded to websocket and then reads nothing, nor answers the close
    frame: aiohttp's cleanup waited for its handler for its 60 s default, past any drain
    deadline (SHUTDOWN_GRACE_S bounds it now)."""
    gw = gateway_factory("stuck", drain_delay_s=0, drain_timeout_s=2)
    port = int(gw.url.rstrip("/").rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: x\r\n"
        b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    await writer.drain()
    assert b" 101 " in await reader.readuntil(b"\r\n\r\n")
    started = time.monotonic()
    gw.proc.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(gw.proc.wait, 30)
    took = time.monotonic() - started
    writer.close()
    assert code == 0
    assert took < 8, f"shutdown took {took:.1f}s"


async def test_a_socket_connecting_while_draining_is_refused_with_a_reason(
    gateway_factory: Callable[..., GatewayProcess], client_factory: Any
) -> None:
    """Between SIGTERM and the disconnects (--drain-delay-s) the gateway still listens,
    so a balancer that has not caught up may send it a client: refused, with a connect
    error that says to reconnect, and counted; connected clients stay until the drain."""
    gw = gateway_factory("draining", drain_delay_s=3, drain_timeout_s=2)
    stays = await client_factory(gw)
    gw.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    while gw.http_status("/readyz") != 503:
        assert time.monotonic() < deadline, "readyz did not turn 503"
        await asyncio.sleep(0.02)
    late = socketio.AsyncClient(reconnection=False)
    errors: list[Any] = []
    late.on("connect_error", errors.append)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await late.connect(gw.url, transports=["websocket"], wait_timeout=5)
    assert errors == [{"message": "gateway is shutting down; reconnect"}]
    assert gw.metric('sailcast_gateway_refusals_total{reason="draining"}') == 1
    assert stays.client.connected
    assert await asyncio.to_thread(gw.proc.wait, 15) == 0
