"""A client that stops reading is cut off; the gateway's memory stays bounded and every
other client keeps getting its messages."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from publisher import Publisher
from tests.helpers import GatewayProcess

pytestmark = pytest.mark.integration


class StalledClient:
    """A real Engine.IO v4 websocket client written on a raw socket, so that it can
    stop reading for real (the kernel buffers fill and the server's writes back up)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.sid = ""

    @classmethod
    async def connect(cls, port: int) -> StalledClient:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n"
                f"Host: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        await reader.readuntil(b"\r\n\r\n")
        self = cls(reader, writer)
        assert (await self.read_text()).startswith("0{")  # engine.io OPEN
        self.send_text("40")
        connect = await self.read_text()
        assert connect.startswith("40{")
        self.sid = orjson.loads(connect[2:])["sid"]
        return self

    async def read_text(self) -> str:
        head = await self.reader.readexactly(2)
        n = head[1] & 0x7F
        if n == 126:
            n = struct.unpack("!H", await self.reader.readexactly(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", await self.reader.readexactly(8))[0]
        return (await self.reader.readexactly(n)).decode()

    def send_text(self, text: str) -> None:
        data = text.encode()
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        self.writer.write(struct.pack("!BB", 0x81, 0x80 | len(data)) + mask + masked)

    def stop_reading(self) -> None:
        transport: Any = self.writer.transport
        transport.pause_reading()

    def close(self) -> None:
        self.writer.transport.abort()


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def test_stalled_client_is_cut_off_and_memory_stays_bounded(
    gateway_factory: Callable[..., GatewayProcess], publisher: Publisher, client_factory: Any
) -> None:
    gw = gateway_factory("slow", max_buffered_bytes=2 * 1024 * 1024, max_queued_messages=200)
    healthy = await client_factory(gw)
    stalled = await StalledClient.connect(gw.port)
    await publisher.sockets.join([healthy.sid, stalled.sid], "feed")
    stalled.stop_reading()
    rss_before = rss_bytes(gw.proc.pid)

    blob = "x" * 50_000
    n = 2000  # 100 MB for a client that reads nothing
    started = time.monotonic()
    for i in range(n):
        await publisher.sockets.broadcast("feed", "big", {"i": i, "blob": blob})
        if i % 10 == 9:
            # a healthy consumer stays within a few messages of the producer
            await healthy.wait_for(lambda ev, i=i: len(ev) >= i - 10, timeout=30)
    await healthy.wait_count(n, timeout=60)
    elapsed = time.monotonic() - started
    rss_growth = rss_bytes(gw.proc.pid) - rss_before

    assert [d["i"] for _, d in healthy.events] == list(range(n))
    assert gw.metric("sailcast_gateway_slow_client_disconnects_total") == 1
    assert gw.metric("sailcast_gateway_connections") == 1  # the healthy one
    assert rss_growth < 60 * 1024 * 1024, f"gateway grew {rss_growth / 1e6:.1f} MB"
    print(
        f"\nslow client: cut off; {n} x 50 kB to a healthy peer in {elapsed:.1f}s; "
        f"gateway RSS growth {rss_growth / 1e6:.1f} MB"
    )
    stalled.close()


async def test_stalled_client_flooded_with_small_messages_is_cut_off(
    gateway_factory: Callable[..., GatewayProcess],
    publisher: Publisher,
    client_factory: Any,
    tmp_path: Path,
) -> None:
    """Many small messages (about 100 bytes each) to a client that stops reading: on the
    websocket path every frame's bytes count against --max-buffered-bytes, so the
    byte bound is also the message bound there; the client is cut off and the gateway
    holds no more than the bound for it."""
    log = tmp_path / "gateway.log"
    bound = 256 * 1024
    gw = gateway_factory("flood", max_buffered_bytes=bound, stderr_file=log)
    healthy = await client_factory(gw)
    stalled = await StalledClient.connect(gw.port)
    await publisher.sockets.join(stalled.sid, "ticks")
    stalled.stop_reading()
    rss_before = rss_bytes(gw.proc.pid)

    n = 150_000
    pad = "p" * 60
    started = time.monotonic()
    for i in range(n):
        await publisher.sockets.broadcast("ticks", "tick", {"i": i, "pad": pad})
        if i % 2000 == 1999:
            await publisher.flush()
            if gw.metric("sailcast_gateway_slow_client_disconnects_total"):
                break
    await publisher.flush()
    deadline = time.monotonic() + 30
    while not gw.metric("sailcast_gateway_slow_client_disconnects_total"):
        assert time.monotonic() < deadline, "the stalled client was not cut off"
        await asyncio.sleep(0.05)
    sent = i + 1
    elapsed = time.monotonic() - started
    rss_growth = rss_bytes(gw.proc.pid) - rss_before

    frame = len(f'42["tick",{{"i":{n},"pad":"{pad}"}}]') + 2
    assert sent * frame > bound  # thousands of messages, each far below the bound
    assert gw.metric("sailcast_gateway_slow_client_disconnects_total") == 1
    assert "stopped reading (write_buffer)" in log.read_text()  # the websocket path's bound
    assert gw.metric("sailcast_gateway_connections") == 1
    await publisher.sockets.broadcast(healthy.sid, "still", "here")
    await healthy.wait_for(lambda ev: ("still", "here") in ev)
    assert rss_growth < 8 * 1024 * 1024, f"gateway grew {rss_growth / 1e6:.1f} MB"
    print(
        f"\nslow client, small messages: cut off after {sent} x {frame} B "
        f"({sent * frame / 1e6:.1f} MB, bound {bound // 1024} KiB) in {elapsed:.1f}s; "
        f"gateway RSS growth {rss_growth / 1e6:.1f} MB"
    )
    stalled.close()
