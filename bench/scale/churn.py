"""Issue 14 part 3: interest churn on a 3-node NATS cluster with one gateway.

What an operator pays when interest changes rather than when messages flow:

1. **Joins and leaves of fresh rooms.** Every join puts a socket in a room no one on the
   gateway is in, so the gateway SUBscribes the room's subject (and writes the room's
   directory entry, an R3 JetStream write in a cluster); every leave empties the room
   and, with ``--unsubscribe-linger-s 0``, UNSUBscribes it at once. A worker
   (:class:`publisher.Publisher`, on another NATS node than the gateway so interest and
   replies cross a route) drives ``sockets.join`` / ``sockets.leave`` closed-loop with
   bounded concurrency for a fixed time. A join's reply is published after its SUB, so
   right after it the worker broadcasts one timed probe to the room and then leaves;
   the probe must reach the socket (one per join, counted by the client processes):
   "join latency" is from the join call to the probe's arrival at the socket, i.e. until
   the subscription is effective across the cluster. After each step the NATS nodes'
   subscription counts must come back to where they were (every leave unsubscribed).
2. **Connects.** Client processes (:class:`bench.presence.pool.ClientPool`) open
   websockets as fast as the gateway accepts them with bounded concurrency; each
   connect subscribes the socket's own subject.
3. **Held subscriptions.** Sockets each in many rooms hold ``rooms`` room
   subscriptions; the growth of NATS RSS (summed over the nodes, which all learn the
   interest over routes; the directory entries are in it too) and of the gateway's RSS
   per room.

CPU is per process from /proc over each measured window (:mod:`bench.procstat`). One
"join_leave" is one join plus one leave: one SUB and one UNSUB.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import resource
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, TextIO

import orjson

from bench import harness, hist
from bench.delivery.processes import Child, NatsNode, Processes, gateway_argv, http_get
from bench.presence.cluster import gateway_samples
from bench.presence.pool import ClientPool
from bench.procstat import cpu_seconds, raise_nofile_limit, rss_bytes
from bench.pubworker import EVENT
from bench.rpc import run as run_loop
from publisher import Publisher

NATS_NODES: Final = 3
GATEWAY_NATS_NODE: Final = 0
PUBLISHER_NATS_NODE: Final = 1
"""The worker is on another node than the gateway: joins, replies, probes and interest
all cross a route, as in a cluster where workers and gateways are spread."""
PING_INTERVAL_S: Final = 25.0
SETTLE_TIMEOUT_S: Final = 15.0
SETTLE_POLL_S: Final = 0.25
TEARDOWN_TIMEOUT_S: Final = 120.0
"""Held rooms left at once (sockets closed) unsubscribe and purge their entries."""
SUBS_PER_CONNECT: Final = 2
"""A socket's own subject (requests to it) and its own-id room."""
GATEWAY_SUBS_METRIC: Final = "sailcast_gateway_broker_subscriptions"
PROBE_WAIT_S: Final = 5.0
RSS_SETTLE_S: Final = 2.0
CLIENT_PROCS: Final = 2
HOLD_MEMBERS_PER_ROOM: Final = 2
JOIN_BATCH_ROOMS: Final = 100
"""Rooms per join request while filling the held rooms (one control request each)."""


@dataclass(frozen=True, kw_only=True)
class Sizes:
    concurrency: tuple[int, ...]
    """Join/leave steps: in-flight join-probe-leave cycles (one socket each)."""
    join_seconds: float
    connects: int
    hold_rooms: int
    hold_sockets: int


DEFAULT: Final = Sizes(
    concurrency=(4, 32), join_seconds=20.0, connects=8000, hold_rooms=20000, hold_sockets=100
)
QUICK: Final = Sizes(
    concurrency=(2, 8), join_seconds=3.0, connects=400, hold_rooms=1000, hold_sockets=10
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("churn (issue 14 part 3)")
    g.add_argument(
        "--churn-concurrency",
        type=lambda s: tuple(int(x) for x in s.split(",")),
        default=None,
        help="in-flight join/leave cycles per step, comma-separated "
        f"(default {','.join(map(str, DEFAULT.concurrency))}; quick "
        f"{','.join(map(str, QUICK.concurrency))})",
    )
    g.add_argument("--churn-join-seconds", type=float, default=None, help="length of a step")
    g.add_argument("--churn-connects", type=int, default=None, help="sockets opened (part 2)")
    g.add_argument("--churn-hold-rooms", type=int, default=None, help="rooms held (part 3)")
    g.add_argument("--churn-hold-sockets", type=int, default=None, help="sockets holding them")
    g.add_argument(
        "--churn-replicas",
        type=int,
        default=NATS_NODES,
        help="--history-replicas of the gateway (its room directory's replicas)",
    )


def sizes_of(args: argparse.Namespace) -> Sizes:
    base = QUICK if getattr(args, "quick", False) else DEFAULT
    return Sizes(
        concurrency=args.churn_concurrency or base.concurrency,
        join_seconds=args.churn_join_seconds or base.join_seconds,
        connects=args.churn_connects or base.connects,
        hold_rooms=args.churn_hold_rooms or base.hold_rooms,
        hold_sockets=args.churn_hold_sockets or base.hold_sockets,
    )


def progress(log: TextIO, msg: str) -> None:
    """On the terminal and in the log, between the children's lines it explains."""
    harness.progress(f"churn: {msg}")
    log.write(f"churn: {msg}\n")


def churn_gateway_argv(nats_url: str, prefix: str, replicas: int, max_rooms: int) -> list[str]:
    """Rooms unsubscribed the moment they empty, so every leave is an UNSUB."""
    return gateway_argv(
        nats_url, prefix, "churn-0",
        "--unsubscribe-linger-s", "0",
        "--max-rooms-per-socket", str(max_rooms),
        "--history-replicas", str(replicas),
        "--ping-interval-s", str(PING_INTERVAL_S),
    )  # fmt: skip


async def varz(node: NatsNode) -> dict[str, Any]:
    status, body = await http_get(f"http://127.0.0.1:{node.monitor_port}/varz")
    if status != 200:
        raise RuntimeError(f"{node.name}: /varz answered {status}")
    out: dict[str, Any] = orjson.loads(body)
    return out


async def subscriptions(nodes: Sequence[NatsNode]) -> list[int]:
    return [int((await varz(n))["subscriptions"]) for n in nodes]


async def gateway_subscriptions(gateway: Child) -> int:
    """The gateway's own count of the NATS subscriptions it holds (its metrics)."""
    samples = await gateway_samples(gateway, (GATEWAY_SUBS_METRIC,))
    if GATEWAY_SUBS_METRIC not in samples:
        raise RuntimeError(f"gateway metrics: no {GATEWAY_SUBS_METRIC}")
    return int(samples[GATEWAY_SUBS_METRIC])


async def settle(
    nodes: Sequence[NatsNode],
    gateway: Child,
    want_gateway: int,
    *,
    timeout_s: float = SETTLE_TIMEOUT_S,
) -> tuple[list[int], int]:
    """Poll until the gateway holds ``want_gateway`` subscriptions and every NATS node
    counts the same, unchanged since the last poll (interest reaches the other nodes
    over routes, later), or the timeout: returns (NATS counts, gateway count)."""
    deadline = time.monotonic() + timeout_s
    last: list[int] = []
    while True:
        now, gw = await subscriptions(nodes), await gateway_subscriptions(gateway)
        stable = gw == want_gateway and len(set(now)) == 1 and now == last
        if stable or time.monotonic() > deadline:
            return now, gw
        last = now
        await asyncio.sleep(SETTLE_POLL_S)


class Meter:
    """CPU seconds of the gateway and of each NATS node over one window."""

    def __init__(self, gateway: Child, nodes: Sequence[NatsNode]) -> None:
        self.pids = [gateway.pid] + [n.child.pid for n in nodes]
        self.t0 = time.perf_counter()
        self.cpu0 = [cpu_seconds(p) for p in self.pids]
        self.own0 = time.process_time()

    def stop(self) -> dict[str, Any]:
        wall = time.perf_counter() - self.t0
        cpu = [cpu_seconds(p) - c for p, c in zip(self.pids, self.cpu0, strict=True)]
        return {
            "window_s": wall,
            "gateway_cpu_s": cpu[0],
            "nats_cpu_s": cpu[1:],
            "worker_cpu_s": time.process_time() - self.own0,
        }


async def join_step(
    pub: Publisher,
    pool: ClientPool,
    sids: Sequence[str],
    nodes: Sequence[NatsNode],
    gateway: Child,
    *,
    k: int,
    concurrency: int,
    seconds: float,
) -> dict[str, Any]:
    """Closed loop: ``concurrency`` lanes, each with its own socket, repeat join a fresh
    room → broadcast a timed probe to it → leave, for ``seconds``."""
    subs0, gw0 = await settle(nodes, gateway, await gateway_subscriptions(gateway))
    ack_ns: list[int] = []
    leave_ns: list[int] = []
    errors: list[str] = []
    failed = 0
    done = 0
    stop_at = time.perf_counter() + seconds

    async def lane(j: int) -> None:
        nonlocal failed, done
        sid = sids[j]
        n = 0
        while time.perf_counter() < stop_at:
            room = f"ch{k}-{j}-{n}"
            n += 1
            t0 = time.time_ns()
            try:
                await pub.sockets.join(sid, room)
                t1 = time.time_ns()
                await pub.sockets.broadcast(room, EVENT, {"t": t0, "k": k, "s": n})
                await pub.sockets.leave(sid, room)
            except Exception as exc:
                failed += 1
                if len(errors) < 5:
                    errors.append(f"{type(exc).__name__}: {exc}")
                continue
            ack_ns.append(t1 - t0)
            leave_ns.append(time.time_ns() - t1)
            done += 1

    meter = Meter(gateway, nodes)
    await asyncio.gather(*(lane(j) for j in range(concurrency)))
    cost = meter.stop()
    # Probes published just before the last leaves may still be on their way.
    deadline = time.monotonic() + PROBE_WAIT_S
    got = await pool.collect(k)
    received, merged = got["n"], dict(got["hist"])
    while received < done and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        more = await pool.collect(k)
        received += more["n"]
        merged = hist.merge([merged, more["hist"]])
    subs1, gw1 = await settle(nodes, gateway, gw0)
    missing = max(done - received, 0)
    window = cost["window_s"]
    nats_cpu = sum(cost["nats_cpu_s"])
    return {
        "concurrency": concurrency,
        "join_leaves": done,
        "failed": failed,
        "errors": errors,
        "window_s": window,
        "joins_leaves_per_s": done / window,
        "probes_received": received,
        "probes_missing": missing,
        "join_p50_ms": hist.quantile_ms(merged, 0.50, missing=missing),
        "join_p99_ms": hist.quantile_ms(merged, 0.99, missing=missing),
        "join_ack_p50_ms": hist.quantile_ms(hist.histogram(ack_ns), 0.50),
        "join_ack_p99_ms": hist.quantile_ms(hist.histogram(ack_ns), 0.99),
        "leave_ack_p99_ms": hist.quantile_ms(hist.histogram(leave_ns), 0.99),
        "gateway_cpu_cores": cost["gateway_cpu_s"] / window,
        "nats_cpu_cores": [c / window for c in cost["nats_cpu_s"]],
        "worker_cpu_cores": cost["worker_cpu_s"] / window,
        "gateway_cpu_us_per_join_leave": cost["gateway_cpu_s"] / done * 1e6 if done else None,
        "nats_cpu_us_per_join_leave": nats_cpu / done * 1e6 if done else None,
        "nats_cpu_us_per_join_leave_by_node": [
            c / done * 1e6 if done else None for c in cost["nats_cpu_s"]
        ],
        "subscriptions_before": subs0,
        "subscriptions_after": subs1,
        "nats_residual_subscriptions": [b - a for a, b in zip(subs0, subs1, strict=True)],
        "gateway_residual_subscriptions": gw1 - gw0,
    }


async def connect_step(
    pool: ClientPool, url: str, nodes: Sequence[NatsNode], gateway: Child, *, n: int, base: int
) -> dict[str, Any]:
    """Open ``n`` sockets (indices ``base``..) as fast as the gateway takes them; each
    subscribes its own subject. Closed again afterwards."""
    subs0, gw0 = await settle(nodes, gateway, await gateway_subscriptions(gateway))
    meter = Meter(gateway, nodes)
    got = await pool.connect([url], range(base, base + n), lambda _i: "")
    cost = meter.stop()
    subs1, gw1 = await settle(nodes, gateway, gw0 + SUBS_PER_CONNECT * n)
    await pool.close_all()
    await settle(nodes, gateway, gw0, timeout_s=TEARDOWN_TIMEOUT_S)
    window = cost["window_s"]
    nats_cpu = sum(cost["nats_cpu_s"])
    return {
        "connects": got["connected"],
        "window_s": window,
        "clients_seconds": got["seconds"],
        "connects_per_s": n / window,
        "gateway_cpu_cores": cost["gateway_cpu_s"] / window,
        "nats_cpu_cores": [c / window for c in cost["nats_cpu_s"]],
        "gateway_cpu_us_per_connect": cost["gateway_cpu_s"] / n * 1e6,
        "nats_cpu_us_per_connect": nats_cpu / n * 1e6,
        "nats_cpu_us_per_connect_by_node": [c / n * 1e6 for c in cost["nats_cpu_s"]],
        "nats_subscriptions_added": [b - a for a, b in zip(subs0, subs1, strict=True)],
        "gateway_subscriptions_added": gw1 - gw0,
    }


async def settled_rss(pids: Sequence[int]) -> list[int]:
    """RSS after a pause (Go's and Python's allocators settle after a burst)."""
    await asyncio.sleep(RSS_SETTLE_S)
    return [rss_bytes(p) for p in pids]


async def hold_step(
    pub: Publisher,
    pool: ClientPool,
    url: str,
    nodes: Sequence[NatsNode],
    gateway: Child,
    *,
    rooms: int,
    sockets: int,
) -> dict[str, Any]:
    """``rooms`` rooms of HOLD_MEMBERS_PER_ROOM sockets each (room r: sockets r and r+1
    mod ``sockets``), held open: RSS growth per room subscription."""
    await pool.connect([url], range(sockets), lambda _i: "")
    sids = [pool.sids[i] for i in range(sockets)]
    pids = [gateway.pid] + [n.child.pid for n in nodes]
    subs0, gw0 = await settle(nodes, gateway, await gateway_subscriptions(gateway))
    rss0 = await settled_rss(pids)
    per_socket: list[list[str]] = [[] for _ in range(sockets)]
    for r in range(rooms):
        for m in range(HOLD_MEMBERS_PER_ROOM):
            per_socket[(r + m) % sockets].append(f"held-{r}")
    started = time.perf_counter()
    gate = asyncio.Semaphore(16)

    async def fill(i: int) -> None:
        names = per_socket[i]
        for at in range(0, len(names), JOIN_BATCH_ROOMS):
            async with gate:
                await pub.sockets.join(sids[i], names[at : at + JOIN_BATCH_ROOMS])

    await asyncio.gather(*(fill(i) for i in range(sockets)))
    fill_s = time.perf_counter() - started
    subs1, gw1 = await settle(nodes, gateway, gw0 + rooms, timeout_s=TEARDOWN_TIMEOUT_S)
    rss1 = await settled_rss(pids)
    await pool.close_all()
    base_subs = gw0 - SUBS_PER_CONNECT * sockets
    await settle(nodes, gateway, base_subs, timeout_s=TEARDOWN_TIMEOUT_S)
    nats_growth = sum(rss1[1:]) - sum(rss0[1:])
    return {
        "rooms": rooms,
        "sockets": sockets,
        "members_per_room": HOLD_MEMBERS_PER_ROOM,
        "rooms_per_socket": max(len(p) for p in per_socket),
        "fill_s": fill_s,
        "nats_subscriptions_added": [b - a for a, b in zip(subs0, subs1, strict=True)],
        "gateway_subscriptions_added": gw1 - gw0,
        "gateway_rss_before_bytes": rss0[0],
        "gateway_rss_after_bytes": rss1[0],
        "nats_rss_before_bytes": rss0[1:],
        "nats_rss_after_bytes": rss1[1:],
        "nats_bytes_per_subscription": nats_growth / rooms,
        "nats_bytes_per_subscription_by_node": [
            (b - a) / rooms for a, b in zip(rss0[1:], rss1[1:], strict=True)
        ],
        "gateway_bytes_per_room": (rss1[0] - rss0[0]) / rooms,
    }


async def run(args: argparse.Namespace, log: TextIO) -> dict[str, Any]:
    sizes = sizes_of(args)
    raise_nofile_limit()
    nofile_hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    max_rooms = max(1000, HOLD_MEMBERS_PER_ROOM * sizes.hold_rooms // sizes.hold_sockets + 10)
    prefix = f"chn{int(time.time() * 1000) % 1_000_000}"
    procs = Processes(log)
    pool = ClientPool(log, workers=CLIENT_PROCS)
    pub: Publisher | None = None
    try:
        nodes = await procs.nats_cluster(NATS_NODES)
        gateway = await procs.spawn(
            "gateway",
            churn_gateway_argv(
                nodes[GATEWAY_NATS_NODE].url, prefix, args.churn_replicas, max_rooms
            ),
        )
        url = f"http://127.0.0.1:{gateway.port}"
        pub = await Publisher.connect(nodes[PUBLISHER_NATS_NODE].url, prefix=prefix)
        await pool.start()
        # Memory first, on processes that have not churned yet (freed memory that the
        # allocators keep would absorb the growth being measured).
        progress(log, f"holding {sizes.hold_rooms} rooms on {sizes.hold_sockets} sockets")
        hold = await hold_step(
            pub, pool, url, nodes, gateway, rooms=sizes.hold_rooms, sockets=sizes.hold_sockets
        )
        progress(
            log,
            f"NATS {hold['nats_bytes_per_subscription']:.0f} B/subscription, "
            f"gateway {hold['gateway_bytes_per_room']:.0f} B/room",
        )

        lanes = max(sizes.concurrency)
        base = sizes.hold_sockets
        idle_subs = await gateway_subscriptions(gateway)
        await pool.connect([url], range(base, base + lanes), lambda _i: "")
        sids = [pool.sids[base + i] for i in range(lanes)]
        # A short warm-up (caches, lazily made inboxes) outside any window.
        await join_step(pub, pool, sids, nodes, gateway, k=0, concurrency=lanes, seconds=1.0)
        steps = []
        for k, c in enumerate(sizes.concurrency, start=1):
            step = await join_step(
                pub, pool, sids, nodes, gateway, k=k, concurrency=c, seconds=sizes.join_seconds
            )
            progress(
                log,
                f"{c} in flight: {step['joins_leaves_per_s']:.0f} join+leave/s, "
                f"join p99 {step['join_p99_ms']:.1f} ms",
            )
            steps.append(step)
        await pool.close_all()
        # the lanes' own subscriptions gone before the connect step counts its own
        await settle(nodes, gateway, idle_subs, timeout_s=TEARDOWN_TIMEOUT_S)

        progress(log, f"connects: {sizes.connects}")
        connect = await connect_step(pool, url, nodes, gateway, n=sizes.connects, base=base + lanes)
        progress(log, f"{connect['connects_per_s']:.0f} connects/s")
    finally:
        if pub is not None:
            with contextlib.suppress(Exception):
                await pub.close()
        await pool.close()
        await procs.close()
        gc.collect()

    best = max(steps, key=lambda s: s["joins_leaves_per_s"])
    return {
        "nofile_hard": nofile_hard,
        "ping_interval_s": PING_INTERVAL_S,
        "nats_nodes": NATS_NODES,
        "gateways": 1,
        "directory_replicas": args.churn_replicas,
        "unsubscribe_linger_s": 0.0,
        "sizes": {
            "concurrency": list(sizes.concurrency),
            "join_seconds": sizes.join_seconds,
            "connects": sizes.connects,
            "hold_rooms": sizes.hold_rooms,
            "hold_sockets": sizes.hold_sockets,
            "quick": bool(getattr(args, "quick", False)),
        },
        "joins_leaves_per_s": best["joins_leaves_per_s"],
        "join_p99_ms": best["join_p99_ms"],
        "gateway_cpu_us_per_join_leave": best["gateway_cpu_us_per_join_leave"],
        "nats_cpu_us_per_join_leave": best["nats_cpu_us_per_join_leave"],
        "join_steps": steps,
        "connects_per_s": connect["connects_per_s"],
        "gateway_cpu_us_per_connect": connect["gateway_cpu_us_per_connect"],
        "nats_cpu_us_per_connect": connect["nats_cpu_us_per_connect"],
        "connect": connect,
        "nats_bytes_per_subscription": hold["nats_bytes_per_subscription"],
        "gateway_bytes_per_room": hold["gateway_bytes_per_room"],
        "hold": hold,
    }


def _f(x: float | None, fmt: str = ".0f") -> str:
    return "-" if x is None else format(x, fmt)


def table(section: dict[str, Any]) -> str:
    lines = [
        f"Interest churn: {section['nats_nodes']} NATS nodes, 1 gateway, fresh room per join, "
        f"linger 0 s, directory R{section['directory_replicas']}",
        f"{'in flight':>9} {'join+leave/s':>12} {'join p50 ms':>11} {'join p99 ms':>11} "
        f"{'ack p99 ms':>10} {'gw µs/jl':>9} {'NATS µs/jl':>10} {'per node':>16} {'missing':>7}",
    ]
    for s in section["join_steps"]:
        by_node = "/".join(_f(x) for x in s["nats_cpu_us_per_join_leave_by_node"])
        lines.append(
            f"{s['concurrency']:>9} {s['joins_leaves_per_s']:>12.0f} {s['join_p50_ms']:>11.2f} "
            f"{s['join_p99_ms']:>11.2f} {s['join_ack_p99_ms']:>10.2f} "
            f"{_f(s['gateway_cpu_us_per_join_leave']):>9} "
            f"{_f(s['nats_cpu_us_per_join_leave']):>10} {by_node:>16} {s['probes_missing']:>7}"
        )
    c = section["connect"]
    by_node = "/".join(_f(x) for x in c["nats_cpu_us_per_connect_by_node"])
    lines += [
        "",
        f"Connects: {c['connects']} sockets, {c['connects_per_s']:.0f}/s, gateway "
        f"{c['gateway_cpu_us_per_connect']:.0f} µs/connect, NATS "
        f"{c['nats_cpu_us_per_connect']:.0f} µs/connect ({by_node} by node)",
    ]
    h = section["hold"]
    by_node = "/".join(_f(x) for x in h["nats_bytes_per_subscription_by_node"])
    lines += [
        f"Held: {h['rooms']} rooms ({h['sockets']} sockets, {h['rooms_per_socket']} rooms each): "
        f"NATS {h['nats_bytes_per_subscription']:.0f} B/subscription ({by_node} by node), "
        f"gateway {h['gateway_bytes_per_room']:.0f} B/room",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small sizes (~1/20)")
    add_arguments(parser)
    args = parser.parse_args()

    async def go() -> None:
        fd, path = tempfile.mkstemp(prefix="scale-churn-", suffix=".log")
        print(f"log: {path}", file=sys.stderr)
        with open(fd, "w") as log:  # noqa: ASYNC230 - opened once, before any process
            section = await run(args, log)
        print(table(section))
        print(orjson.dumps(section, option=orjson.OPT_INDENT_2).decode())

    run_loop(go)


if __name__ == "__main__":
    main()
