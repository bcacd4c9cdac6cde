"""The bench's floor reference (bench/systems/floor_server.py) against real clients.

It is a yardstick only if it does the job: a real python-socketio client and the
bench's own raw client connect, join rooms over the same NATS path as the plain
reference, and receive every broadcast once, in order; a foreign request is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import orjson
import pytest
import socketio

from bench.loadgen import RawClient, Sink, _client_frame
from bench.rpc import REPO_ROOT
from bench.systems.plain import NatsPublisher, open_publisher
from gateway.embedded_nats import EmbeddedNats

pytestmark = pytest.mark.integration


@pytest.fixture
def floor_url(nats_server: EmbeddedNats, prefix: str) -> Iterator[str]:
    """One floor server process, started as the bench starts it; its URL."""
    argv = [sys.executable, "-m", "bench.systems.floor_server"]
    argv += ["--nats-url", nats_server.url, "--prefix", prefix]
    proc = subprocess.Popen(argv, cwd=REPO_ROOT, stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        ready = orjson.loads(proc.stdout.readline())  # the ready line, or EOF if it died
        assert ready["event"] == "ready"
        assert ready["loop"] == "uvloop"
        yield f"http://127.0.0.1:{ready['port']}"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
async def pub(nats_server: EmbeddedNats, prefix: str) -> AsyncIterator[NatsPublisher]:
    p = await open_publisher(url=nats_server.url, prefix=prefix)
    yield p
    await p.close()


async def until(check: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Poll ``check`` (the clients' counters have no event to wait on)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not check() and loop.time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.02)


def payload(k: int, s: int) -> dict[str, Any]:
    return {"t": 0, "k": k, "s": s}


async def test_socketio_and_raw_clients_get_every_broadcast_of_their_rooms_in_order(
    floor_url: str, pub: NatsPublisher
) -> None:
    sio = socketio.AsyncClient(reconnection=False)
    got: list[tuple[str, dict[str, Any]]] = []
    sio.on("bench", lambda data: got.append(("bench", data)))
    await sio.connect(floor_url, transports=["websocket"])
    sink = Sink()
    raw, raw_sid = await RawClient.open(floor_url, 0, sink)
    try:
        sio_sid = sio.get_sid()  # the namespace's sid ("40{"sid":…}"), as joins use
        assert sio_sid
        assert raw_sid
        await pub.join(sio_sid, "a")
        await pub.join(raw_sid, "a")
        await pub.join(raw_sid, "b")  # the raw client is in two rooms
        await pub.flush()
        await asyncio.sleep(0.3)  # joins are fire-and-forget, as in the plain reference
        for s in range(20):
            await pub.broadcast("a", "bench", payload(1, s))
            await pub.broadcast("b", "bench", payload(1, 100 + s))
        await pub.broadcast("nobody", "bench", payload(1, 999))
        await pub.flush()
        await until(lambda: len(got) >= 20 and len(sink.latencies.get(1, [])) >= 40)
        await asyncio.sleep(0.2)  # nothing more arrives
        assert [d["s"] for _, d in got] == list(range(20))
        assert len(sink.latencies[1]) == 40
        assert sink.disconnected == 0
    finally:
        await sio.disconnect()
        await raw.close()


async def test_per_room_order_holds_when_a_tick_carries_several_rooms(
    floor_url: str, pub: NatsPublisher
) -> None:
    sio = socketio.AsyncClient(reconnection=False)
    got: list[int] = []
    sio.on("bench", lambda data: got.append(data["s"]))
    await sio.connect(floor_url, transports=["websocket"])
    try:
        sio_sid = sio.get_sid()
        assert sio_sid
        for room in ("x", "y", "z"):
            await pub.join(sio_sid, room)
        await pub.flush()
        await asyncio.sleep(0.3)
        sent = {room: [i * 10 + r for i in range(30)] for r, room in enumerate("xyz")}
        for i in range(30):
            for room in "xyz":
                await pub.broadcast(room, "bench", payload(2, sent[room][i]))
        await pub.flush()
        await until(lambda: len(got) >= 90)
        await asyncio.sleep(0.2)
        assert len(got) == 90
        for r, room in enumerate("xyz"):
            assert [s for s in got if s % 10 == r] == sent[room]
    finally:
        await sio.disconnect()


async def test_a_request_that_is_not_an_engine_io_websocket_is_refused(floor_url: str) -> None:
    host, port = floor_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET /socket.io/?EIO=3&transport=polling HTTP/1.1\r\nHost: x\r\n\r\n")
    status = await asyncio.wait_for(reader.readline(), 5)
    assert status.startswith(b"HTTP/1.1 400 ")
    assert await asyncio.wait_for(reader.read(), 5)  # the body, then the server closes
    writer.close()


def caught_up(got: list[int], s: int) -> Callable[[], bool]:
    return lambda: len(got) > s


async def read_frame(reader: asyncio.StreamReader) -> bytes:
    """One small unmasked server frame's payload (handshake packets are < 126 bytes)."""
    b0, n = await reader.readexactly(2)
    assert b0 == 0x81
    assert n < 126
    return await reader.readexactly(n)


async def test_a_client_that_stops_reading_is_cut_off_and_the_others_get_everything(
    floor_url: str, pub: NatsPublisher
) -> None:
    host, port = floor_url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(
        b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: x\r\n"
        b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    head = await reader.readuntil(b"\r\n\r\n")
    assert b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in head
    assert (await read_frame(reader))[:1] == b"0"
    writer.write(_client_frame(0x1, b"40"))
    slow_sid = orjson.loads((await read_frame(reader))[2:])["sid"]
    sio = socketio.AsyncClient(reconnection=False)
    got: list[int] = []
    sio.on("bench", lambda data: got.append(data["s"]))
    await sio.connect(floor_url, transports=["websocket"])
    try:
        await pub.join(slow_sid, "slow")
        await pub.join(sio.get_sid(), "slow")
        await pub.flush()
        await asyncio.sleep(0.3)
        n, pad = 800, "x" * 32_000  # 25 MB: more than 4 MB of buffer plus the kernel's
        for s in range(n):
            await pub.broadcast("slow", "bench", {"s": s, "p": pad})
            if s % 50 == 49:  # paced to the reading client, which must never lag 4 MB
                await pub.flush()
                await until(caught_up(got, s))
                assert len(got) == s + 1, "the reading client lost messages or was cut off"
        await pub.flush()
        await until(lambda: len(got) >= n)
        assert got == list(range(n))
        received = 0
        with contextlib.suppress(ConnectionError):  # reset by the server's abort
            while chunk := await asyncio.wait_for(reader.read(1 << 16), 10):
                received += len(chunk)
        assert received < n * len(pad)  # cut off, not merely slow
    finally:
        writer.close()
        await sio.disconnect()
