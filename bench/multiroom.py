"""What one broadcast to R rooms costs: ``python -m bench.multiroom [--rooms 1,100,1000,10000]``.

Starts a nats-server (monitoring on) and three real gateway processes; for each R,
one client on gateway 0 is in all R rooms, one on gateway 1 in every other room and
one on gateway 1 only in the last room, and gateway 2 holds a client in none of them
(a bystander). One `pub.sockets.broadcast` to the R rooms is published, and the
script reports:
- the message bytes through NATS: what the publisher sent plus what the gateways
  received (per-connection `in_bytes`/`out_bytes` of the server's `/connz`),
- the gateways' CPU seconds (all three processes, until they are idle again; the
  bystander's share on its own),
- the time until every member had it, and whether each had it exactly once
  (`complete`); a run that does not complete in `--timeout-s` says so.

Issue 18 item 7: before, a broadcast to R rooms went out as R copies that each listed
all R rooms, O(R^2) bytes. Figures are in docs/protocol.md ("Broadcasts to many rooms").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import orjson
import socketio

from bench.procstat import cpu_seconds, free_port, total_cpu_seconds
from gateway.embedded_nats import EmbeddedNats
from publisher import Publisher

PREFIX = "mrbench"
EVENT = "multi"
IDLE_CPU_S = 0.02
"""CPU the three gateways may spend in half a second and still count as idle."""


@dataclass
class Member:
    """A real Socket.IO client that counts the benchmark's event."""

    client: socketio.AsyncClient
    got: list[float] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def sid(self) -> str:
        return str(self.client.get_sid())


async def connect(url: str) -> Member:
    member = Member(socketio.AsyncClient(reconnection=False))

    async def on_event(*_: Any) -> None:
        member.got.append(time.perf_counter())
        member.arrived.set()

    member.client.on(EVENT, on_event)
    await member.client.connect(url, transports=["websocket"], wait_timeout=10)
    return member


def start_gateway(
    nats_url: str, gateway_id: str, max_rooms: int
) -> tuple[subprocess.Popen[bytes], str]:
    env = dict(os.environ)
    env.update(
        SAILCAST_NATS_URL=nats_url,
        SAILCAST_PREFIX=PREFIX,
        SAILCAST_GATEWAY_ID=gateway_id,
        SAILCAST_PORT="0",
        SAILCAST_METRICS_PORT="0",
        SAILCAST_HOST="127.0.0.1",
        SAILCAST_MAX_ROOMS_PER_SOCKET=str(max_rooms),
        SAILCAST_LOG_LEVEL="WARNING",
        # heartbeats and readiness round trips are NATS traffic too: rare, so that the
        # small broadcasts' bytes are not lost in them
        SAILCAST_HEARTBEAT_INTERVAL_S="30",
        SAILCAST_READY_CHECK_INTERVAL_S="30",
    )
    proc = subprocess.Popen([sys.executable, "-m", "gateway"], env=env, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    line = b""
    while not line.startswith(b"{"):
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            raise RuntimeError(f"gateway {gateway_id} exited with {proc.returncode}")
    return proc, f"http://127.0.0.1:{orjson.loads(line)['port']}"


def connz(port: int) -> dict[str, tuple[int, int]]:
    """Connection name → (bytes it sent to the server, bytes the server sent it)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/connz?limit=1000", timeout=10) as r:
        conns = json.load(r)["connections"]
    return {c.get("name", str(c["cid"])): (c["in_bytes"], c["out_bytes"]) for c in conns}


def wire_bytes(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> int:
    """Bytes the publisher sent plus bytes the gateways received, between two readings."""
    total = 0
    for name, (sent, received) in after.items():
        sent0, received0 = before.get(name, (0, 0))
        if name == "bench-publisher":
            total += sent - sent0
        elif name.startswith("sailcast-gateway"):
            total += received - received0
    return total


async def one(
    r: int, pub: Publisher, urls: list[str], pids: list[int], mport: int, timeout_s: float
) -> dict[str, Any]:
    rooms = [f"r{r}-{i:05d}" for i in range(r)]
    everywhere, odd, last, bystander = [await connect(u) for u in (*urls[:2], *urls[1:])]
    clients = (everywhere, odd, last, bystander)
    try:
        await pub.sockets.join(everywhere.sid, rooms)
        await pub.sockets.join(odd.sid, rooms[1::2] or rooms)
        await pub.sockets.join(last.sid, rooms[-1])
        await pub.sockets.join(bystander.sid, f"elsewhere-{r}")
        await asyncio.sleep(0.3)  # the SUBs of the joins are through; idle traffic settles
        bytes0, cpu0, idle0 = connz(mport), total_cpu_seconds(pids), cpu_seconds(pids[2])
        pcpu0, t0 = time.process_time(), time.perf_counter()
        await pub.sockets.broadcast(rooms, EVENT, {"text": "hello", "n": r})
        await pub.flush(timeout=timeout_s)
        publish_cpu = time.process_time() - pcpu0
        members = (everywhere, odd, last)
        try:
            await asyncio.wait_for(asyncio.gather(*(m.arrived.wait() for m in members)), timeout_s)
            delivered_s: float | None = max(m.got[0] for m in members) - t0
        except TimeoutError:
            delivered_s = None
        await idle(pids, time.monotonic() + timeout_s)  # duplicates would arrive by then
        return {
            "rooms": r,
            "nats_bytes": wire_bytes(bytes0, connz(mport)),
            "gateway_cpu_s": total_cpu_seconds(pids) - cpu0,
            "bystander_cpu_s": cpu_seconds(pids[2]) - idle0,
            "publisher_cpu_s": publish_cpu,
            "delivered_s": delivered_s,
            "complete": delivered_s is not None and all(len(m.got) == 1 for m in members),
            "copies": [len(m.got) for m in clients],
        }
    finally:
        for m in clients:
            await m.client.disconnect()


async def idle(pids: list[int], deadline: float) -> None:
    """Wait until the gateways stop spending CPU (at most until deadline)."""
    before = total_cpu_seconds(pids)
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        now = total_cpu_seconds(pids)
        if now - before < IDLE_CPU_S:
            return
        before = now


async def run(room_counts: list[int], timeout_s: float) -> list[dict[str, Any]]:
    mport = free_port()
    server = EmbeddedNats(jetstream=False, extra_args=("-m", str(mport))).start()
    procs = [start_gateway(server.url, f"gw{i}", max(room_counts) + 10) for i in range(3)]
    try:
        pub = await Publisher.connect(
            server.url, prefix=PREFIX, name="bench-publisher", request_timeout_s=timeout_s
        )
        try:
            urls, pids = [u for _, u in procs], [p.pid for p, _ in procs]
            return [await one(r, pub, urls, pids, mport, timeout_s) for r in room_counts]
        finally:
            await pub.close()
    finally:
        for proc, _ in procs:
            proc.terminate()
        for proc, _ in procs:
            proc.wait(timeout=15)
        server.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rooms", default="1,100,1000,10000", help="comma-separated R values")
    ap.add_argument("--timeout-s", type=float, default=60.0)
    args = ap.parse_args()
    rows = asyncio.run(run([int(x) for x in args.rooms.split(",")], args.timeout_s))
    print(
        f"{'rooms':>6} {'NATS bytes':>13} {'gateway CPU s':>14} {'bystander CPU s':>16} "
        f"{'publisher CPU s':>16} {'delivered s':>12} complete copies"
    )
    for row in rows:
        delivered = "-" if row["delivered_s"] is None else f"{row['delivered_s']:.3f}"
        print(
            f"{row['rooms']:>6} {row['nats_bytes']:>13,} {row['gateway_cpu_s']:>14.3f} "
            f"{row['bystander_cpu_s']:>16.3f} "
            f"{row['publisher_cpu_s']:>16.3f} {delivered:>12} {row['complete']!s:>8} "
            f"{row['copies']}"
        )


if __name__ == "__main__":
    main()
