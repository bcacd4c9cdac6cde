"""Issue 14 part 1: what one gateway pays for N idle websocket connections.

Each step starts fresh processes (one NATS server, the gateway(s), load-generator
workers), opens N Engine.IO v4 / Socket.IO connections on loopback, and measures:

- RSS of the gateway(s) before any client and with all N idle -> bytes per connection;
- gateway CPU over an idle window of at least one Engine.IO ping interval (after a
  settle of one interval: the first after a connect burst costs about twice), so every
  socket is pinged (and answers) once -> heartbeat CPU per connection per second;
- the connect phase: N connections with bounded concurrency per worker, the rate
  sustained, the latency of each (TCP connect -> Socket.IO CONNECT ack), gateway CPU;
- one ``blast`` (every socket on every gateway) from a publisher: time from the send
  to the last and the median delivery, gateway CPU per delivery;
- NATS RSS, refusals (must be 0) and client disconnections (must be 0).

The hard RLIMIT_NOFILE here is 20,000 per process, so one gateway holds at most
19,000 connections; the "node" step (50,000 over 3 gateway processes on one NATS
server) is how a 50k pod runs on a machine with that cap. Load-generator workers
hold at most ``--conn-per-worker`` connections each and bind to their own loopback
source address (127.x.y.z), so no source address runs short of ephemeral ports.

Run alone: ``python -m bench.scale.connections [--quick]`` (prints the table and JSON).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import random
import resource
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, TextIO

import orjson

from bench import hist
from bench.delivery.processes import Child, Processes, gateway_argv
from bench.presence.cluster import gateway_samples, sum_family
from bench.procstat import raise_nofile_limit, rss_bytes, total_cpu_seconds
from bench.rpc import Worker
from gateway.settings import EngineSettings, ListenSettings
from publisher import Publisher

DEFAULT_STEPS: Final = "5000,10000,19000"
DEFAULT_NODE: Final = "50000:3"
QUICK_STEPS: Final = "500,1000"
QUICK_NODE: Final = "1500:3"
QUICK_PING_INTERVAL_S: Final = 5.0
"""--quick runs three steps in ~40 s: the idle window (one ping interval) must be short."""
CLIENTS_PER_WORKER: Final = 12_500
"""Under the 20,000 fd cap of a worker process, with room for its own descriptors."""
CONCURRENCY: Final = 256
BASE_S: Final = 2.0
"""The window of the gateways' CPU before any client (their base)."""
EVENT: Final = "bench"
BROADCAST_K: Final = 0
METRIC_WORDS: Final = ("refusals", "connect_rejections", "connections", "slow_client", "drops")
WORKER_MODULE: Final = "bench.scale.conn_clients"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("connections (issue 14 part 1)")
    g.add_argument(
        "--conn-steps",
        default=None,
        help=f"comma-separated connection counts for one gateway (default {DEFAULT_STEPS}; "
        f"--quick {QUICK_STEPS}); empty: none",
    )
    g.add_argument(
        "--conn-node",
        default=None,
        help=f"CONNS:GATEWAYS, the one-node step over several gateway processes "
        f"(default {DEFAULT_NODE}; --quick {QUICK_NODE}); empty: none",
    )
    g.add_argument(
        "--conn-per-worker",
        type=int,
        default=CLIENTS_PER_WORKER,
        help="connections per load-generator process at most",
    )
    g.add_argument(
        "--conn-concurrency",
        type=int,
        default=CONCURRENCY,
        help="connections in flight per load-generator process",
    )
    g.add_argument(
        "--conn-ping-interval-s",
        type=float,
        default=None,
        help=f"gateway Engine.IO ping interval (default: the gateway's, "
        f"{EngineSettings().ping_interval_s:g} s; --quick {QUICK_PING_INTERVAL_S:g} s)",
    )
    g.add_argument(
        "--conn-settle-s",
        type=float,
        default=None,
        help="pause after the connect phase, before the idle window (default: one ping "
        "interval; the CPU in it is reported as post_connect_cpu_cores)",
    )
    g.add_argument(
        "--conn-idle-s",
        type=float,
        default=None,
        help="idle CPU window (default: one ping interval + 1 s)",
    )
    g.add_argument(
        "--conn-broadcast-timeout-s",
        type=float,
        default=60.0,
        help="how long the broadcast to all connections may take",
    )


@dataclass(frozen=True)
class Plan:
    """What one run measures, from the options and --quick."""

    steps: list[tuple[int, int]]  # (conns, gateway processes)
    ping_interval_s: float
    settle_s: float
    """Between the connect phase and the idle window: the first ping interval after a
    burst of connects costs about twice the next ones (19,000 sockets: 3.9 vs 1.9 µs
    per socket per second; allocator and garbage collector after-effects)."""
    idle_s: float
    per_worker: int
    concurrency: int
    broadcast_timeout_s: float


def plan_of(args: argparse.Namespace) -> Plan:
    quick = bool(getattr(args, "quick", False))
    steps_text = (
        args.conn_steps
        if args.conn_steps is not None
        else (QUICK_STEPS if quick else DEFAULT_STEPS)
    )
    node_text = (
        args.conn_node if args.conn_node is not None else (QUICK_NODE if quick else DEFAULT_NODE)
    )
    steps = [(int(s), 1) for s in steps_text.split(",") if s.strip()]
    if node_text.strip():
        conns, _, gateways = node_text.partition(":")
        steps.append((int(conns), int(gateways or 1)))
    if any(n <= 0 or g <= 0 for n, g in steps):
        raise ValueError("connection counts and gateway processes must be positive")
    ping = args.conn_ping_interval_s
    if ping is None:
        ping = QUICK_PING_INTERVAL_S if quick else EngineSettings().ping_interval_s
    idle = args.conn_idle_s if args.conn_idle_s is not None else ping + 1.0
    settle = args.conn_settle_s if args.conn_settle_s is not None else ping
    if idle < ping:
        raise ValueError("--conn-idle-s must cover at least one ping interval")
    return Plan(
        steps=steps,
        ping_interval_s=float(ping),
        settle_s=float(settle),
        idle_s=float(idle),
        per_worker=args.conn_per_worker,
        concurrency=args.conn_concurrency,
        broadcast_timeout_s=args.conn_broadcast_timeout_s,
    )


def conn_gateway_argv(nats_url: str, prefix: str, index: int, ping_interval_s: float) -> list[str]:
    """A gateway with no connection cap and the default fd reserve (what is left of the
    fd limit is the only bound)."""
    return gateway_argv(
        nats_url, prefix, f"conn-{index}",
        "--ping-interval-s", f"{ping_interval_s:g}",
        "--max-connections", "0",
        "--fd-reserve", str(ListenSettings().fd_reserve),
    )  # fmt: skip


async def gateway_metrics(servers: Sequence[Child]) -> dict[str, float]:
    """The connection-related samples of every gateway, summed over gateways."""
    total: dict[str, float] = {}
    for child in servers:
        for key, value in (await gateway_samples(child, METRIC_WORDS)).items():
            total[key] = total.get(key, 0.0) + value
    return total


def counter(samples: dict[str, float], suffix: str) -> float:
    """Sum of the family whose name ends with ``suffix`` (any metric prefix)."""
    families = {k.partition("{")[0] for k in samples if k.partition("{")[0].endswith(suffix)}
    return sum(sum_family(samples, f) for f in families)


def source_ips(workers: int) -> list[str]:
    """One loopback source address per worker, fresh for each step and run: closed
    connections keep their port in TIME_WAIT for 60 s, per source address."""
    a, b = random.randrange(1, 255), random.randrange(0, 256)
    return [f"127.{a}.{b}.{w + 2}" for w in range(workers)]


async def measure_step(
    conns: int, gateways: int, plan: Plan, log: TextIO, *, label: str = ""
) -> dict[str, Any]:
    """One step on fresh processes, all stopped before it returns."""
    procs = Processes(log)
    workers: list[Worker] = []
    pub: Publisher | None = None
    prefix = f"conn{random.randrange(16**6):06x}"
    try:
        nats = (await procs.nats_cluster(1))[0]
        servers = list(
            await asyncio.gather(
                *(
                    procs.spawn(
                        f"{label}gateway{i}",
                        conn_gateway_argv(nats.url, prefix, i, plan.ping_interval_s),
                    )
                    for i in range(gateways)
                )
            )
        )
        pids = [s.pid for s in servers]
        urls = [f"http://127.0.0.1:{s.port}" for s in servers]
        n_workers = max(1, math.ceil(conns / plan.per_worker))
        workers = list(
            await asyncio.gather(
                *(
                    Worker.spawn(WORKER_MODULE, name=f"{label}clients{w}", log=log)
                    for w in range(n_workers)
                )
            )
        )
        await asyncio.gather(*(w.call("ping") for w in workers))  # imported and serving
        pub = await Publisher.connect(nats.url, prefix=prefix)
        cpu_b0, t_b0 = total_cpu_seconds(pids), time.perf_counter()
        await asyncio.sleep(BASE_S)
        base_cores = (total_cpu_seconds(pids) - cpu_b0) / (time.perf_counter() - t_b0)
        rss_base = sum(rss_bytes(p) for p in pids)
        before = await gateway_metrics(servers)

        # connect phase
        ips = source_ips(n_workers)
        cpu0, t0 = total_cpu_seconds(pids), time.perf_counter()
        replies = await asyncio.gather(
            *(
                w.call(
                    "connect_timed",
                    timeout_s=600.0,
                    urls=urls,
                    indices=list(range(i, conns, n_workers)),
                    source_ip=ips[i],
                    concurrency=plan.concurrency,
                )
                for i, w in enumerate(workers)
            )
        )
        t1, cpu1 = time.perf_counter(), total_cpu_seconds(pids)
        connected = sum(r["connected"] for r in replies)
        failed = sum(r["failed"] for r in replies)
        connect_hist = hist.merge(r["hist"] for r in replies)

        # idle: every socket pinged at least once in the window, after a settle
        await asyncio.sleep(plan.settle_s)
        cpu2, t2 = total_cpu_seconds(pids), time.perf_counter()
        post_connect_cores = (cpu2 - cpu1) / (t2 - t1)
        await asyncio.sleep(plan.idle_s)
        cpu3, t3 = total_cpu_seconds(pids), time.perf_counter()
        rss = sum(rss_bytes(p) for p in pids)
        nats_rss = rss_bytes(nats.child.pid)
        idle_cores = (cpu3 - cpu2) / (t3 - t2)

        # one message to every socket
        cpu4, t4 = total_cpu_seconds(pids), time.perf_counter()
        await pub.sockets.blast(EVENT, {"t": time.time_ns(), "k": BROADCAST_K})
        await pub.flush()
        delivered = 0
        deadline = t4 + plan.broadcast_timeout_s
        while time.perf_counter() < deadline:
            counts = await asyncio.gather(*(w.call("count", k=BROADCAST_K) for w in workers))
            delivered = sum(c["n"] for c in counts)
            if delivered >= connected:
                break
            await asyncio.sleep(0.02)
        t5, cpu5 = time.perf_counter(), total_cpu_seconds(pids)
        collected = await asyncio.gather(*(w.call("collect", k=BROADCAST_K) for w in workers))
        delivered = sum(c["n"] for c in collected)
        disconnected = sum(c["disconnected"] for c in collected)
        broadcast_hist = hist.merge(c["hist"] for c in collected)
        missing = connected - delivered

        after = await gateway_metrics(servers)
        refusals = counter(after, "refusals_total") - counter(before, "refusals_total")
        rejections = counter(after, "connect_rejections_total") - counter(
            before, "connect_rejections_total"
        )
        slow = counter(after, "slow_client_disconnects_total") - counter(
            before, "slow_client_disconnects_total"
        )
        gateway_connections = counter(after, "connections")
        loops = sorted({str(s.ready.get("loop")) for s in servers})
        return {
            "conns": conns,
            "gateway_processes": gateways,
            "load_workers": n_workers,
            "connected": connected,
            "connect_failed": failed,
            "connect_errors": [e for r in replies for e in r["errors"]][:5],
            "gateway_connections": int(gateway_connections),
            "gateway_loop": ",".join(loops),
            "gateway_rss_base_bytes": rss_base,
            "gateway_rss_bytes": rss,
            "rss_bytes_per_conn": (rss - rss_base) / max(connected, 1),
            "idle_window_s": t3 - t2,
            "post_connect_cpu_cores": post_connect_cores,
            "idle_cpu_cores": idle_cores,
            "heartbeat_cpu_us_per_conn_per_s": idle_cores * 1e6 / max(connected, 1),
            "idle_cpu_base_cores": base_cores,
            "heartbeat_cpu_us_per_conn_per_s_net": (idle_cores - base_cores)
            * 1e6
            / max(connected, 1),
            "connect_seconds": t1 - t0,
            "connect_rate_per_s": connected / (t1 - t0),
            "connect_p50_ms": hist.quantile_ms(connect_hist, 0.5),
            "connect_p99_ms": hist.quantile_ms(connect_hist, 0.99),
            "connect_cpu_cores": (cpu1 - cpu0) / (t1 - t0),
            "connect_cpu_us_per_connect": (cpu1 - cpu0) * 1e6 / max(connected, 1),
            "broadcast_delivered": delivered,
            "broadcast_missing": missing,
            "broadcast_last_ms": hist.quantile_ms(broadcast_hist, 1.0, missing=missing),
            "broadcast_p50_ms": hist.quantile_ms(broadcast_hist, 0.5, missing=missing),
            "broadcast_window_s": t5 - t4,
            "broadcast_cpu_us_per_delivery": (cpu5 - cpu4) * 1e6 / max(delivered, 1),
            "nats_rss_bytes": nats_rss,
            "refusals": int(refusals + rejections),
            "slow_client_disconnects": int(slow),
            "client_disconnects": disconnected,
        }
    finally:
        if pub is not None:
            with contextlib.suppress(Exception):
                await pub.close()
        await asyncio.gather(*(w.close() for w in workers), return_exceptions=True)
        # gateways before NATS: a gateway that loses NATS first logs and retries
        gateways_first = [c for c in procs.children if c.alive and "gateway" in c.name]
        await asyncio.gather(*(c.stop() for c in gateways_first), return_exceptions=True)
        await procs.close()


async def run(args: argparse.Namespace, log: TextIO) -> dict[str, Any]:
    """Every step in order; the section of the scale results."""
    plan = plan_of(args)
    raise_nofile_limit()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    too_big = [n for n, g in plan.steps if n / g > hard - 1000]
    if too_big:
        raise ValueError(f"steps {too_big} exceed what one process can hold (nofile {hard})")
    steps = []
    for i, (conns, gateways) in enumerate(plan.steps):
        log.write(f"[connections] step {i}: {conns} connections over {gateways} gateway(s)\n")
        steps.append(await measure_step(conns, gateways, plan, log, label=f"s{i}-"))
    return {
        "nofile_hard": hard,
        "nofile_soft": soft,
        "ping_interval_s": plan.ping_interval_s,
        "idle_window_s": plan.idle_s,
        "idle_settle_s": plan.settle_s,
        "gateway_max_connections": 0,  # no cap: the fd limit is the only bound
        "gateway_fd_reserve": ListenSettings().fd_reserve,
        "connect_concurrency_per_worker": plan.concurrency,
        "conns_per_worker_max": plan.per_worker,
        "steps": steps,
    }


def table(section: dict[str, Any]) -> str:
    head = (
        f"Connections per gateway (nofile hard {section['nofile_hard']}, "
        f"ping interval {section['ping_interval_s']:g} s)"
    )
    cols = (
        f"{'conns':>7} {'gw':>3} {'KB/conn':>8} {'RSS MB':>8} {'idle cores':>10} "
        f"{'hb us/c/s':>9} {'conn/s':>7} {'c p50 ms':>8} {'c p99 ms':>8} {'us/conn':>8} "
        f"{'bc last ms':>10} {'bc p50 ms':>9} {'us/deliv':>8} {'NATS MB':>7} {'refused':>7}"
    )
    lines = [head, cols]
    for s in section["steps"]:
        lines.append(
            f"{s['conns']:>7} {s['gateway_processes']:>3} "
            f"{s['rss_bytes_per_conn'] / 1024:>8.1f} {s['gateway_rss_bytes'] / 2**20:>8.0f} "
            f"{s['idle_cpu_cores']:>10.4f} {s['heartbeat_cpu_us_per_conn_per_s']:>9.3f} "
            f"{s['connect_rate_per_s']:>7.0f} {s['connect_p50_ms']:>8.1f} "
            f"{s['connect_p99_ms']:>8.1f} {s['connect_cpu_us_per_connect']:>8.0f} "
            f"{s['broadcast_last_ms']:>10.1f} {s['broadcast_p50_ms']:>9.1f} "
            f"{s['broadcast_cpu_us_per_delivery']:>8.1f} {s['nats_rss_bytes'] / 2**20:>7.0f} "
            f"{s['refusals']:>7}"
        )
        problems = []
        if s["connect_failed"]:
            problems.append(f"{s['connect_failed']} connects failed {s['connect_errors'][:2]}")
        if s["broadcast_missing"]:
            problems.append(f"{s['broadcast_missing']} broadcast deliveries missing")
        if s["client_disconnects"] or s["slow_client_disconnects"]:
            problems.append(
                f"{s['client_disconnects']} clients disconnected "
                f"({s['slow_client_disconnects']} as slow)"
            )
        if problems:
            lines.append("        ! " + "; ".join(problems))
    return "\n".join(lines)


def _main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small, fast variant")
    parser.add_argument("--log", default="/dev/stderr", help="child processes' output")
    add_arguments(parser)
    args = parser.parse_args()

    async def main() -> None:
        with open(args.log, "a") as log:  # noqa: ASYNC230 - opened once, before any step
            section = await run(args, log)
        print(table(section))
        print(orjson.dumps(section, option=orjson.OPT_INDENT_2).decode())

    from bench.rpc import run as run_loop

    run_loop(main)


if __name__ == "__main__":
    _main()
