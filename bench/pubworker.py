"""Publisher worker: joins sockets to rooms and publishes at a paced rate.

A process of its own so its CPU is neither the server's nor the load generator's, and
so a blocking (sync) publisher can be measured without stalling the harness. The
system's publisher is opened from a :class:`~bench.systems.base.PublisherSpec`.
Run by the harness as ``python -m bench.pubworker``.
"""

from __future__ import annotations

import asyncio
import importlib
import time
from collections.abc import Callable
from typing import Any

from bench.rpc import run, serve
from bench.systems.base import BenchPublisher, SyncBenchPublisher

EVENT: str = "bench"
PAYLOAD_BYTES: int = 200
"""Size of the JSON-encoded ``data`` (baseline.md's 200-byte payload)."""
_PAD: str = "x" * (PAYLOAD_BYTES - len('{"t":1764000000000000000,"k":0,"s":0,"p":""}'))
S4_ROOM: str = "s4-nobody"
S4_BATCH: int = 200
PACING_TICK_S: float = 0.002
"""Shortest sleep of the pacing loop: shorter sleeps spin (1 ms timer resolution) and
would burn a core the servers need; due messages are sent in a burst per tick."""


def payload(k: int, seq: int) -> dict[str, Any]:
    """Event data: publish time ``t`` (ns, wall clock), step ``k``, sequence ``s``."""
    return {"t": time.time_ns(), "k": k, "s": seq, "p": _PAD}


def import_callable(path: str) -> Callable[..., Any]:
    module, _, attr = path.partition(":")
    func = getattr(importlib.import_module(module), attr)
    if not callable(func):
        raise TypeError(f"{path} is not callable")
    return func  # type: ignore[no-any-return]


def _rates(n: int, elapsed: float, cpu: float) -> dict[str, Any]:
    return {"n": n, "elapsed_s": elapsed, "rate": n / elapsed, "cpu_us_per_publish": cpu / n * 1e6}


class PubWorker:
    def __init__(self) -> None:
        self._pub: BenchPublisher | None = None
        self._spec: dict[str, Any] = {}

    @property
    def pub(self) -> BenchPublisher:
        if self._pub is None:
            raise RuntimeError("open first")
        return self._pub

    async def open(self, spec: dict[str, Any]) -> dict[str, Any]:
        self._spec = spec
        if not spec.get("factory"):
            raise ValueError("this worker needs a PublisherSpec with a factory")
        self._pub = await import_callable(spec["factory"])(**spec["kwargs"])
        return {}

    async def join(self, pairs: list[list[str]]) -> dict[str, Any]:
        started = time.perf_counter()
        for sid, room in pairs:
            await self.pub.join(sid, room)
        await self.pub.flush()
        return {"seconds": time.perf_counter() - started}

    async def probe(self, rooms: list[str], k: int) -> dict[str, Any]:
        for seq, room in enumerate(rooms):
            await self.pub.broadcast(room, EVENT, payload(k, seq))
        await self.pub.flush()
        return {}

    async def run(self, k: int, rooms: list[str], rate: float, duration_s: float) -> dict[str, Any]:
        """Publish ``rate`` messages/s round-robin over ``rooms`` for ``duration_s``.

        Messages are sent when due (catching up in bursts if the loop was late), so
        a publisher that cannot keep up shows as ``achieved_rate < rate``.
        """
        pub = self.pub
        total = max(1, round(rate * duration_s))
        n_rooms = len(rooms)
        clock = time.perf_counter
        cpu0 = time.process_time()
        start = clock()
        sent = 0
        while sent < total:
            due = start + sent / rate
            now = clock()
            if due > now:
                await asyncio.sleep(max(due - now, PACING_TICK_S))
                now = clock()
            until = min(total, int((now - start) * rate) + 1)
            while sent < until:
                await pub.broadcast(rooms[sent % n_rooms], EVENT, payload(k, sent))
                sent += 1
        await pub.flush()
        elapsed = clock() - start
        return {
            "sent": sent,
            "elapsed_s": elapsed,
            "achieved_rate": sent / elapsed,
            "publish_cpu_s": time.process_time() - cpu0,
        }

    async def throughput(self, mode: str, seconds: float, max_n: int) -> dict[str, Any]:
        """S4: publishes/s of one publisher in one process, to a room nobody is in."""
        if mode == "async":
            pub = self.pub
            n = 0
            cpu0, start = time.process_time(), time.perf_counter()
            while n < max_n and time.perf_counter() - start < seconds:
                for i in range(S4_BATCH):
                    await pub.broadcast(S4_ROOM, EVENT, payload(0, n + i))
                n += S4_BATCH
            await pub.flush()
            return _rates(n, time.perf_counter() - start, time.process_time() - cpu0)
        if mode == "sync":
            factory = self._spec.get("sync_factory")
            if not factory:
                return {"n": 0, "skipped": "no sync publisher"}
            # In a thread without an event loop, like a WSGI or Celery worker.
            return await asyncio.to_thread(self._sync_throughput, factory, seconds, max_n)
        raise ValueError(f"mode must be async or sync, not {mode!r}")

    def _sync_throughput(self, factory: str, seconds: float, max_n: int) -> dict[str, Any]:
        spub: SyncBenchPublisher = import_callable(factory)(**self._spec["kwargs"])
        n = 0
        # Process CPU, not thread CPU: a sync publisher may work in a thread of its own.
        cpu0, start = time.process_time(), time.perf_counter()
        while n < max_n and time.perf_counter() - start < seconds:
            for i in range(S4_BATCH):
                spub.broadcast(S4_ROOM, EVENT, payload(0, n + i))
            n += S4_BATCH
        spub.close()
        return _rates(n, time.perf_counter() - start, time.process_time() - cpu0)

    async def close(self) -> dict[str, Any]:
        if self._pub is not None:
            await self._pub.close()
            self._pub = None
        return {}


async def _main() -> None:
    worker = PubWorker()
    try:
        await serve(
            {
                "open": worker.open,
                "join": worker.join,
                "probe": worker.probe,
                "run": worker.run,
                "throughput": worker.throughput,
                "close": worker.close,
            }
        )
    finally:
        await worker.close()


def main() -> None:
    run(_main)


if __name__ == "__main__":
    main()
