"""Connection-state recovery on a 3-node JetStream cluster (issue 11, docs/recovery.md
"NATS node loss"): the history stream and the sessions bucket are R3, two gateways
(`--history '*=100/2m' --history-replicas 3`) sit on different nodes, and npm
socket.io-client 4 clients (tests/recovery_harness.py) in a history room are cut off
and come back on the other gateway: after a plain cut, and right after the NATS node
that led the stream and the bucket (and held a gateway's and the worker's connections)
was SIGKILLed, while the worker kept publishing, retrying with `msg_id` whatever
`flush()` reported failed (docs/recovery.md "Idempotent publish").
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

import nats
import orjson
import pytest
from nats.aio.client import Client as NatsClient

from publisher import Publisher
from shared.errors import TransportError
from shared.history import sessions_bucket, stream_name
from tests.faults.faultkit import NatsCluster, wait_until
from tests.helpers import GatewayProcess
from tests.recovery_harness import CutProxy, NodeClient, away, numbers

pytestmark = pytest.mark.integration

HISTORY: Final = {"history": "*=100/2m", "history_replicas": 3}
ROOM: Final = "chat"
SESSION_WRITTEN_S: Final = 0.4
"""Longer than the session store's coalescing (0.1 s) and an R3 KV round trip."""
PACE_S: Final = 0.02
"""Between two of the worker's publishes (~50/s, each flushed before the next)."""
ELECTION_PACE_S: Final = 0.2
"""The same across a node loss: clients away for a whole election (up to ~11 s) miss
at most ~60 messages, fewer than the room keeps (100: more would be history_trimmed)."""
PUBLISH_BUDGET_S: Final = 20.0
"""How long one message may take to be stored, retries included (an election: ~2-5 s)."""
LEADER_TIMEOUT_S: Final = 10.0
RECOVERED_OK: Final = 'sailcast_gateway_recoveries_total{outcome="recovered",reason="ok"}'


@dataclass
class Rig:
    cluster: NatsCluster
    gws: list[GatewayProcess]  # gws[i] is connected to node i
    nc: NatsClient  # the test's own view of JetStream, on every node
    stream: str
    bucket_stream: str


@contextlib.asynccontextmanager
async def history_rig(
    cluster: NatsCluster, gateway_factory: Callable[..., GatewayProcess], prefix: str
) -> AsyncIterator[Rig]:
    """Gateway `ca` on node 0 and `cb` on node 1 (each told of its node only, as behind
    a per-node address: it learns the others from the cluster when it must move)."""
    gws = [gateway_factory(f"c{'ab'[i]}", nats_url=cluster.url(i), **HISTORY) for i in range(2)]
    assert [cluster.node_of(f"sailcast-gateway-c{'ab'[i]}") for i in range(2)] == [0, 1]
    nc = await nats.connect(cluster.urls.split(","), reconnect_time_wait=0.2)
    try:
        yield Rig(cluster, gws, nc, stream_name(prefix), f"KV_{sessions_bucket(prefix)}")
    finally:
        await nc.close()


class Worker:
    """An app worker publishing numbered messages to ROOM, each with its own msg_id, and
    each flushed before the next: a failure `flush()` reports (no PubAck: the node or
    the stream leader was lost) is retried with the same msg_id until it is stored, so
    every message is stored once and in order (the stream drops a duplicate)."""

    def __init__(self, pub: Publisher, *, pace_s: float = PACE_S) -> None:
        self.pub = pub
        self.pace_s = pace_s
        self.sent = 0
        self.retries = 0
        self.stop = asyncio.Event()

    async def publish(self, n: int) -> None:
        deadline = time.monotonic() + PUBLISH_BUDGET_S
        while True:
            try:
                await self.pub.sockets.broadcast(ROOM, "m", {"n": n}, msg_id=f"m-{n}")
                await self.pub.flush()
                self.sent = n + 1
                return
            except TransportError:  # PublishFailed, or a flush that timed out
                self.retries += 1
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)

    async def run(self) -> None:
        """Publish 0, 1, 2, ... every `pace_s` until told to stop."""
        n = self.sent
        while not self.stop.is_set():
            await self.publish(n)
            n += 1
            await asyncio.sleep(self.pace_s)


async def connected_member(
    rig: Rig, pub: Publisher, proxy: CutProxy, node_clients: Callable[..., Awaitable[NodeClient]]
) -> tuple[NodeClient, str]:
    client = await node_clients(proxy.url, "v4")
    first = await client.next("connect")
    assert first["recovered"] is False
    await pub.sockets.join(first["id"], ROOM)
    return client, str(first["id"])


async def all_events(client: NodeClient, n: int) -> list[int]:
    """The numbers the client received once it has `n` events (fails on a timeout)."""
    return numbers(await client.events(n))


def recoveries(gws: list[GatewayProcess]) -> dict[str, dict[str, float]]:
    """Each gateway's recoveries_total samples (a failure says why sessions were fresh)."""
    return {
        g.gateway_id: {k: v for k, v in g.metrics().items() if "recoveries_total{" in k}
        for g in gws
    }


async def stream_info(nc: NatsClient, stream: str) -> dict[str, Any]:
    reply = await nc.request(f"$JS.API.STREAM.INFO.{stream}", b"", timeout=5)
    info: dict[str, Any] = orjson.loads(reply.data)
    assert "error" not in info, info
    return info


async def lead_on(rig: Rig, stream: str, node: int) -> None:
    """Move `stream`'s leadership to `node` (a leader step-down preferring it)."""
    want = f"n{node}"
    request = orjson.dumps({"placement": {"preferred": want}})

    async def moved() -> bool:
        info = await stream_info(rig.nc, stream)
        return bool(info.get("cluster", {}).get("leader") == want)

    deadline = time.monotonic() + LEADER_TIMEOUT_S
    while not await moved():
        assert time.monotonic() < deadline, f"{stream} would not move its leader to {want}"
        with contextlib.suppress(nats.errors.TimeoutError):
            await rig.nc.request(f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}", request, timeout=2)
        await asyncio.sleep(0.5)


# -- 3. R3 -----------------------------------------------------------------------------


async def test_the_stream_and_the_sessions_bucket_are_r3(
    js_cluster: NatsCluster, gateway_factory: Callable[..., GatewayProcess], prefix: str
) -> None:
    async with history_rig(js_cluster, gateway_factory, prefix) as rig:
        for name in (rig.stream, rig.bucket_stream):
            info = await stream_info(rig.nc, name)
            assert info["config"]["num_replicas"] == 3, name
            cluster = info["cluster"]
            peers = {cluster["leader"], *(r["name"] for r in cluster.get("replicas", ()))}
            assert peers == {"n0", "n1", "n2"}, (name, cluster)
            # and every node holds a copy: each one's /jsz lists the stream
            for node in js_cluster.nodes:
                details = node.monitor("/jsz?streams=true")["account_details"]
                held = {d["name"] for a in details for d in a.get("stream_detail") or ()}
                assert name in held, (name, node.server_id())


# -- 1. a cut, and back on the other gateway ----------------------------------------------


async def test_a_cut_client_recovers_on_the_other_gateway(
    js_cluster: NatsCluster,
    gateway_factory: Callable[..., GatewayProcess],
    prefix: str,
    proxies: Callable[[int], Awaitable[CutProxy]],
    node_clients: Callable[..., Awaitable[NodeClient]],
) -> None:
    async with history_rig(js_cluster, gateway_factory, prefix) as rig:
        ca, cb = rig.gws
        pub = await Publisher.connect(js_cluster.url(2), prefix=prefix)  # on the third node
        try:
            assert pub.history_rules, "the worker sees no history rules"
            worker = Worker(pub)
            proxy = await proxies(ca.port)
            client, sid = await connected_member(rig, pub, proxy, node_clients)
            await asyncio.sleep(SESSION_WRITTEN_S)
            await worker.publish(0)
            assert await all_events(client, 1) == [0]

            await away(proxy, client)
            publishing = asyncio.create_task(worker.run())  # while it is away
            await asyncio.sleep(0.5)
            proxy.target = cb.port
            proxy.down = False
            back = await client.next("connect")
            await asyncio.sleep(0.3)  # and on, after it is back
            worker.stop.set()
            await publishing
            assert back == {"step": "connect", "id": sid, "recovered": True}
            total = worker.sent
            assert total > 10
            got = await all_events(client, total)
            await asyncio.sleep(0.3)  # no late duplicate
            assert numbers(client.received()) == got == list(range(total))
            assert (
                cb.metric('sailcast_gateway_recoveries_total{outcome="recovered",reason="ok"}') == 1
            )
        finally:
            await pub.close()


# -- 2. a NATS node SIGKILLed, clients cut right after ---------------------------------------

CLIENTS: Final = 4
EARLY: Final = 2
"""Clients back at once, while the stream and the bucket elect leaders; the others come
back once MISSED messages were stored after the loss."""
MISSED: Final = 5


async def test_clients_recover_right_after_the_leading_node_is_killed(
    js_cluster: NatsCluster,
    gateway_factory: Callable[..., GatewayProcess],
    prefix: str,
    proxies: Callable[[int], Awaitable[CutProxy]],
    node_clients: Callable[..., Awaitable[NodeClient]],
) -> None:
    """Node 0 holds gateway `ca`'s and the worker's connections and leads the stream
    and the sessions bucket. It is SIGKILLed while the worker publishes; at once every
    client is cut off. Two come back on the other gateway at once, while the stream and
    the bucket elect new leaders (and `ca` moves to another node); two once messages
    were stored after the loss. Each is recovered, and has every message once, in
    order."""
    async with history_rig(js_cluster, gateway_factory, prefix) as rig:
        for stream in (rig.stream, rig.bucket_stream):
            await lead_on(rig, stream, 0)
        pub = await Publisher.connect(js_cluster.url(0), prefix=prefix)
        try:
            assert pub.history_rules, "the worker sees no history rules"
            assert js_cluster.node_of("sailcast-publisher") == 0
            worker = Worker(pub, pace_s=ELECTION_PACE_S)
            members: list[tuple[CutProxy, NodeClient, str, GatewayProcess]] = []
            for i in range(CLIENTS):
                home, other = rig.gws[i % 2], rig.gws[1 - i % 2]
                proxy = await proxies(home.port)
                client, sid = await connected_member(rig, pub, proxy, node_clients)
                members.append((proxy, client, sid, other))
            await asyncio.sleep(SESSION_WRITTEN_S)
            publishing = asyncio.create_task(worker.run())
            await wait_until(lambda: worker.sent >= 10, 10, "steady publishing")

            killed_at_seq = worker.sent
            killed_at = time.monotonic()
            js_cluster.nodes[0].kill()
            for proxy, _client, _sid, _other in members:  # cut right after the loss
                proxy.down = True
                proxy.cut()
            for _proxy, client, _sid, _other in members:
                await client.next("disconnect")
            await asyncio.sleep(0.2)
            for proxy, _client, _sid, other in members:
                proxy.target = other.port
            for proxy, _client, _sid, _other in members[:EARLY]:  # during the elections
                proxy.down = False
            early = [await client.next("connect") for _p, client, _s, _o in members[:EARLY]]
            back_after_s = time.monotonic() - killed_at
            # the others stay away until messages were stored after the loss: they are
            # owed those, from the new leaders
            await wait_until(lambda: worker.sent >= killed_at_seq + MISSED, 30, "publishing")
            for proxy, _client, _sid, _other in members[EARLY:]:
                proxy.down = False
            backs = early + [await client.next("connect") for _p, client, _s, _o in members[EARLY:]]
            await asyncio.sleep(1.0)  # publishing goes on after they are back
            worker.stop.set()
            await publishing

            assert backs == [
                {"step": "connect", "id": sid, "recovered": True} for _p, _c, sid, _o in members
            ], recoveries(rig.gws)
            total = worker.sent
            assert total > killed_at_seq
            for _proxy, client, _sid, _other in members:
                got = await all_events(client, total)
                assert got == list(range(total))
            await asyncio.sleep(0.3)  # no late duplicate
            for _proxy, client, _sid, _other in members:
                assert numbers(client.received()) == list(range(total))

            # the loss was real: new leaders elsewhere, the worker moved and retried
            new_leader = js_cluster.leader_of(rig.stream)
            assert new_leader in (1, 2)
            assert js_cluster.node_of("sailcast-publisher") in (1, 2)
            assert js_cluster.node_of("sailcast-gateway-ca") in (1, 2)
            recovered = sum(g.metric(RECOVERED_OK) for g in rig.gws)
            assert recovered == CLIENTS
            replayed = sum(g.metric("sailcast_gateway_replayed_messages_total") for g in rig.gws)
            assert replayed >= (CLIENTS - EARLY) * MISSED
            assert worker.retries > 0, "no publish failed: the stream's leader was not lost"
            print(
                f"\nNATS node loss (SIGKILL of the stream's and the bucket's leader) at "
                f"~{1 / ELECTION_PACE_S:.0f} msg/s: {CLIENTS} clients cut at once and back on the "
                f"other gateway, all recovered ({EARLY} back at once: recovered "
                f"{back_after_s:.1f} s after the kill, across the elections); "
                f"{total} messages, each received once in "
                f"order; the worker retried {worker.retries} publish(es) with its msg_id"
            )
        finally:
            await pub.close()
