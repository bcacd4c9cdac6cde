"""Load-generator worker: many raw Engine.IO v4 / Socket.IO v5 websocket clients.

The clients speak the Socket.IO wire protocol themselves (open packet, ``40``
connect, ``2``/``3`` pings, ``42[...]`` events) instead of using a Socket.IO client
library, so a delivery costs one frame read and one orjson parse. Two transports:

- ``aiohttp``: aiohttp client websockets, one reader task per client.
- ``raw``: a minimal RFC 6455 client on ``asyncio.Protocol`` that parses frames in
  ``data_received``; no task switch per message, about 3x cheaper per delivery,
  which leaves more of a small machine to the servers being measured.

Each event payload carries ``t`` (publish time, ``time.time_ns()``, same machine
clock) and ``k`` (step id). Steps with ``k >= 0`` are measured; negative ``k`` marks
readiness probes, which only record which clients received them. Run by the harness
as ``python -m bench.loadgen``; see :mod:`bench.rpc` for the control channel.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import struct
import time
from typing import Any, Protocol, cast
from urllib.parse import urlsplit

import aiohttp
import orjson

from bench import hist
from bench.procstat import raise_nofile_limit
from bench.rpc import Handler, run, serve

EIO_PATH: str = "/socket.io/?EIO=4&transport=websocket"
CONNECT_TIMEOUT_S: float = 30.0
IMPLEMENTATIONS: tuple[str, ...] = ("raw", "aiohttp")


class Sink:
    """What all clients of this process received: latency samples and probe hits."""

    def __init__(self) -> None:
        self.latencies: dict[int, list[int]] = {}
        self.probed: dict[int, set[int]] = {}
        self.disconnected = 0

    def event(self, index: int, packet: bytes | str, arrived_ns: int) -> None:
        """Record one ``42[...]`` packet (without checking the prefix again)."""
        payload = orjson.loads(packet[2:])[1]
        k = payload["k"]
        if k >= 0:
            samples = self.latencies.get(k)
            if samples is None:
                samples = self.latencies[k] = []
            samples.append(arrived_ns - payload["t"])
        else:
            self.probed.setdefault(k, set()).add(index)


class Client(Protocol):
    async def close(self) -> None: ...


# -- aiohttp transport --------------------------------------------------------------


class AiohttpClient:
    def __init__(self, index: int, ws: aiohttp.ClientWebSocketResponse, sink: Sink) -> None:
        self.index = index
        self.ws = ws
        self.sink = sink
        self.task: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls, session: aiohttp.ClientSession, base_url: str, index: int, sink: Sink
    ) -> tuple[AiohttpClient, str]:
        ws = await session.ws_connect(
            base_url + EIO_PATH, compress=0, autoping=True, max_msg_size=0
        )
        try:
            opening = await ws.receive()
            if opening.type is not aiohttp.WSMsgType.TEXT or not opening.data.startswith("0"):
                raise ConnectionError(f"expected an Engine.IO open packet, got {opening.data!r}")
            await ws.send_str("40")
            while True:
                msg = await ws.receive()
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    raise ConnectionError(f"closed during Socket.IO connect: {msg.type}")
                if msg.data == "2":
                    await ws.send_str("3")
                elif msg.data.startswith("40"):
                    sid = str(orjson.loads(msg.data[2:])["sid"])
                    break
                elif msg.data.startswith("44"):
                    raise ConnectionError(f"Socket.IO connect refused: {msg.data}")
        except BaseException:
            await ws.close()
            raise
        client = cls(index, ws, sink)
        client.task = asyncio.create_task(client._receive_loop())
        return client, sid

    async def _receive_loop(self) -> None:
        """Hot loop: one frame read and one JSON parse per delivery, nothing else."""
        receive = self.ws.receive
        text = aiohttp.WSMsgType.TEXT
        event = self.sink.event
        now_ns = time.time_ns
        index = self.index
        try:
            while True:
                msg = await receive()
                if msg.type is not text:
                    break
                data: str = msg.data
                if data[:2] == "42":
                    event(index, data, now_ns())
                elif data == "2":
                    await self.ws.send_str("3")
        finally:
            self.sink.disconnected += 1

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        await self.ws.close()


# -- raw transport ------------------------------------------------------------------


def _client_frame(opcode: int, payload: bytes) -> bytes:
    """A masked client-to-server frame (RFC 6455 requires clients to mask)."""
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 1 << 16:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    masked = bytes(b ^ mask[i & 3] for i, b in enumerate(payload))
    return header + mask + masked


class RawClient(asyncio.Protocol):
    """Websocket client that parses whole frames as bytes arrive."""

    def __init__(self, index: int, host: str, path: str, sink: Sink) -> None:
        self.index = index
        self.sink = sink
        self.key = base64.b64encode(os.urandom(16)).decode()
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {self.key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.upgraded = False
        self.fragments: list[bytes] = []
        self.sid: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.closed = False

    @classmethod
    async def open(cls, base_url: str, index: int, sink: Sink) -> tuple[RawClient, str]:
        url = urlsplit(base_url)
        host, port = url.hostname or "127.0.0.1", url.port or 80
        loop = asyncio.get_running_loop()
        _, client = await loop.create_connection(
            lambda: cls(index, f"{host}:{port}", EIO_PATH, sink), host, port
        )
        try:
            sid = await client.sid
        except BaseException:
            await client.close()
            raise
        return client, sid

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, hence no isinstance.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.request)

    def send_text(self, text: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(_client_frame(0x1, text))

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buf = buf
                return
            status = buf[: buf.find(b"\r\n")]
            if b" 101 " not in status + b" ":
                self._fail(ConnectionError(f"websocket upgrade refused: {status!r}"))
                return
            self.upgraded = True
            buf = buf[end + 4 :]
        pos, size = 0, len(buf)
        while size - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            n = b1 & 0x7F
            head = 2
            if n == 126:
                if size - pos < 4:
                    break
                n = (buf[pos + 2] << 8) | buf[pos + 3]
                head = 4
            elif n == 127:
                if size - pos < 10:
                    break
                n = struct.unpack_from("!Q", buf, pos + 2)[0]
                head = 10
            if b1 & 0x80:
                head += 4  # servers do not mask, but tolerate it
            end = pos + head + n
            if end > size:
                break
            payload = buf[pos + head : end]
            if b1 & 0x80:
                mask = buf[end - n - 4 : end - n]
                payload = bytes(c ^ mask[i & 3] for i, c in enumerate(payload))
            pos = end
            self._frame(b0, payload)
        self.buf = buf[pos:]

    def _frame(self, b0: int, payload: bytes) -> None:
        opcode = b0 & 0x0F
        if not b0 & 0x80:  # fragment: keep until the final one
            self.fragments.append(payload)
            return
        if opcode == 0x0 and self.fragments:
            payload = b"".join([*self.fragments, payload])
            self.fragments.clear()
        if opcode in (0x0, 0x1):
            if payload[:2] == b"42":
                self.sink.event(self.index, payload, time.time_ns())
            elif payload == b"2":
                self.send_text(b"3")
            else:
                self._control(payload)
        elif opcode == 0x9 and self.transport is not None:
            self.transport.write(_client_frame(0xA, payload))
        elif opcode == 0x8:
            self._fail(ConnectionError("server closed the websocket"))

    def _control(self, packet: bytes) -> None:
        """Handshake packets: Engine.IO open, then Socket.IO connect reply."""
        if self.sid.done():
            return
        if packet[:1] == b"0":
            self.send_text(b"40")
        elif packet[:2] == b"40":
            self.sid.set_result(str(orjson.loads(packet[2:])["sid"]))
        elif packet[:2] == b"44":
            self._fail(ConnectionError(f"Socket.IO connect refused: {packet!r}"))

    def _fail(self, exc: Exception) -> None:
        if not self.sid.done():
            self.sid.set_exception(exc)
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.sid.done():
            self.sid.set_exception(exc or ConnectionError("connection lost"))
        elif not self.closed:
            self.sink.disconnected += 1
        self.closed = True

    async def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.closed = True
            with contextlib.suppress(Exception):
                self.transport.write(_client_frame(0x8, struct.pack("!H", 1000)))
            self.transport.close()


# -- worker -------------------------------------------------------------------------


class LoadGen:
    """All clients of one worker process."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._clients: dict[int, Client] = {}
        self.sink = Sink()

    async def connect(
        self, urls: list[str], indices: list[int], impl: str = "raw", concurrency: int = 64
    ) -> dict[str, Any]:
        """Open one Socket.IO connection per index; client ``i`` goes to ``urls[i % len]``."""
        if impl not in IMPLEMENTATIONS:
            raise ValueError(f"impl must be one of {IMPLEMENTATIONS}, not {impl!r}")
        if impl == "aiohttp" and self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, force_close=True),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_S),
            )
        gate = asyncio.Semaphore(concurrency)
        sids: dict[int, str] = {}
        errors: list[str] = []
        started = time.perf_counter()

        async def one(index: int) -> None:
            url = urls[index % len(urls)]
            async with gate:
                try:
                    client: Client
                    if impl == "raw":
                        raw = RawClient.open(url, index, self.sink)
                        client, sid = await asyncio.wait_for(raw, CONNECT_TIMEOUT_S)
                    else:
                        assert self._session is not None
                        aio = AiohttpClient.open(self._session, url, index, self.sink)
                        client, sid = await asyncio.wait_for(aio, CONNECT_TIMEOUT_S)
                except Exception as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")
                    return
            self._clients[index] = client
            sids[index] = sid

        await asyncio.gather(*(one(i) for i in indices))
        return {
            "sids": {str(i): s for i, s in sids.items()},
            "failed": len(errors),
            "errors": errors[:5],
            "seconds": time.perf_counter() - started,
        }

    async def probed(self, k: int) -> dict[str, Any]:
        return {"n": len(self.sink.probed.get(k, ())), "disconnected": self.sink.disconnected}

    async def count(self, k: int) -> dict[str, Any]:
        return {"n": len(self.sink.latencies.get(k, ())), "disconnected": self.sink.disconnected}

    async def collect(self, k: int) -> dict[str, Any]:
        """Hand over step ``k``'s latency histogram and forget its samples."""
        samples = self.sink.latencies.pop(k, [])
        return {
            "n": len(samples),
            "hist": hist.histogram(samples),
            "disconnected": self.sink.disconnected,
        }

    async def close_all(self) -> dict[str, Any]:
        clients = list(self._clients.values())
        self._clients.clear()
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
        await asyncio.sleep(0.2)  # let connection_lost / reader tasks run
        self.sink = Sink()
        return {"closed": len(clients)}

    async def ping(self) -> dict[str, Any]:
        return {"clients": len(self._clients)}

    def operations(self) -> dict[str, Handler]:
        """What the worker process answers (:func:`serve_worker`)."""
        return {
            "connect": self.connect,
            "probed": self.probed,
            "count": self.count,
            "collect": self.collect,
            "close_all": self.close_all,
            "ping": self.ping,
        }

    async def shutdown(self) -> None:
        await self.close_all()
        if self._session is not None:
            with contextlib.suppress(Exception):
                await self._session.close()


def serve_worker(gen: LoadGen) -> None:
    """Run ``gen`` as a load-generator process over :mod:`bench.rpc` until told to exit."""

    async def main() -> None:
        try:
            await serve(gen.operations())
        finally:
            await gen.shutdown()

    raise_nofile_limit()
    run(main)


def main() -> None:
    serve_worker(LoadGen())


if __name__ == "__main__":
    main()
