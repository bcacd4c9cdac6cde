"""A 3-node NATS cluster loses nodes under load: gateways and the publisher fail over to
the survivors, delivery resumes, and the messages lost on the way are counted.

Everyone starts on node 0 (the only node up when they connect; their server lists name
all three). Node 0 is SIGKILLed while a publisher sends sequence-numbered messages at a
steady rate to a room with members on both gateways; then the node the publisher moved
to is SIGKILLed too, leaving one node. NATS is at-most-once: what was in flight on a
dead node, or published before a gateway's subscriptions were back, is lost, and that is
what we count. What must hold: delivery resumes, nothing is duplicated or reordered,
and after a client's first message past a kill, it misses nothing more.

A node that hangs (SIGSTOP: its TCP connections stay open, nothing answers) is the
harder case: only pings can tell, see test_cluster_node_hangs_under_load.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import statistics
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from publisher import Publisher
from shared.errors import TransportError
from tests.faults.faultkit import (
    MonitoredNats,
    NatsCluster,
    ametric,
    astatus,
    node_of,
    wait_until,
)
from tests.helpers import GatewayProcess, RecordingClient, quiet

pytestmark = pytest.mark.integration

RATE_PER_S = 200
MAX_MESSAGES = 6000  # 30 s at the rate: the publishing loop stops by itself
STEADY_S = 1.0
RESUME_TIMEOUT_S = 20.0


@dataclass
class Feed:
    """A client's view of the `m` events: (sequence number, arrival time)."""

    rc: RecordingClient
    name: str
    got: list[tuple[int, float]] = field(default_factory=list)

    def attach(self) -> None:
        async def on_m(data: Any) -> None:
            self.got.append((int(data["i"]), time.monotonic()))

        self.rc.client.on("m", on_m)

    def first_after(self, seq: int) -> tuple[int, float] | None:
        for s, t in self.got:
            if s >= seq:
                return s, t
        return None


@dataclass
class Pacer:
    """Publishes {"i": n} to a room at a steady rate until told to stop (or MAX_MESSAGES)."""

    pub: Publisher
    room: str
    sent_at: list[float] = field(default_factory=list)
    errors: int = 0
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def next_seq(self) -> int:
        return len(self.sent_at)

    async def run(self) -> None:
        start = time.monotonic()
        for i in range(MAX_MESSAGES):
            if self.stop.is_set():
                return
            delay = start + i / RATE_PER_S - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            self.sent_at.append(time.monotonic())
            try:
                await self.pub.sockets.broadcast(self.room, "m", {"i": i})
            except TransportError:
                self.errors += 1  # counted as lost by the receivers anyway


NAMES = ("sailcast-gateway-fa", "sailcast-gateway-fb", "sailcast-publisher")


@dataclass
class Rig:
    nodes: list[MonitoredNats]
    gws: list[GatewayProcess]
    pub: Publisher
    clients: list[RecordingClient]
    feeds: list[Feed]
    pacer: Pacer
    pacing: asyncio.Task[None]


@contextlib.asynccontextmanager
async def cluster_rig(
    gateway_factory: Callable[..., GatewayProcess], prefix: str, client_factory: Any
) -> AsyncIterator[Rig]:
    """Three clustered nodes, everyone connected to node 0, four members of `feed` on two
    gateways, and the pacer publishing to it (for STEADY_S already when this yields)."""
    cluster = NatsCluster()
    nodes = cluster.nodes
    pub: Publisher | None = None
    gws: list[GatewayProcess] = []
    task: asyncio.Task[None] | None = None
    pacer: Pacer | None = None
    try:
        cluster.start(0)
        urls = cluster.urls
        gws = [gateway_factory(gid, nats_url=urls) for gid in ("fa", "fb")]
        pub = await Publisher.connect(urls.split(","), prefix=prefix)
        cluster.start(1, 2)
        await cluster.formed(15)
        assert {node_of(nodes, n) for n in NAMES} == {0}, "everyone starts on node 0"

        clients = [await client_factory(gws[i % 2]) for i in range(4)]
        feeds = [Feed(c, f"{'ab'[i % 2]}{i}") for i, c in enumerate(clients)]
        for f in feeds:
            f.attach()
        await pub.sockets.join([c.sid for c in clients], "feed")
        pacer = Pacer(pub, "feed")
        task = asyncio.create_task(pacer.run())
        await asyncio.sleep(STEADY_S)
        assert all(f.got for f in feeds), "steady delivery before the fault"
        yield Rig(nodes, gws, pub, clients, feeds, pacer, task)
    finally:
        if pacer is not None:
            pacer.stop.set()
        if task is not None:
            with contextlib.suppress(Exception):
                await task
        for n in nodes:  # a stopped (SIGSTOP) node must not hold anyone up
            if n.alive:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(n._proc.pid, signal.SIGCONT)  # type: ignore[union-attr]
        if pub is not None:
            await pub.close()
        for g in gws:  # before NATS goes, so that they drain quickly
            g.stop()
        cluster.close()


async def test_cluster_node_killed_under_load(
    gateway_factory: Callable[..., GatewayProcess], prefix: str, client_factory: Any
) -> None:
    async with cluster_rig(gateway_factory, prefix, client_factory) as rig:
        nodes, gws, pub, clients, feeds, pacer = (
            rig.nodes,
            rig.gws,
            rig.pub,
            rig.clients,
            rig.feeds,
            rig.pacer,
        )
        # phase 1 kills node 0 (both gateways and the publisher on it); phase 2 kills
        # the node the publisher failed over to (and any gateway that went there too)
        phases: list[dict[str, Any]] = []
        for phase in (1, 2):
            victim = 0 if phase == 1 else node_of(nodes, "sailcast-publisher")
            assert victim is not None
            moved = [n for n in NAMES if node_of(nodes, n) == victim]
            kill_seq = pacer.next_seq
            killed_at = time.monotonic()
            nodes[victim].kill()

            def resumed(k: int = kill_seq) -> bool:
                return all(f.first_after(k) is not None for f in feeds)

            await wait_until(resumed, RESUME_TIMEOUT_S, f"delivery after kill {phase}")
            resume_s = {}
            for f in feeds:
                first = f.first_after(kill_seq)
                assert first is not None
                resume_s[f.name] = first[1] - killed_at
            await asyncio.sleep(STEADY_S)
            phases.append(
                {"kill_seq": kill_seq, "resume_s": resume_s, "moved": moved, "victim": victim}
            )
        pacer.stop.set()
        await rig.pacing
        total = pacer.next_seq

        # everyone is on the last node; the gateways are ready there
        last = next(i for i, n in enumerate(nodes) if n.alive)
        assert {node_of(nodes, n) for n in NAMES} == {last}
        for g in gws:
            await wait_until(_readyz_green(g), 15, "readyz green")
            assert g.metric("sailcast_gateway_nats_reconnects_total") >= 1
        await quiet(clients, pub)

        lost_by_phase: list[list[int]] = [[], []]
        k1, k2 = phases[0]["kill_seq"], phases[1]["kill_seq"]
        for f in feeds:
            seqs = [s for s, _t in f.got]
            assert seqs == sorted(set(seqs)), f"{f.name}: duplicated or reordered"
            missing = sorted(set(range(total)) - set(seqs))
            r1, r2 = f.first_after(k1), f.first_after(k2)
            assert r1 is not None
            assert r2 is not None
            # after its first message past a kill, a client misses nothing up to the
            # next kill, and nothing at all after the last one; what it lost before a
            # kill was in flight on the dead node (well under a second of traffic: one
            # published a moment before a kill may die with the node)
            assert not [m for m in missing if m >= r2[0]], f"{f.name}: {missing}"
            assert not [m for m in missing if m < k1 - RATE_PER_S], f"{f.name}: {missing}"
            assert not [m for m in missing if r1[0] <= m < k2 - RATE_PER_S], f"{f.name}: {missing}"
            lost_by_phase[0].append(sum(1 for m in missing if m < r1[0]))
            lost_by_phase[1].append(sum(1 for m in missing if r1[0] <= m < r2[0]))

        parts = []
        for i, ph in enumerate(phases):
            rs = list(ph["resume_s"].values())
            parts.append(
                f"kill {i + 1} (node {ph['victim']}, {len(ph['moved'])} NATS connections on "
                f"it): delivery resumed after median {statistics.median(rs) * 1000:.0f} ms / "
                f"max {max(rs) * 1000:.0f} ms, lost per member max {max(lost_by_phase[i])} "
                f"(= {max(lost_by_phase[i]) * 1000 / RATE_PER_S:.0f} ms of traffic)"
            )
        print(
            f"\nNATS cluster failover (SIGKILL) at {RATE_PER_S} msg/s, {total} messages, "
            "4 members on 2 gateways: " + "; ".join(parts) + f"; publish errors {pacer.errors}"
        )
        assert [await astatus(g, "/healthz") for g in gws] == [200, 200]


HANG_BOUND_S = 20.0


async def test_cluster_node_hangs_under_load(
    gateway_factory: Callable[..., GatewayProcess], prefix: str, client_factory: Any
) -> None:
    """SIGSTOP node 0: its sockets stay open and silent, as when a host or VM freezes or
    a network path blackholes. Gateways and the publisher must leave it within
    HANG_BOUND_S, and delivery must resume."""
    async with cluster_rig(gateway_factory, prefix, client_factory) as rig:
        frozen_seq = rig.pacer.next_seq
        frozen_at = time.monotonic()
        assert rig.nodes[0]._proc is not None
        os.kill(rig.nodes[0]._proc.pid, signal.SIGSTOP)
        red: dict[str, float] = {}
        moved: dict[str, float] = {}
        resumed_s: float | None = None
        while (el := time.monotonic() - frozen_at) < HANG_BOUND_S:
            await asyncio.sleep(0.25)
            for g in rig.gws:
                if g.gateway_id not in red and await astatus(g, "/readyz") != 200:
                    red[g.gateway_id] = el
                if g.gateway_id not in moved and await ametric(
                    g, "sailcast_gateway_nats_reconnects_total"
                ):
                    moved[g.gateway_id] = el
            if "pub" not in moved and rig.pub.stats.reconnects:
                moved["pub"] = el
            if resumed_s is None and all(f.first_after(frozen_seq) for f in rig.feeds):
                resumed_s = max(f.first_after(frozen_seq)[1] for f in rig.feeds) - frozen_at  # type: ignore[index]
            if resumed_s is not None and len(moved) == 3:
                break
        print(
            f"\nNATS node hung (SIGSTOP) at {RATE_PER_S} msg/s: readyz red after "
            f"{', '.join(f'{k} {v:.1f}s' for k, v in red.items()) or 'never'}; left the "
            f"node after {', '.join(f'{k} {v:.1f}s' for k, v in moved.items()) or 'nobody did'}"
            f" (bound {HANG_BOUND_S:.0f}s); delivery resumed "
            + (f"after {resumed_s:.1f}s" if resumed_s is not None else "never")
        )
        assert resumed_s is not None, "delivery did not resume"
        assert len(moved) == 3, f"still on the hung node: {sorted(set(NAMES) - set(moved))}"


def _readyz_green(g: GatewayProcess) -> Callable[[], bool]:
    return lambda: g.http_status("/readyz") == 200
