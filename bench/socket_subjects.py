"""What a socket's own request subject (`<p>.s.<socket id>`) costs, to decide on
per-gateway socket addressing (a socket-addressed request sent on its gateway's subject
instead, so a socket costs no NATS subscription).

``python -m bench.socket_subjects [--sockets 20000]``

Starts a nats-server (monitoring on), connects a NatsBroker in this process, and
subscribes one socket subject per simulated socket exactly as the gateway core does
(gateway.interest over gateway.broker.nats_broker). Reports, per socket:
- Python heap (tracemalloc) and RSS growth of the gateway-side process,
- nats-server memory and its `subscriptions` count (from /varz),
- the time to subscribe them and to re-send them all after a reconnect (what nats-py
  does on every reconnect: one SUB line per subscription).

Figures and decision (2026-12-03, 20,000 sockets, shared 2-core machine): gateway heap
~400-420 B and RSS ~450-600 B per socket subject (498 B heap before the subject-keyed
broker, which kept a handler closure per socket); nats-server ~810 B and one
subscription per socket; subscribe ~130-160 us per socket (the SUB and its flush);
all 20,000 re-sent in 0.1-0.2 s after a reconnect. Against S3's 23.2 KB per idle
connection that is under 2 %, and under 4 % of the gap to the 12 KB target.

Per-gateway addressing would save that, but the recovery issue restores a socket on
ANOTHER gateway with the SAME id, so an id cannot name its gateway: a request would
need a socket -> gateway lookup (a directory such as a JetStream KV bucket: a write
per connect and recovery, a read and a race per request) or a fan-out of every socket
request to every gateway (N-fold control traffic, and no more instant "no responders"
= NoSuchSocket). Not sound enough for what it saves: each socket keeps its own subject,
costing a dict entry and one slotted `_LiteSub` (no closure, no nats-py Subscription).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import socket
import time
import tracemalloc
import urllib.request

from bench.procstat import rss_bytes
from gateway.broker.nats_broker import NatsBroker
from gateway.embedded_nats import EmbeddedNats
from gateway.interest import Interest
from shared.config import NatsSettings, parse_servers
from shared.subjects import Subjects


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _varz(port: int) -> dict[str, int]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/varz", timeout=5) as r:
        v = json.load(r)
    return {"subscriptions": int(v["subscriptions"]), "mem": int(v["mem"])}


async def _settle(port: int, want: int) -> dict[str, int]:
    deadline = time.monotonic() + 30
    while True:
        v = _varz(port)
        if v["subscriptions"] >= want or time.monotonic() > deadline:
            return v
        await asyncio.sleep(0.1)


async def measure(n: int, *, trace: bool) -> dict[str, float]:
    """RSS is read in a run without tracemalloc (which inflates it), the heap in another."""
    mport = _free_port()
    server = EmbeddedNats(jetstream=False, extra_args=("-m", str(mport))).start()
    try:
        broker = await NatsBroker.connect(
            NatsSettings(servers=parse_servers(server.url)), name="bench-socket-subjects"
        )
        subjects = Subjects("bench")
        ids = [secrets.token_urlsafe(15)[:20] for _ in range(n)]  # Socket.IO-like ids
        wanted = set(ids)
        interest = Interest(broker, subjects.socket, wanted.__contains__, 1.0)
        await broker.flush()
        base = await _settle(mport, 0)
        if trace:
            tracemalloc.start()
        heap0, rss0 = tracemalloc.get_traced_memory()[0], rss_bytes(os.getpid())
        t0 = time.perf_counter()
        for sid in ids:
            await interest.want(sid)
        await broker.flush(timeout=30)
        subscribe_s = time.perf_counter() - t0
        heap1, rss1 = tracemalloc.get_traced_memory()[0], rss_bytes(os.getpid())
        tracemalloc.stop()
        after = await _settle(mport, base["subscriptions"] + n)

        reconnected = asyncio.Event()

        async def on_event(event: object) -> None:
            if str(event).endswith("RECONNECTED"):
                reconnected.set()

        broker.set_listener(on_event)
        t0 = time.perf_counter()
        await broker.force_reconnect()
        await asyncio.wait_for(reconnected.wait(), 30)
        await broker.flush(timeout=30)
        resub_s = time.perf_counter() - t0
        await broker.close()
        return {
            "sockets": n,
            "client_heap_B_per_socket" if trace else "client_rss_B_per_socket": (
                (heap1 - heap0) / n if trace else (rss1 - rss0) / n
            ),
            "server_subscriptions_added": after["subscriptions"] - base["subscriptions"],
            "server_mem_B_per_socket": (after["mem"] - base["mem"]) / n,
            "subscribe_us_per_socket": subscribe_s / n * 1e6,
            "reconnect_resubscribe_s": resub_s,
        }
    finally:
        server.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sockets", type=int, default=20000)
    args = ap.parse_args()
    for trace in (False, True):
        figures = asyncio.run(measure(args.sockets, trace=trace))
        for key, value in figures.items():
            print(f"{key:32} {value:12.1f}")
        print()


if __name__ == "__main__":
    main()
