"""The cluster topology the scale bench measures gateways on: 3 NATS nodes (routes on
loopback), G gateways (gateway ``i`` connected to node ``i % nodes``), a client pool
(load-generator processes holding raw websocket clients) and a publisher worker
(:mod:`bench.pubworker` on :mod:`publisher`, connected to node 0).

Shared by :mod:`bench.scale.cluster` (part 2) and :mod:`bench.scale.validate` (the
model's validation run) so both measure the same way: :meth:`Topology.window` publishes
at a fixed rate to hot rooms and returns per-process CPU, deliveries counted at the
clients, each gateway's room messages in (from its /metrics) and each node's route
traffic (from /routez), all as deltas over one window. Every process lives in a
:class:`bench.delivery.processes.Processes` or the :class:`ClientPool`, and
:meth:`Topology.close` stops them however the run ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TextIO

import orjson

from bench.delivery.processes import Child, NatsNode, Processes, gateway_argv, http_get
from bench.presence.cluster import gateway_samples, metric_delta, sum_family
from bench.presence.pool import ClientPool
from bench.procstat import cpu_seconds, rss_bytes
from bench.rpc import Worker

NATS_NODES: Final = 3
PING_INTERVAL_S: Final = 25.0
"""The gateway's default Engine.IO ping interval, passed explicitly so the JSON's figure
is the one the gateways ran with."""
JOIN_CONCURRENCY: Final = 256
PROBE_TIMEOUT_S: Final = 3.0
PROBE_TRIES: Final = 5
DRAIN_TIMEOUT_S: Final = 5.0
POLL_S: Final = 0.05
SYS_ACCOUNT: Final = "$SYS"
GATEWAY_METRIC_WORDS: Final = ("broker_messages_received_total", "deliveries_total")
ROOM_KINDS: Final = ("room", "multi_room", "blast")


def spread(members: int, parts: int) -> list[int]:
    """``members`` split as evenly as possible over ``parts`` (the first get one more)."""
    base, extra = divmod(members, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


@dataclass(frozen=True, kw_only=True)
class RouteTotals:
    """One node's route counters towards one remote node (pooled routes summed, the
    system account's own route left out: it carries the servers' chatter, not ours)."""

    in_msgs: int = 0
    out_msgs: int = 0
    in_bytes: int = 0
    out_bytes: int = 0

    def minus(self, other: RouteTotals) -> RouteTotals:
        return RouteTotals(
            in_msgs=self.in_msgs - other.in_msgs,
            out_msgs=self.out_msgs - other.out_msgs,
            in_bytes=self.in_bytes - other.in_bytes,
            out_bytes=self.out_bytes - other.out_bytes,
        )


def route_totals(routez: Mapping[str, Any]) -> dict[str, RouteTotals]:
    """Remote node name -> counters summed over that pair's route connections."""
    out: dict[str, RouteTotals] = {}
    for r in routez.get("routes", []):
        if r.get("account") == SYS_ACCOUNT:
            continue
        name = str(r.get("remote_name") or r.get("remote_id"))
        t = out.get(name, RouteTotals())
        out[name] = RouteTotals(
            in_msgs=t.in_msgs + int(r.get("in_msgs", 0)),
            out_msgs=t.out_msgs + int(r.get("out_msgs", 0)),
            in_bytes=t.in_bytes + int(r.get("in_bytes", 0)),
            out_bytes=t.out_bytes + int(r.get("out_bytes", 0)),
        )
    return out


@dataclass(kw_only=True)
class Snapshot:
    """Counters of every process at one instant; two make a window."""

    t: float
    gateway_cpu_s: list[float]
    nats_cpu_s: list[float]
    publisher_cpu_s: float
    clients_cpu_s: float
    routes: list[dict[str, RouteTotals]]
    gateway_metrics: list[dict[str, float]]


@dataclass(kw_only=True)
class Window:
    """What happened between two snapshots (see :meth:`Topology.window`)."""

    seconds: float
    sent: int
    publish_elapsed_s: float
    expected_deliveries: int
    delivered: int
    other_events: int
    gateway_cpu_cores: list[float]
    nats_cpu_cores: list[float]
    publisher_cpu_cores: float
    clients_cpu_cores: float
    gateway_room_messages_in: list[int]
    gateway_deliveries: list[int]
    routes: list[dict[str, RouteTotals]]
    """Per node: remote node name -> counter deltas."""

    @property
    def lost(self) -> int:
        return self.expected_deliveries - self.delivered

    @property
    def route_out_msgs(self) -> int:
        return sum(t.out_msgs for node in self.routes for t in node.values())

    @property
    def route_out_bytes(self) -> int:
        return sum(t.out_bytes for node in self.routes for t in node.values())

    def route_flows(self, names: Sequence[str]) -> dict[str, float]:
        """``"nats0->nats1"`` -> route messages/s sent that way in the window."""
        out: dict[str, float] = {}
        for i, node in enumerate(self.routes):
            for remote, t in sorted(node.items()):
                out[f"{names[i]}->{remote}"] = t.out_msgs / self.seconds
        return out


@dataclass(kw_only=True)
class Topology:
    """NATS nodes, gateways, clients and the publisher of one measurement."""

    log: TextIO
    client_workers: int = 2
    nats_nodes: int = NATS_NODES
    prefix: str = field(default_factory=lambda: f"scl{secrets.token_hex(3)}")
    procs: Processes = field(init=False)
    pool: ClientPool = field(init=False)
    nats: list[NatsNode] = field(default_factory=list)
    gateways: list[Child] = field(default_factory=list)
    publisher: Worker | None = None
    gateway_of: dict[int, int] = field(default_factory=dict)
    """Client index -> the gateway it is connected to."""
    _admin: Any = None
    """The harness's own Publisher (joins and leaves; not measured)."""

    def __post_init__(self) -> None:
        self.procs = Processes(self.log)
        self.pool = ClientPool(self.log, workers=self.client_workers)

    # -- start / stop ----------------------------------------------------------------
    async def start(self, gateways: int) -> None:
        """NATS nodes, ``gateways`` gateways, the client processes and the publisher."""
        from publisher import Publisher

        self.nats = await self.procs.nats_cluster(self.nats_nodes)
        await self.add_gateways(gateways)
        await self.pool.start()
        self.publisher = await Worker.spawn("bench.pubworker", name="publisher", log=self.log)
        spec = {
            "factory": "bench.systems.sailcast:open_publisher",
            "kwargs": {"servers": self.nats[0].url, "prefix": self.prefix},
        }
        await self.publisher.call("open", spec=spec)
        self._admin = await Publisher.connect(self.nats[0].url, prefix=self.prefix)

    def argv_of(self, index: int) -> list[str]:
        node = self.nats[index % len(self.nats)]
        return gateway_argv(
            node.url, self.prefix, f"scale-{index}", "--ping-interval-s", str(PING_INTERVAL_S)
        )

    async def add_gateways(self, count: int) -> None:
        """Start gateways until there are ``count`` (in parallel: each boots in ~1 s)."""
        first = len(self.gateways)
        started = await asyncio.gather(
            *(self.procs.spawn(f"gateway{i}", self.argv_of(i)) for i in range(first, count))
        )
        self.gateways.extend(started)

    async def close(self) -> None:
        if self._admin is not None:
            with contextlib.suppress(Exception):
                await self._admin.close()
            self._admin = None
        if self.publisher is not None:
            with contextlib.suppress(Exception):
                await self.publisher.call("close", timeout_s=10)
            await self.publisher.close()
            self.publisher = None
        await self.pool.close()
        await self.procs.close()

    # -- clients and rooms -----------------------------------------------------------
    def url(self, gateway: int) -> str:
        return f"http://127.0.0.1:{self.gateways[gateway].port}"

    def node_of(self, gateway: int) -> int:
        return gateway % len(self.nats)

    async def connect(self, gateway: int, count: int) -> list[int]:
        """``count`` new clients on ``gateway``; their indices."""
        first = len(self.gateway_of)
        indices = list(range(first, first + count))
        await self.pool.connect([self.url(gateway)], indices, lambda _i: "")
        for i in indices:
            self.gateway_of[i] = gateway
        return indices

    async def join(self, rooms: Mapping[str, Sequence[int]]) -> float:
        """Put each room's client indices in it (every join in effect when this returns);
        seconds taken."""
        started = time.perf_counter()
        gate = asyncio.Semaphore(JOIN_CONCURRENCY)
        sids = self.pool.sids

        async def one(room: str, sid: str) -> None:
            async with gate:
                await self._admin.sockets.join(sid, room)

        await asyncio.gather(
            *(one(room, sids[i]) for room, members in rooms.items() for i in members)
        )
        return time.perf_counter() - started

    async def leave(self, rooms: Sequence[str]) -> None:
        """Every member of these rooms leaves all its rooms (one request per room)."""
        gate = asyncio.Semaphore(JOIN_CONCURRENCY)

        async def one(room: str) -> None:
            async with gate:
                await self._admin.sockets.leave_all(room)

        await asyncio.gather(*(one(r) for r in rooms))

    async def delivered(self) -> tuple[int, int]:
        """(room messages, any other events) the clients received since the last reset."""
        stats = await self.pool.stats()
        return int(stats["bench"]), int(stats["other"]) + sum(stats["received"].values())

    async def _await_deliveries(self, expected: int, timeout_s: float) -> int:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            got, _ = await self.delivered()
            if got >= expected or loop.time() > deadline:
                return got
            await asyncio.sleep(POLL_S)

    async def ready(self, hot: Mapping[str, Sequence[int]]) -> None:
        """Until one probe per hot room reaches every member: a join is in effect on its
        gateway when acked, but the gateway's new interest still has to reach the
        publisher's node over a route."""
        expected = sum(len(m) for m in hot.values())
        assert self.publisher is not None
        for _ in range(PROBE_TRIES):
            await self.pool.reset()
            await self.publisher.call("probe", rooms=list(hot), k=-1)
            if await self._await_deliveries(expected, PROBE_TIMEOUT_S) == expected:
                await self.pool.reset()
                return
        raise RuntimeError(f"probes did not reach all {expected} members of the hot rooms")

    # -- measuring -------------------------------------------------------------------
    async def _routez(self, node: NatsNode) -> dict[str, RouteTotals]:
        status, body = await http_get(f"http://127.0.0.1:{node.monitor_port}/routez?subs=0")
        if status != 200:
            raise RuntimeError(f"{node.name} /routez answered {status}")
        return route_totals(orjson.loads(body))

    async def snapshot(self) -> Snapshot:
        routes = await asyncio.gather(*(self._routez(n) for n in self.nats))
        metrics = await asyncio.gather(
            *(gateway_samples(g, GATEWAY_METRIC_WORDS) for g in self.gateways)
        )
        assert self.publisher is not None
        return Snapshot(
            t=time.monotonic(),
            gateway_cpu_s=[cpu_seconds(g.pid) for g in self.gateways],
            nats_cpu_s=[cpu_seconds(n.child.pid) for n in self.nats],
            publisher_cpu_s=cpu_seconds(self.publisher.pid),
            clients_cpu_s=self.pool.cpu_s(),
            routes=list(routes),
            gateway_metrics=list(metrics),
        )

    def gateway_rss(self) -> list[int]:
        return [rss_bytes(g.pid) for g in self.gateways]

    def nats_rss(self) -> list[int]:
        return [rss_bytes(n.child.pid) for n in self.nats]

    async def window(
        self,
        hot: Mapping[str, Sequence[int]],
        *,
        rate: float,
        duration_s: float,
        k: int = 0,
    ) -> Window:
        """Publish ``rate`` msg/s round-robin over the hot rooms for ``duration_s``, wait
        for every delivery (up to a bound), and return the deltas over the whole window."""
        assert self.publisher is not None
        rooms = list(hot)
        await self.pool.reset()
        before = await self.snapshot()
        reply = await self.publisher.call(
            "run", timeout_s=duration_s + 60, k=k, rooms=rooms, rate=rate, duration_s=duration_s
        )
        sent = int(reply["sent"])
        # round-robin: message n goes to rooms[n % len(rooms)]
        per_room = [len(hot[r]) for r in rooms]
        expected = sum(per_room[n % len(rooms)] for n in range(sent))
        await self._await_deliveries(expected, DRAIN_TIMEOUT_S)
        after = await self.snapshot()
        delivered, other = await self.delivered()
        return self._window(
            before, after, sent, float(reply["elapsed_s"]), expected, delivered, other
        )

    async def idle(self, seconds: float) -> Window:
        """The same deltas over a window where nothing is published (the baseline)."""
        await self.pool.reset()
        before = await self.snapshot()
        await asyncio.sleep(seconds)
        after = await self.snapshot()
        delivered, other = await self.delivered()
        return self._window(before, after, 0, 0.0, 0, delivered, other)

    def _window(
        self,
        before: Snapshot,
        after: Snapshot,
        sent: int,
        publish_elapsed_s: float,
        expected: int,
        delivered: int,
        other: int,
    ) -> Window:
        seconds = after.t - before.t

        def cores(a: float, b: float) -> float:
            return (b - a) / seconds

        messages_in: list[int] = []
        deliveries: list[int] = []
        for m0, m1 in zip(before.gateway_metrics, after.gateway_metrics, strict=True):
            d = metric_delta(m0, m1)
            fam = "sailcast_gateway_broker_messages_received_total"
            messages_in.append(
                round(sum(d.get(f'{fam}{{kind="{kind}"}}', 0.0) for kind in ROOM_KINDS))
            )
            deliveries.append(round(sum_family(d, "sailcast_gateway_deliveries_total")))
        routes = [
            {name: t.minus(r0.get(name, RouteTotals())) for name, t in r1.items()}
            for r0, r1 in zip(before.routes, after.routes, strict=True)
        ]
        return Window(
            seconds=seconds,
            sent=sent,
            publish_elapsed_s=publish_elapsed_s,
            expected_deliveries=expected,
            delivered=delivered,
            other_events=other,
            gateway_cpu_cores=[
                cores(a, b) for a, b in zip(before.gateway_cpu_s, after.gateway_cpu_s, strict=True)
            ],
            nats_cpu_cores=[
                cores(a, b) for a, b in zip(before.nats_cpu_s, after.nats_cpu_s, strict=True)
            ],
            publisher_cpu_cores=cores(before.publisher_cpu_s, after.publisher_cpu_s),
            clients_cpu_cores=cores(before.clients_cpu_s, after.clients_cpu_s),
            gateway_room_messages_in=messages_in,
            gateway_deliveries=deliveries,
            routes=routes,
        )

    @property
    def node_names(self) -> list[str]:
        return [n.name for n in self.nats]


def fmt_cores(values: Sequence[float]) -> str:
    return "/".join(f"{v:.3f}" for v in values)


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan
