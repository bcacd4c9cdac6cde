"""A gateway SIGKILLed under load: its clients reconnect (python-socketio's own
reconnection, default delays) through a round-robin balancer to the surviving gateway,
a worker re-joins them to their room by their new ids, and they receive again. The
clients of the surviving gateway notice nothing.

This is what a crashed or OOM-killed pod looks like: no drain, no goodbye heartbeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import socketio

from publisher import NoSuchSocket, Publisher
from tests.faults.faultkit import TcpBalancer, astatus, wait_until
from tests.helpers import GatewayProcess

pytestmark = pytest.mark.integration

CLIENTS = 30
RATE_PER_S = 100
MAX_MESSAGES = 3000  # 30 s at the rate: the publishing loop stops by itself
USABLE_TIMEOUT_S = 20.0


@dataclass
class Member:
    """A reconnecting Socket.IO client that records its sessions and the `m` events."""

    name: str
    client: socketio.AsyncClient
    sids: list[str] = field(default_factory=list)
    connected_at: list[float] = field(default_factory=list)
    disconnected_at: list[float] = field(default_factory=list)
    joined_at: list[float] = field(default_factory=list)
    got: list[tuple[int, float]] = field(default_factory=list)

    def first_after(self, t: float) -> tuple[int, float] | None:
        return next(((s, at) for s, at in self.got if at >= t), None)


async def start_member(name: str, url: str, rejoin: asyncio.Queue[Member]) -> Member:
    client = socketio.AsyncClient(reconnection=True)  # delays: python-socketio defaults
    m = Member(name, client)

    async def on_connect() -> None:
        m.connected_at.append(time.monotonic())
        m.sids.append(str(client.get_sid()))
        rejoin.put_nowait(m)  # sails.io.js apps re-subscribe on reconnect the same way

    async def on_disconnect(reason: Any = None) -> None:
        m.disconnected_at.append(time.monotonic())

    async def on_m(data: Any) -> None:
        m.got.append((int(data["i"]), time.monotonic()))

    client.on("connect", on_connect)
    client.on("disconnect", on_disconnect)
    client.on("m", on_m)
    await client.connect(url, transports=["websocket"], wait_timeout=10)
    return m


async def worker(pub: Publisher, rejoin: asyncio.Queue[Member]) -> None:
    """The app's worker: (re-)joins each connected socket to `feed` by its current id."""
    while True:
        m = await rejoin.get()
        try:
            await pub.sockets.join(m.sids[-1], "feed")
            m.joined_at.append(time.monotonic())
        except NoSuchSocket:
            pass  # gone again before we got to it; its next connect re-queues it


async def pace(pub: Publisher, stop: asyncio.Event) -> int:
    start = time.monotonic()
    for i in range(MAX_MESSAGES):
        if stop.is_set():
            return i
        delay = start + i / RATE_PER_S - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await pub.sockets.broadcast("feed", "m", {"i": i})
    return MAX_MESSAGES


async def test_gateway_killed_clients_move_and_are_usable(
    gateway_factory: Callable[..., GatewayProcess], publisher: Publisher
) -> None:
    ga, gb = gateway_factory("ka"), gateway_factory("kb")
    lb = await TcpBalancer([ga.port, gb.port]).start()
    rejoin: asyncio.Queue[Member] = asyncio.Queue()
    work = asyncio.create_task(worker(publisher, rejoin))
    stop = asyncio.Event()
    members: list[Member] = []
    pacer: asyncio.Task[int] | None = None
    try:
        members = [await start_member(f"c{i}", lb.url, rejoin) for i in range(CLIENTS)]
        await wait_until(lambda: all(m.joined_at for m in members), 10, "initial joins")
        assert lb.routed == {ga.port: CLIENTS // 2, gb.port: CLIENTS // 2}
        pacer = asyncio.create_task(pace(publisher, stop))
        await wait_until(lambda: all(m.got for m in members), 10, "steady delivery")
        await asyncio.sleep(0.5)

        before = {m.name: m.sids[-1] for m in members}
        killed_at = time.monotonic()
        ga.proc.kill()
        # a cluster-wide operation right away: the survivors still list the dead gateway
        # as a peer (until its heartbeats are overdue), so the publisher probes it after
        # a short silence, finds it gone and does not wait out its request timeout
        op_started = time.monotonic()
        await publisher.sockets.add_room_members_to_rooms("feed", "audit")
        cluster_op_s = time.monotonic() - op_started
        assert cluster_op_s < publisher.request_timeout_s

        moved = [m for m in members if m.disconnected_at]
        stayed = [m for m in members if not m.disconnected_at]

        def usable() -> bool:
            return all(
                len(m.joined_at) >= 2 and m.first_after(m.joined_at[-1]) is not None
                for m in members
                if m.disconnected_at
            )

        await wait_until(usable, USABLE_TIMEOUT_S, "every moved client receiving again")
        moved = [m for m in members if m.disconnected_at]
        stayed = [m for m in members if not m.disconnected_at]
        await asyncio.sleep(0.5)
        stop.set()
        total = await pacer
        await wait_until(
            lambda: all(m.got and m.got[-1][0] == total - 1 for m in members),
            10,
            "the last message everywhere",
        )

        assert len(moved) == CLIENTS // 2, "exactly the killed gateway's clients moved"
        assert all(len(m.disconnected_at) == 1 and len(m.sids) == 2 for m in moved)
        assert await astatus(gb, "/readyz") == 200
        assert gb.metric("sailcast_gateway_connections") == CLIENTS
        for m in stayed:  # the survivor's own clients lost nothing
            assert [s for s, _ in m.got] == list(range(m.got[0][0], total)), m.name
        for m in moved:  # once re-joined, a moved client misses nothing
            seqs = [s for s, _ in m.got]
            assert seqs == sorted(set(seqs)), m.name
            resumed = m.first_after(m.joined_at[-1])
            assert resumed is not None
            assert [s for s in seqs if s >= resumed[0]] == list(range(resumed[0], total))
        with pytest.raises(NoSuchSocket):  # the old ids are gone at once, not timing out
            await publisher.sockets.rooms(before[moved[0].name])

        detect = [m.disconnected_at[0] - killed_at for m in moved]
        reconnect = [m.connected_at[-1] - killed_at for m in moved]
        usable_s = [
            m.first_after(m.joined_at[-1])[1] - killed_at  # type: ignore[index]
            for m in moved
        ]
        lost = [
            len(set(range(min(s for s, _ in m.got), total)) - {s for s, _ in m.got}) for m in moved
        ]
        print(
            f"\ngateway SIGKILL with {CLIENTS} clients at {RATE_PER_S} msg/s: "
            f"{len(moved)} moved; disconnect seen after max {max(detect) * 1000:.0f} ms; "
            f"reconnected after median {statistics.median(reconnect):.2f}s / max "
            f"{max(reconnect):.2f}s (python-socketio default delay 1 s +-0.5); usable "
            f"(re-joined, receiving) after median {statistics.median(usable_s):.2f}s / max "
            f"{max(usable_s):.2f}s; messages missed per moved client median "
            f"{statistics.median(lost):.0f} / max {max(lost)}; survivor's clients missed 0; "
            f"a cluster-wide op right after the kill took {cluster_op_s:.2f}s"
        )
    finally:
        stop.set()
        if pacer is not None:
            with contextlib.suppress(Exception):
                await pacer
        work.cancel()
        for m in members:
            with contextlib.suppress(Exception):
                await m.client.disconnect()
        await lb.close()
