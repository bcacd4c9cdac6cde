"""SIGTERM with hundreds of clients and traffic flowing (a rolling restart): /readyz
turns 503 at once, clients are closed with 1001 (going away: they reconnect) in paced
batches between the drain delay and the deadline, the process exits 0, and its log has
no error in it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from publisher import Publisher
from tests.faults.faultkit import raise_fd_limit
from tests.helpers import GatewayProcess

pytestmark = pytest.mark.integration

CLIENTS = 500
DRAIN_DELAY_S = 0.5
DRAIN_TIMEOUT_S = 3.0


@contextlib.contextmanager
def stderr_into(path: Path) -> Iterator[None]:
    """Children started inside inherit this file as their stderr (the gateway logs there)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    saved = os.dup(2)
    os.dup2(fd, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(fd)


async def test_drain_under_load(
    gateway_factory: Callable[..., GatewayProcess], publisher: Publisher
) -> None:
    raise_fd_limit(2 * CLIENTS + 1024)
    log = Path(tempfile.mkdtemp(prefix="sailcast-drain-")) / "gateway.log"
    with stderr_into(log):
        gw = gateway_factory(
            "draining",
            drain_delay_s=DRAIN_DELAY_S,
            drain_timeout_s=DRAIN_TIMEOUT_S,
            log_level="INFO",
        )
    url = f"ws://127.0.0.1:{gw.port}/socket.io/?EIO=4&transport=websocket"
    closed: list[tuple[float, int | None]] = []
    received = 0
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        sockets: list[tuple[str, aiohttp.ClientWebSocketResponse]] = []
        gate = asyncio.Semaphore(64)

        async def connect() -> None:
            async with gate:
                ws = await session.ws_connect(url, autoping=False)
                await ws.receive()
                await ws.send_str("40")
                answer = (await ws.receive()).data
                sockets.append((answer[answer.index('"sid":"') + 7 :].split('"')[0], ws))

        await asyncio.wait_for(asyncio.gather(*(connect() for _ in range(CLIENTS))), 60)
        for i in range(0, CLIENTS, 64):
            await asyncio.gather(
                *(publisher.sockets.join(sid, "feed") for sid, _ in sockets[i : i + 64])
            )

        async def read(ws: aiohttp.ClientWebSocketResponse) -> None:
            nonlocal received
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    if msg.data == "2":
                        await ws.send_str("3")
                    elif msg.data.startswith("42"):
                        received += 1
            closed.append((time.monotonic(), ws.close_code))

        readers = [asyncio.ensure_future(read(ws)) for _, ws in sockets]
        stop = asyncio.Event()

        async def traffic() -> None:  # 50 broadcasts/s to everyone while draining
            for i in range(500):
                if stop.is_set():
                    return
                await publisher.sockets.broadcast("feed", "tick", i)
                await asyncio.sleep(0.02)

        feeding = asyncio.create_task(traffic())
        await asyncio.sleep(0.3)
        started = time.monotonic()
        gw.proc.send_signal(signal.SIGTERM)
        not_ready_s: float | None = None
        while not_ready_s is None and time.monotonic() - started < 5:
            if await asyncio.to_thread(gw.http_status, "/readyz") == 503:
                not_ready_s = time.monotonic() - started
        code = await asyncio.to_thread(gw.proc.wait, DRAIN_DELAY_S + DRAIN_TIMEOUT_S + 15)
        exited_s = time.monotonic() - started
        stop.set()
        await feeding
        await asyncio.wait(readers, timeout=5)
        for r in readers:
            r.cancel()

    times = sorted(t - started for t, _ in closed)
    codes: dict[Any, int] = {}
    for _, c in closed:
        codes[c] = codes.get(c, 0) + 1
    errors = [
        line
        for line in log.read_text(errors="replace").splitlines()
        if " ERROR " in line or "Traceback" in line or "never retrieved" in line
    ]
    print(
        f"\ndrain under load: SIGTERM with {CLIENTS} websocket clients receiving 50 msg/s "
        f"(delay {DRAIN_DELAY_S}s, timeout {DRAIN_TIMEOUT_S}s): /readyz 503 after "
        f"{(not_ready_s or -1) * 1000:.0f} ms; clients closed from {times[0]:.2f}s to "
        f"{times[-1]:.2f}s, close codes {codes}; exit code {code} after {exited_s:.2f}s; "
        f"{received} messages delivered; {len(errors)} error lines in the log"
    )
    assert not_ready_s is not None
    assert not_ready_s < 1.0
    assert code == 0
    assert len(closed) == CLIENTS
    assert codes == {1001: CLIENTS}, "every client told to go away (and come back)"
    assert times[0] >= DRAIN_DELAY_S * 0.9, "nobody closed before the drain delay"
    assert times[-1] <= DRAIN_DELAY_S + DRAIN_TIMEOUT_S + 1.0
    assert exited_s < DRAIN_DELAY_S + DRAIN_TIMEOUT_S + 10
    assert not errors, "\n".join(errors[:10])
