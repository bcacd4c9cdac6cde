"""Load-generator worker of the presence benchmark: many raw Socket.IO clients that
hold their connection, carry a handshake query (a JWT for Sailcast, rooms for Node),
and fold every presence event they receive into their view of the room.

The clients are :class:`bench.loadgen.RawClient` (a minimal websocket client parsing
frames in ``data_received``: cheap enough for 10,000 idle sockets in two processes);
only what a received event does differs. Run by the harness as
``python -m bench.presence.clients`` over :mod:`bench.rpc`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any
from urllib.parse import urlsplit

import orjson

from bench import hist
from bench.loadgen import CONNECT_TIMEOUT_S, EIO_PATH, RawClient, Sink
from bench.presence.views import EVENTS, View
from bench.procstat import raise_nofile_limit
from bench.pubworker import EVENT as BENCH_EVENT
from bench.rpc import run, serve


class PresenceSink(Sink):
    """Every client's views by room, and how many events of each kind arrived; timed
    ``bench`` events (``{"t", "k"}``, e.g. bench/scale/churn.py's join probes) are
    latency samples of step ``k``, as in :class:`bench.loadgen.Sink`, and counted in
    ``bench`` (bench/scale/topology.py counts its room messages so)."""

    def __init__(self) -> None:
        super().__init__()
        self.views: dict[tuple[int, str], View] = {}
        self.received: dict[str, int] = dict.fromkeys(EVENTS, 0)
        self.other = 0
        self.bench = 0
        self.first_ns = 0
        self.last_ns = 0

    def event(self, index: int, packet: bytes | str, arrived_ns: int) -> None:
        try:
            name, data = orjson.loads(packet[2:])[:2]
        except (orjson.JSONDecodeError, ValueError, TypeError):
            self.other += 1
            return
        if name == BENCH_EVENT and isinstance(data, dict) and "k" in data and "t" in data:
            self.bench += 1
            super().event(index, packet, arrived_ns)
            return
        if name not in self.received or not isinstance(data, dict):
            self.other += 1
            return
        self.received[name] += 1
        if not self.first_ns:
            self.first_ns = arrived_ns
        self.last_ns = arrived_ns
        room = str(data.get("room"))
        view = self.views.get((index, room))
        if view is None:
            view = self.views[(index, room)] = View()
        view.apply(name, data)

    def reset_counts(self) -> None:
        self.received = dict.fromkeys(EVENTS, 0)
        self.other = 0
        self.bench = 0
        self.first_ns = self.last_ns = 0
        for view in self.views.values():
            view.events = view.states = view.counts = view.deltas = 0


async def open_client(base_url: str, index: int, query: str, sink: Sink) -> tuple[RawClient, str]:
    """One websocket Socket.IO connection with ``query`` added to the handshake."""
    url = urlsplit(base_url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    path = EIO_PATH + (f"&{query}" if query else "")
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(
        lambda: RawClient(index, f"{host}:{port}", path, sink), host, port
    )
    try:
        sid = await client.sid
    except BaseException:
        await client.close()
        raise
    return client, sid


class Clients:
    """All clients of one worker process."""

    def __init__(self) -> None:
        self.sink = PresenceSink()
        self.clients: dict[int, RawClient] = {}

    async def connect(
        self, urls: list[str], indices: list[int], queries: list[str], concurrency: int = 64
    ) -> dict[str, Any]:
        """Client ``indices[j]`` goes to ``urls[indices[j] % len(urls)]`` with ``queries[j]``."""
        gate = asyncio.Semaphore(concurrency)
        sids: dict[int, str] = {}
        errors: list[str] = []
        started = time.perf_counter()

        async def one(index: int, query: str) -> None:
            async with gate:
                try:
                    opening = open_client(urls[index % len(urls)], index, query, self.sink)
                    client, sid = await asyncio.wait_for(opening, CONNECT_TIMEOUT_S)
                except Exception as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")
                    return
            self.clients[index] = client
            sids[index] = sid

        await asyncio.gather(*(one(i, q) for i, q in zip(indices, queries, strict=True)))
        return {
            "sids": {str(i): s for i, s in sids.items()},
            "failed": len(errors),
            "errors": errors[:5],
            "seconds": time.perf_counter() - started,
        }

    async def reset(self) -> dict[str, Any]:
        self.sink.reset_counts()
        return {}

    async def stats(self) -> dict[str, Any]:
        """Events received since the last reset, and the clients still connected."""
        s = self.sink
        return {
            "received": dict(s.received),
            "other": s.other,
            "bench": s.bench,
            "span_s": (s.last_ns - s.first_ns) / 1e9 if s.first_ns else 0.0,
            "connected": sum(1 for c in self.clients.values() if not c.closed),
        }

    async def collect(self, k: int) -> dict[str, Any]:
        """Hand over step ``k``'s latency histogram (timed ``bench`` events) and forget it."""
        samples = self.sink.latencies.pop(k, [])
        return {"n": len(samples), "hist": hist.histogram(samples)}

    async def views(self, room: str, indices: list[int] | None = None) -> dict[str, Any]:
        """Each client's view of ``room`` (those given, or all that have one)."""
        wanted = set(indices) if indices is not None else None
        out: dict[str, Any] = {}
        for (index, r), v in self.sink.views.items():
            if r != room or (wanted is not None and index not in wanted):
                continue
            out[str(index)] = {
                "users": sorted(v.users),
                "sockets": v.sockets,
                "user_count": v.user_count,
                "events": v.events,
                "states": v.states,
                "counts": v.counts,
                "deltas": v.deltas,
                "malformed": v.malformed,
            }
        return {"views": out}

    async def close_all(self) -> dict[str, Any]:
        clients = list(self.clients.values())
        self.clients.clear()
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
        await asyncio.sleep(0.2)
        self.sink = PresenceSink()
        return {"closed": len(clients)}


async def _main() -> None:
    clients = Clients()
    try:
        await serve(
            {
                "connect": clients.connect,
                "reset": clients.reset,
                "stats": clients.stats,
                "collect": clients.collect,
                "views": clients.views,
                "close_all": clients.close_all,
            }
        )
    finally:
        with contextlib.suppress(Exception):
            await clients.close_all()


def main() -> None:
    raise_nofile_limit()
    run(_main)


if __name__ == "__main__":
    main()
