"""Members, counts and presence (issue 12, "Measured"): ``python -m bench.presence``.

1. **members / count latency**: rooms of 10, 1,000 and 10,000 sockets spread evenly
   over 3 Sailcast gateways on one NATS server; ``pub.sockets.members`` (every page)
   and ``pub.sockets.count`` from a worker, p50/p99 over N sequential queries, and the
   CPU they cost the gateways (net of idle); in the same run, Node socket.io 4's
   ``fetchSockets()`` on 3 servers with the redis adapter, same rooms.
2. **presence under churn**: 1,000 sockets with user ids (some with two tabs on two
   gateways) join and leave one presence room at a steady rate over 3 gateways;
   events delivered per second, coalescing ratio, and every member's final view
   against the truth (0 mismatches expected); then the same in a count-only room.

Prints the tables; writes ``bench/results/presence-<timestamp>.json`` (``--quick``:
under ``bench/results/tmp/``). Loopback only; every process it starts is stopped.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Final

import orjson

from bench.brokers import Brokers
from bench.delivery.processes import Processes
from bench.harness import (
    environment,
    progress,
    run_files,
    until_interrupted,
    write_record,
)
from bench.presence.churn import ChurnSpec, connect, run_churn
from bench.presence.cluster import NodeCluster, SailcastCluster, gateway_flags
from bench.presence.members import node_fetch_sockets, sailcast_members
from bench.presence.pool import ClientPool
from bench.presence.table import churn_table, members_table
from bench.procstat import raise_nofile_limit
from bench.rpc import REPO_ROOT, run

PRESENCE_ROOMS: Final = "churn:*"
COUNT_ONLY_ROOMS: Final = "churn:count:*"
FULL_ROOM: Final = "churn:full"
COUNT_ROOM: Final = "churn:count:all"
DEFAULT_SETTLE_S: Final = 3.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.presence",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="rooms 10/100/1000, 300 sockets, 10 s")
    p.add_argument(
        "--parts", default="members,churn", help="comma-separated: members, churn (default both)"
    )
    p.add_argument("--no-node", action="store_true", help="skip the Node socket.io reference")
    p.add_argument("--sizes", help="room sizes, comma-separated (default 10,1000,10000)")
    p.add_argument("--queries", type=int, help="queries per series (default 100, quick 20)")
    p.add_argument(
        "--budget-s", type=float, help="most time one series takes (default 15, quick 5)"
    )
    p.add_argument("--limit", type=int, default=1000, help="members per page")
    p.add_argument("--gateways", type=int, default=3, help="gateways / Node servers")
    p.add_argument("--client-procs", type=int, default=2, help="client processes")
    p.add_argument("--churn-sockets", type=int, help="sockets churning (default 1000, quick 300)")
    p.add_argument(
        "--churn-rate", type=float, help="membership changes per second (default 100, quick 50)"
    )
    p.add_argument("--churn-s", type=float, help="churn time (default 30, quick 10)")
    p.add_argument("--settle-s", type=float, help="wait for the last events (default: derived)")
    p.add_argument("--presence-interval-s", type=float, help="passed to the gateways")
    p.add_argument("--presence-count-interval-s", type=float, help="passed to the gateways")
    p.add_argument("--out", type=Path, help="results directory")
    return p.parse_args(argv)


def presence_flags(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """The gateway flags for the churn part, and what this gateway lacks of them."""
    flags = gateway_flags()
    wanted: list[tuple[str, str | None]] = [
        ("--presence", PRESENCE_ROOMS),
        ("--presence-count-only", COUNT_ONLY_ROOMS),
        ("--presence-interval-s", _opt(args.presence_interval_s)),
        ("--presence-count-interval-s", _opt(args.presence_count_interval_s)),
    ]
    argv: list[str] = []
    missing: list[str] = []
    for flag, value in wanted:
        if value is None:
            continue
        if flag in flags:
            argv += [flag, value]
        else:
            missing.append(flag)
    return argv, missing


def _opt(value: float | None) -> str | None:
    return None if value is None else str(value)


def effective_config(extra: list[str]) -> dict[str, Any]:
    """The gateway's effective settings with these flags (``--print-config``)."""
    out = subprocess.run(
        [sys.executable, "-m", "gateway", *extra, "--print-config"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        cwd=REPO_ROOT,
    )
    try:
        config: dict[str, Any] = orjson.loads(out.stdout)
    except orjson.JSONDecodeError:
        return {}
    return config


def members_available() -> str | None:
    from publisher.sockets import Sockets

    lacking = [m for m in ("members", "count") if not hasattr(Sockets, m)]
    if lacking:
        return f"the publisher has no sockets.{'/'.join(lacking)} (branch i12-members not merged)"
    return None


async def main_async(args: argparse.Namespace, log: Any, record: dict[str, Any]) -> None:
    quick = args.quick
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    sizes = (
        [int(s) for s in args.sizes.split(",")]
        if args.sizes
        else ([10, 100, 1000] if quick else [10, 1000, 10000])
    )
    queries = args.queries or (20 if quick else 100)
    budget_s = args.budget_s or (5.0 if quick else 15.0)
    churn_sockets = args.churn_sockets or (300 if quick else 1000)
    churn_rate = args.churn_rate or (50.0 if quick else 100.0)
    churn_s = args.churn_s or (10.0 if quick else 30.0)
    record["options"] = {
        "sizes": sizes,
        "queries": queries,
        "budget_s": budget_s,
        "limit": args.limit,
        "gateways": args.gateways,
        "churn_sockets": churn_sockets,
        "churn_rate": churn_rate,
        "churn_s": churn_s,
    }
    results: dict[str, Any] = record["results"]

    flags, missing = presence_flags(args)
    config = effective_config(flags)
    record["gateway_config"] = {k: v for k, v in config.items() if "presence" in k or "jwt" in k}
    settle_s = args.settle_s or max(
        DEFAULT_SETTLE_S,
        float(config.get("presence_interval_s", 0)) + 2.0,
        float(config.get("presence_count_interval_s", 0)) + 2.0,
    )

    # -- Sailcast: members/count, then churn, on one cluster -----------------------------
    procs = Processes(log)
    pool = ClientPool(log, workers=args.client_procs)
    try:
        cluster = SailcastCluster(procs=procs, gateways=args.gateways, extra_flags=flags)
        progress(f"sailcast: NATS + {args.gateways} gateways {' '.join(flags)}")
        await cluster.start()
        await pool.start()
        if "members" in parts:
            if reason := members_available():
                progress(f"sailcast members/count: skipped ({reason})")
                results["sailcast_members"] = {"skipped": reason}
            else:
                progress(f"sailcast members/count: rooms {sizes}, {queries} queries each")
                results["sailcast_members"] = await sailcast_members(
                    cluster, pool, sizes=sizes, queries=queries, budget_s=budget_s,
                    limit=args.limit,
                )  # fmt: skip
        if "churn" in parts:
            if "--presence" in missing:
                reason = "this gateway has no --presence (branch i12-presence not merged)"
                progress(f"presence churn: skipped ({reason})")
                results["churn"] = {"skipped": reason}
            else:
                results["churn"] = await churn(
                    cluster, pool, sockets=churn_sockets, rate=churn_rate, duration_s=churn_s,
                    settle_s=settle_s, count_only="--presence-count-only" not in missing,
                )  # fmt: skip
    finally:
        await pool.close()
        await procs.close()

    # -- Node socket.io + redis: fetchSockets ---------------------------------------------
    if "members" in parts:
        if args.no_node:
            results["node_members"] = {"skipped": "--no-node"}
        elif reason := NodeCluster.unavailable_reason():
            progress(f"node fetchSockets: skipped ({reason})")
            results["node_members"] = {"skipped": reason}
        else:
            procs = Processes(log)
            brokers = Brokers(log)
            pool = ClientPool(log, workers=args.client_procs)
            try:
                node = NodeCluster(procs=procs, brokers=brokers, servers_wanted=args.gateways)
                progress(f"node: redis + {args.gateways} socket.io servers")
                await node.start()
                await pool.start()
                results["node_members"] = await node_fetch_sockets(
                    node, pool, sizes=sizes, queries=queries, budget_s=budget_s, log=log
                )
            finally:
                await pool.close()
                await procs.close()
                await brokers.stop()


async def churn(
    cluster: SailcastCluster,
    pool: ClientPool,
    *,
    sockets: int,
    rate: float,
    duration_s: float,
    settle_s: float,
    count_only: bool,
) -> dict[str, Any]:
    from publisher import Publisher

    progress(f"presence churn: {sockets} sockets + observers, {rate}/s for {duration_s} s")
    await connect(cluster, pool, sockets)
    pub = await Publisher.connect(cluster.nats_url, prefix=cluster.prefix)
    out: dict[str, Any] = {"variants": []}
    common: dict[str, Any] = {
        "sockets": sockets, "rate": rate, "duration_s": duration_s, "settle_s": settle_s
    }  # fmt: skip
    specs = [ChurnSpec(room=FULL_ROOM, count_only=False, label="presence (join/leave)", **common)]
    if count_only:
        specs.append(
            ChurnSpec(room=COUNT_ROOM, count_only=True, label="presence (count-only)", **common)
        )
    else:
        out["count_only_skipped"] = "this gateway has no --presence-count-only"
    try:
        for spec in specs:
            progress(f"  {spec.label} in {spec.room}")
            out["variants"].append(await run_churn(cluster, pool, pub, spec))
    finally:
        await pub.close()
        await pool.close_all()
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stamp, out_dir, log_path = run_files("presence", quick=args.quick, out=args.out)
    raise_nofile_limit()
    progress(f"log: {log_path.relative_to(REPO_ROOT)}")
    record: dict[str, Any] = {
        "timestamp": stamp,
        "mode": "quick" if args.quick else "full",
        "environment": environment(),
        "results": {},
    }

    async def entry() -> None:
        with log_path.open("a", buffering=1) as log:
            try:
                if await until_interrupted(lambda: main_async(args, log, record)):
                    record["interrupted"] = True
            except Exception as exc:
                progress(f"failed: {type(exc).__name__}: {exc}")
                record["error"] = f"{type(exc).__name__}: {exc}"

    started = time.perf_counter()
    run(entry)
    record["elapsed_s"] = time.perf_counter() - started
    results = record["results"]
    text = members_table(results) + "\n\n" + churn_table(results)
    record["table"] = text
    print(text)
    write_record(out_dir, "presence", record)
    failed = "error" in record or record.get("interrupted")
    return 1 if failed else 0
