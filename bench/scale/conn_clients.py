"""Load-generator worker of the connections benchmark (:mod:`bench.scale.connections`).

It is :class:`bench.loadgen.LoadGen` (raw websocket clients, the same ``count`` /
``collect`` / ``close_all`` operations) plus one operation the scale runs need:
``connect_timed`` opens the connections from a chosen source address (loopback has
one ephemeral port range per source address, 32768-60999, so spreading workers over
127.0.0.2.. keeps tens of thousands of connections clear of it and of other programs
on 127.0.0.1) and times each one, TCP connect to the Socket.IO CONNECT ack.
Run by the harness as ``python -m bench.scale.conn_clients`` over :mod:`bench.rpc`.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import urlsplit

from bench import hist
from bench.loadgen import CONNECT_TIMEOUT_S, EIO_PATH, LoadGen, RawClient, serve_worker
from bench.rpc import Handler


class ConnLoadGen(LoadGen):
    """All clients of one worker process, opened with per-connection timing."""

    def operations(self) -> dict[str, Handler]:
        return {**super().operations(), "connect_timed": self.connect_timed}

    async def connect_timed(
        self, urls: list[str], indices: list[int], source_ip: str = "", concurrency: int = 256
    ) -> dict[str, Any]:
        """Open client ``i`` to ``urls[i % len(urls)]`` with at most ``concurrency`` in
        flight; reply with the connect latency histogram and the errors."""
        loop = asyncio.get_running_loop()
        gate = asyncio.Semaphore(concurrency)
        latencies: list[int] = []
        errors: list[str] = []
        failed = 0
        local_addr = (source_ip, 0) if source_ip else None
        started = time.perf_counter()

        async def one(index: int) -> None:
            nonlocal failed
            url = urlsplit(urls[index % len(urls)])
            host, port = url.hostname or "127.0.0.1", url.port or 80
            async with gate:
                begun = time.perf_counter_ns()
                try:
                    _, client = await asyncio.wait_for(
                        loop.create_connection(
                            lambda: RawClient(index, f"{host}:{port}", EIO_PATH, self.sink),
                            host,
                            port,
                            local_addr=local_addr,
                        ),
                        CONNECT_TIMEOUT_S,
                    )
                    try:
                        await asyncio.wait_for(client.sid, CONNECT_TIMEOUT_S)
                    except BaseException:
                        await client.close()
                        raise
                except Exception as exc:
                    failed += 1
                    if len(errors) < 5:
                        errors.append(f"{type(exc).__name__}: {exc}")
                    return
                latencies.append(time.perf_counter_ns() - begun)
            self._clients[index] = client

        await asyncio.gather(*(one(i) for i in indices))
        return {
            "connected": len(latencies),
            "failed": failed,
            "errors": errors,
            "seconds": time.perf_counter() - started,
            "hist": hist.histogram(latencies),
        }


def main() -> None:
    serve_worker(ConnLoadGen())


if __name__ == "__main__":
    main()
