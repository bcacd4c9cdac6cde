"""Load-generator worker: many raw Engine.IO v4 / Socket.IO v5 websocket clients.

Speaking the wire protocol directly over aiohttp (instead of using a Socket.IO client
library) keeps the per-message cost to one frame read and one orjson parse, so the
generator stays well below the servers' cost per delivery. Run by the harness as
``python -m bench.loadgen``; see :mod:`bench.rpc` for the control channel.

Each event payload carries ``t`` (publish time, ``time.time_ns()``, same machine
clock) and ``k`` (step id). Steps with ``k >= 0`` are measured; negative ``k`` marks
readiness probes, which only record which clients received them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import aiohttp
import orjson

from bench import hist
from bench.procstat import raise_nofile_limit
from bench.rpc import run, serve

EIO_PATH: str = "/socket.io/?EIO=4&transport=websocket"
CONNECT_TIMEOUT_S: float = 30.0


class LoadGen:
    """All clients of one worker process and what they received."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._clients: dict[int, aiohttp.ClientWebSocketResponse] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._latencies: dict[int, list[int]] = {}
        self._probed: dict[int, set[int]] = {}
        self.disconnected = 0

    async def connect(
        self, urls: list[str], indices: list[int], concurrency: int = 64
    ) -> dict[str, Any]:
        """Open one Socket.IO connection per index; client ``i`` goes to ``urls[i % len]``."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, force_close=True),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_S),
            )
        gate = asyncio.Semaphore(concurrency)
        sids: dict[int, str] = {}
        errors: list[str] = []
        started = time.perf_counter()

        async def one(index: int) -> None:
            async with gate:
                try:
                    sids[index] = await asyncio.wait_for(
                        self._open(index, urls[index % len(urls)]), CONNECT_TIMEOUT_S
                    )
                except Exception as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")

        await asyncio.gather(*(one(i) for i in indices))
        return {
            "sids": {str(i): s for i, s in sids.items()},
            "failed": len(errors),
            "errors": errors[:5],
            "seconds": time.perf_counter() - started,
        }

    async def _open(self, index: int, base_url: str) -> str:
        assert self._session is not None
        ws = await self._session.ws_connect(
            base_url + EIO_PATH, compress=0, autoping=True, max_msg_size=0
        )
        opening = await ws.receive()
        if opening.type is not aiohttp.WSMsgType.TEXT or not opening.data.startswith("0"):
            await ws.close()
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
        self._clients[index] = ws
        task = asyncio.create_task(self._receive_loop(index, ws))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return sid

    async def _receive_loop(self, index: int, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Hot loop: one frame read and one JSON parse per delivery, nothing else."""
        receive = ws.receive
        text = aiohttp.WSMsgType.TEXT
        loads = orjson.loads
        now_ns = time.time_ns
        latencies = self._latencies
        try:
            while True:
                msg = await receive()
                if msg.type is not text:
                    break
                data: str = msg.data
                if data[:2] == "42":
                    arrived = now_ns()
                    payload = loads(data[2:])[1]
                    k = payload["k"]
                    if k >= 0:
                        samples = latencies.get(k)
                        if samples is None:
                            samples = latencies[k] = []
                        samples.append(arrived - payload["t"])
                    else:
                        self._probed.setdefault(k, set()).add(index)
                elif data == "2":
                    await ws.send_str("3")
        finally:
            if self._clients.pop(index, None) is not None:
                self.disconnected += 1

    async def probed(self, k: int) -> dict[str, Any]:
        return {"n": len(self._probed.get(k, ())), "disconnected": self.disconnected}

    async def count(self, k: int) -> dict[str, Any]:
        return {"n": len(self._latencies.get(k, ())), "disconnected": self.disconnected}

    async def collect(self, k: int) -> dict[str, Any]:
        """Hand over step ``k``'s latency histogram and forget its samples."""
        samples = self._latencies.pop(k, [])
        return {
            "n": len(samples),
            "hist": hist.histogram(samples),
            "disconnected": self.disconnected,
        }

    async def close_all(self) -> dict[str, Any]:
        clients = list(self._clients.values())
        self._clients.clear()
        await asyncio.gather(*(ws.close() for ws in clients), return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._probed.clear()
        self._latencies.clear()
        self.disconnected = 0
        return {"closed": len(clients)}

    async def ping(self) -> dict[str, Any]:
        return {"clients": len(self._clients)}

    async def shutdown(self) -> None:
        await self.close_all()
        if self._session is not None:
            with contextlib.suppress(Exception):
                await self._session.close()


async def _main() -> None:
    gen = LoadGen()
    try:
        await serve(
            {
                "connect": gen.connect,
                "probed": gen.probed,
                "count": gen.count,
                "collect": gen.collect,
                "close_all": gen.close_all,
                "ping": gen.ping,
            }
        )
    finally:
        await gen.shutdown()


def main() -> None:
    raise_nofile_limit()
    run(_main)


if __name__ == "__main__":
    main()
