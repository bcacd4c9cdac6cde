"""Issue 14 part 4's check: a mixed configuration the capacity model was not fitted on,
measured, so :func:`bench.scale.model.validation` can report the prediction error.

3 NATS nodes, 3 gateways (one per node), 6,000 connections (2,000 per gateway), 300
rooms of 20 sockets, each socket in one room and each room's members spread over all
3 gateways; the publisher sends 100 msg/s in total, round-robin over the rooms (2,000
deliveries/s) for a 20 s window. ``--quick``: 600 connections, 30 rooms, 10 msg/s.

None of the fitted sections has this mix: the connection steps are idle, the cluster
steps have few hot rooms and no idle population, the churn section has no traffic.
What is measured is what an operator provisions: CPU (mean per gateway, sum over the
NATS nodes) over the window and RSS at its end, with the same meter as the cluster
section (:class:`bench.scale.topology.Topology`).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import dataclass
from typing import Any, Final, TextIO

from bench.harness import progress
from bench.procstat import raise_nofile_limit
from bench.scale.topology import NATS_NODES, PING_INTERVAL_S, Topology, fmt_cores, mean

GATEWAYS: Final = 3
RSS_SETTLE_S: Final = 2.0
"""After the connects and joins: allocators settle before RSS is read."""


@dataclass(frozen=True, kw_only=True)
class Sizes:
    conns: int
    rooms: int
    rate: float
    window_s: float

    @property
    def fanout(self) -> int:
        return self.conns // self.rooms


FULL: Final = Sizes(conns=6000, rooms=300, rate=100.0, window_s=20.0)
QUICK: Final = Sizes(conns=600, rooms=30, rate=10.0, window_s=4.0)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("validation (the model's check)")
    g.add_argument("--validate-conns", type=int, default=None, help="connections (6000)")
    g.add_argument("--validate-rooms", type=int, default=None, help="rooms (300)")
    g.add_argument("--validate-rate", type=float, default=None, help="msg/s in total (100)")
    g.add_argument("--validate-window-s", type=float, default=None, help="window (20)")


def sizes(args: argparse.Namespace) -> Sizes:
    base = QUICK if getattr(args, "quick", False) else FULL
    s = Sizes(
        conns=args.validate_conns or base.conns,
        rooms=args.validate_rooms or base.rooms,
        rate=args.validate_rate or base.rate,
        window_s=args.validate_window_s or base.window_s,
    )
    if s.conns % s.rooms or s.conns % GATEWAYS or s.fanout < GATEWAYS:
        raise ValueError(
            f"--validate-conns must be a multiple of the rooms and of {GATEWAYS}, "
            f"with at least {GATEWAYS} members per room"
        )
    return s


def layout(clients: list[list[int]], rooms: int, fanout: int) -> dict[str, list[int]]:
    """Room r takes ``fanout`` members round-robin over the gateways' clients, so every
    room has members on every gateway and every client is in exactly one room."""
    free = [list(c) for c in clients]
    out: dict[str, list[int]] = {}
    turn = 0
    for r in range(rooms):
        members: list[int] = []
        for _ in range(fanout):
            members.append(free[turn % len(free)].pop())
            turn += 1
        out[f"v{r}"] = members
    return out


async def run(args: argparse.Namespace, log: TextIO) -> dict[str, Any]:
    s = sizes(args)
    raise_nofile_limit()
    topo = Topology(log=log, client_workers=2)
    try:
        progress(f"validation: {s.conns} connections on {GATEWAYS} gateways, {s.rooms} rooms")
        await topo.start(GATEWAYS)
        per_gateway = s.conns // GATEWAYS
        clients = [await topo.connect(g, per_gateway) for g in range(GATEWAYS)]
        rooms = layout(clients, s.rooms, s.fanout)
        await topo.join(rooms)
        await topo.ready(rooms)
        await asyncio.sleep(RSS_SETTLE_S)
        progress(f"  {s.rate:g} msg/s for {s.window_s:g} s")
        w = await topo.window(rooms, rate=s.rate, duration_s=s.window_s, k=1)
        gw_rss = topo.gateway_rss()
        nats_rss = topo.nats_rss()
    finally:
        await topo.close()
    spread = mean([float(len({topo.gateway_of[i] for i in m})) for m in rooms.values()])
    return {
        "workload": {
            "nats_nodes": NATS_NODES,
            "gateways": GATEWAYS,
            "conns": s.conns,
            "rooms": s.rooms,
            "rooms_per_socket": 1,
            "publish_rate_per_s": s.rate,
            "fanout": s.fanout,
            "gateways_per_room": spread,
            "ping_interval_s": PING_INTERVAL_S,
        },
        "measured": {
            "gateway_cpu_cores": mean(w.gateway_cpu_cores),
            "gateway_rss_bytes": mean([float(r) for r in gw_rss]),
            "nats_cpu_cores": sum(w.nats_cpu_cores),
            "nats_rss_bytes": float(sum(nats_rss)),
        },
        "window_s": w.seconds,
        "publish_rate_per_s": w.sent / w.publish_elapsed_s if w.publish_elapsed_s else 0.0,
        "sent": w.sent,
        "expected_deliveries": w.expected_deliveries,
        "delivered": w.delivered,
        "lost": w.lost,
        "gateway_cpu_cores": w.gateway_cpu_cores,
        "gateway_rss_bytes": gw_rss,
        "nats_cpu_cores": w.nats_cpu_cores,
        "nats_rss_bytes": nats_rss,
        "publisher_cpu_cores": w.publisher_cpu_cores,
        "route_msgs_per_s": w.route_out_msgs / w.seconds,
    }


def table(section: dict[str, Any]) -> str:
    wl, m = section["workload"], section["measured"]
    return "\n".join(
        [
            f"Validation run: {wl['conns']} connections on {wl['gateways']} gateways and "
            f"{wl['nats_nodes']} NATS nodes, {wl['rooms']} rooms of {wl['fanout']} "
            f"({wl['gateways_per_room']:g} gateways each), {section['publish_rate_per_s']:.1f} "
            f"msg/s for {section['window_s']:.1f} s: {section['delivered']} of "
            f"{section['expected_deliveries']} deliveries ({section['lost']} lost)",
            f"  gateway CPU {fmt_cores(section['gateway_cpu_cores'])} cores (mean "
            f"{m['gateway_cpu_cores']:.3f}), RSS "
            + "/".join(f"{r / 2**20:.0f}" for r in section["gateway_rss_bytes"])
            + " MiB",
            f"  NATS CPU {fmt_cores(section['nats_cpu_cores'])} cores (sum "
            f"{m['nats_cpu_cores']:.3f}), RSS "
            + "/".join(f"{r / 2**20:.0f}" for r in section["nats_rss_bytes"])
            + f" MiB; publisher {section['publisher_cpu_cores']:.3f} cores",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    import orjson

    from bench.rpc import run as run_loop

    parser = argparse.ArgumentParser(prog="python -m bench.scale.validate", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small, fast variant")
    add_arguments(parser)
    args = parser.parse_args(argv)

    async def go() -> None:
        path = f"/tmp/scale-validate-{time.strftime('%Y%m%dT%H%M%S')}.log"
        with open(path, "w") as log:  # noqa: ASYNC230 - opened once, before any process
            progress(f"child output: {path}")
            section = await run(args, log)
        print(table(section))
        print(orjson.dumps(section, option=orjson.OPT_INDENT_2).decode())

    run_loop(go)


if __name__ == "__main__":
    main(sys.argv[1:])
