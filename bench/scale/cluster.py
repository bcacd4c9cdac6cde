"""Issue 14 part 2: gateways x a 3-node NATS cluster, and what interest saves.

A 3-node NATS cluster (routes on loopback), G gateways (gateway ``i`` on node ``i % 3``),
the publisher on node 0. Every gateway holds the same number of clients, each in one
room. For each G two room layouts are measured at a fixed publish rate below
saturation:

- ``interested_gateways = G``: every hot room has members on all G gateways;
- ``interested_gateways = 1``: every hot room's members are on one gateway (gateway 1,
  on node 1, so the publisher's messages must cross a route); the other gateways hold
  as many idle clients, in rooms that get no traffic.

The point the second layout shows: NATS sends a room's messages only where a gateway
subscribed to it (gateway/interest.py), so the uninterested gateways receive no room
message and spend idle CPU, and route traffic flows only from the publisher's node to
the interested gateway's node. The figures (CPU per delivery and per message, route
traffic) are the unit costs the capacity model (bench/scale/model.py) is fitted to.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, TextIO

from bench.harness import progress
from bench.procstat import raise_nofile_limit
from bench.scale.topology import (
    NATS_NODES,
    PING_INTERVAL_S,
    Topology,
    Window,
    fmt_cores,
    mean,
    spread,
)

INTERESTED_GATEWAY: Final = 1
"""The gateway holding every hot room in the one-gateway layout (on node 1: not the
publisher's node, so its traffic crosses a route)."""


@dataclass(frozen=True, kw_only=True)
class Sizes:
    gateways: tuple[int, ...]
    rate: float
    fanout: int
    rooms: int
    window_s: float
    idle_s: float
    client_procs: int
    sweep_rates: tuple[float, ...]
    """Higher rates measured on the first layout whose rooms are on one gateway of
    several (that gateway on another node than the publisher: a route hop, as in a
    cluster), kept apart from the fitted steps: how far the per-message costs stay
    linear."""

    @property
    def clients_per_gateway(self) -> int:
        return self.rooms * self.fanout


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("cluster (part 2: gateways x 3-node NATS cluster)")
    g.add_argument("--cluster-gateways", default=None, help="gateway counts (default 1,2,3,4)")
    g.add_argument("--cluster-rate", type=float, default=None, help="msg/s (100; quick 20)")
    g.add_argument("--cluster-fanout", type=int, default=None, help="members/room (40; quick 20)")
    g.add_argument("--cluster-rooms", type=int, default=None, help="hot rooms (20; quick 2)")
    g.add_argument("--cluster-window-s", type=float, default=None, help="window (15; quick 3)")
    g.add_argument("--cluster-idle-s", type=float, default=None, help="idle baseline (5; quick 1)")
    g.add_argument("--cluster-client-procs", type=int, default=2, help="load-gen processes")
    g.add_argument(
        "--cluster-sweep-rates",
        default=None,
        help="msg/s beyond --cluster-rate on the first rooms-on-one-gateway layout, not "
        "fitted: the linearity check "
        "(400,1000; quick 60); empty: none",
    )


def sizes(args: argparse.Namespace) -> Sizes:
    quick = bool(getattr(args, "quick", False))
    spec = args.cluster_gateways or "1,2,3,4"
    return Sizes(
        gateways=tuple(sorted({int(x) for x in str(spec).split(",") if x.strip()})),
        rate=args.cluster_rate or (20.0 if quick else 100.0),
        fanout=args.cluster_fanout or (20 if quick else 40),
        rooms=args.cluster_rooms or (2 if quick else 20),
        window_s=args.cluster_window_s or (3.0 if quick else 15.0),
        idle_s=args.cluster_idle_s or (1.0 if quick else 5.0),
        client_procs=args.cluster_client_procs,
        sweep_rates=tuple(
            float(x)
            for x in (
                args.cluster_sweep_rates
                if args.cluster_sweep_rates is not None
                else ("60" if quick else "400,1000")
            ).split(",")
            if x.strip()
        ),
    )


Rooms = dict[str, list[int]]


def layout(
    clients: Sequence[Sequence[int]], *, rooms: int, fanout: int, all_gateways: bool, tag: str
) -> tuple[Rooms, Rooms]:
    """(hot rooms, idle rooms): client indices per room, each client in exactly one.

    ``clients[g]`` are gateway g's clients. ``all_gateways``: each hot room takes an even
    share of its members from every gateway; else all from :data:`INTERESTED_GATEWAY`
    (gateway 0 when there is one gateway). Clients left over form idle rooms of
    ``fanout`` members on their own gateway.
    """
    g_count = len(clients)
    free = [list(c) for c in clients]
    hot: Rooms = {}
    for r in range(rooms):
        members: list[int] = []
        if all_gateways:
            # rotate who gives the extra member so gateways stay even
            shares = spread(fanout, g_count)
            shares = shares[r % g_count :] + shares[: r % g_count]
            for g, n in enumerate(shares):
                members += free[g][:n]
                del free[g][:n]
        else:
            g = INTERESTED_GATEWAY if g_count > 1 else 0
            members += free[g][:fanout]
            del free[g][:fanout]
        if len(members) != fanout:
            raise ValueError("not enough clients for the hot rooms")
        hot[f"{tag}h{r}"] = members
    idle: Rooms = {}
    for g, rest in enumerate(free):
        for j in range(0, len(rest), fanout):
            idle[f"{tag}i{g}-{j // fanout}"] = rest[j : j + fanout]
    return hot, idle


def _step(
    topo: Topology, g_count: int, hot: Rooms, w: Window, idle: Window, s: Sizes
) -> dict[str, Any]:
    interested = sorted({topo.gateway_of[i] for m in hot.values() for i in m})
    others = [g for g in range(g_count) if g not in interested]
    cpu = w.gateway_cpu_cores[:g_count]
    interested_cpu_s = sum(cpu[g] for g in interested) * w.seconds
    messages_in = sum(w.gateway_room_messages_in[g] for g in interested)
    names = topo.node_names
    return {
        "gateways": g_count,
        "interested_gateways": len(interested),
        "interested": interested,
        "gateway_nodes": [names[topo.node_of(g)] for g in range(g_count)],
        "publish_rate_per_s": w.sent / w.publish_elapsed_s if w.publish_elapsed_s else 0.0,
        "target_rate_per_s": s.rate,
        "fanout": s.fanout,
        "hot_rooms": len(hot),
        "conns": g_count * s.clients_per_gateway,
        "window_s": w.seconds,
        "sent": w.sent,
        "expected_deliveries": w.expected_deliveries,
        "delivered": w.delivered,
        "lost": w.lost,
        "unexpected_events": w.other_events,
        "deliveries_per_s": w.delivered / w.seconds,
        "gateway_cpu_cores": cpu,
        "gateway_idle_cpu_cores": idle.gateway_cpu_cores[:g_count],
        "nats_cpu_cores": w.nats_cpu_cores,
        "nats_idle_cpu_cores": idle.nats_cpu_cores,
        "publisher_cpu_cores": w.publisher_cpu_cores,
        "clients_cpu_cores": w.clients_cpu_cores,
        "gateway_room_messages_in": w.gateway_room_messages_in[:g_count],
        "gateway_deliveries": w.gateway_deliveries[:g_count],
        "gateway_cpu_us_per_delivery": interested_cpu_s / w.delivered * 1e6 if w.delivered else 0,
        "gateway_cpu_us_per_message_in": interested_cpu_s / messages_in * 1e6 if messages_in else 0,
        "nats_cpu_us_per_message": sum(w.nats_cpu_cores) * w.seconds / w.sent * 1e6,
        "route_msgs_per_s": w.route_out_msgs / w.seconds,
        "route_bytes_per_s": w.route_out_bytes / w.seconds,
        "route_flows_msgs_per_s": w.route_flows(names),
        "idle_route_msgs_per_s": idle.route_out_msgs / idle.seconds,
        "idle_route_flows_msgs_per_s": idle.route_flows(names),
        "uninterested": others,
        "uninterested_gateway_cpu_cores": mean([cpu[g] for g in others]) if others else None,
        "uninterested_gateway_idle_cpu_cores": (
            mean([idle.gateway_cpu_cores[g] for g in others]) if others else None
        ),
        "uninterested_room_messages_in": sum(w.gateway_room_messages_in[g] for g in others),
        "uninterested_deliveries": sum(w.gateway_deliveries[g] for g in others),
    }


async def run(args: argparse.Namespace, log: TextIO) -> dict[str, Any]:
    """Every (G, layout) step on one cluster; gateways are added as G grows and keep
    their clients, rooms are re-made per step."""
    s = sizes(args)
    raise_nofile_limit()
    section: dict[str, Any] = {
        "nats_nodes": NATS_NODES,
        "nofile_hard": resource.getrlimit(resource.RLIMIT_NOFILE)[1],
        "ping_interval_s": PING_INTERVAL_S,
        "rooms": s.rooms,
        "fanout": s.fanout,
        "clients_per_gateway": s.clients_per_gateway,
        "window_s": s.window_s,
        "idle_s": s.idle_s,
        "target_rate_per_s": s.rate,
        "publisher_node": "nats0",
        "steps": [],
        "rate_steps": [],
    }
    topo = Topology(log=log, client_workers=s.client_procs)
    clients: list[list[int]] = []
    previous: list[str] = []
    step_no = 0
    try:
        progress(f"cluster: {NATS_NODES} NATS nodes, gateways {list(s.gateways)}")
        await topo.start(0)
        for g_count in s.gateways:
            await topo.add_gateways(g_count)
            while len(clients) < g_count:
                clients.append(await topo.connect(len(clients), s.clients_per_gateway))
            idle: Window | None = None
            for all_gateways in (True, False) if g_count > 1 else (True,):
                step_no += 1
                tag = f"s{step_no}"
                hot, cold = layout(
                    clients[:g_count], rooms=s.rooms, fanout=s.fanout,
                    all_gateways=all_gateways, tag=tag,
                )  # fmt: skip
                if previous:
                    await topo.leave(previous)
                await topo.join({**hot, **cold})
                previous = [*hot, *cold]
                await topo.ready(hot)
                if idle is None:
                    idle = await topo.idle(s.idle_s)
                k = len({topo.gateway_of[i] for m in hot.values() for i in m})
                progress(f"  G={g_count} interested={k}: {s.rate} msg/s for {s.window_s} s")
                w = await topo.window(hot, rate=s.rate, duration_s=s.window_s, k=step_no)
                section["steps"].append(_step(topo, g_count, hot, w, idle, s))
                if not section["rate_steps"] and (not all_gateways or len(s.gateways) == 1):
                    for rate in s.sweep_rates:
                        step_no += 1
                        progress(f"  G={g_count} interested={k}: {rate} msg/s (rate check)")
                        w = await topo.window(hot, rate=rate, duration_s=s.window_s, k=step_no)
                        checked = _step(topo, g_count, hot, w, idle, s)
                        checked["target_rate_per_s"] = rate
                        section["rate_steps"].append(checked)
    finally:
        await topo.close()
    return section


def _num(v: Any, digits: int = 1) -> str:
    if v is None:
        return "-"
    return f"{v:,.{digits}f}" if isinstance(v, float) else str(v)


def table(section: dict[str, Any]) -> str:
    """The step table, then route flows, then the interest statement per 1-gateway step."""
    head = (
        "G", "int", "msg/s", "fan", "deliv/s", "lost", "gw cores (each)", "gw idle (each)",
        "nats cores (each)", "pub", "gw us/deliv", "gw us/msg in", "nats us/msg",
        "route msg/s", "route KB/s",
    )  # fmt: skip
    rows: list[tuple[str, ...]] = [
        (
            str(st["gateways"]) + ("*" if st in section.get("rate_steps", []) else ""),
            str(st["interested_gateways"]),
            _num(st["publish_rate_per_s"]),
            str(st["fanout"]),
            _num(st["deliveries_per_s"], 0),
            str(st["lost"]),
            fmt_cores(st["gateway_cpu_cores"]),
            fmt_cores(st["gateway_idle_cpu_cores"]),
            fmt_cores(st["nats_cpu_cores"]),
            f"{st['publisher_cpu_cores']:.3f}",
            _num(st["gateway_cpu_us_per_delivery"]),
            _num(st["gateway_cpu_us_per_message_in"]),
            _num(st["nats_cpu_us_per_message"]),
            _num(st["route_msgs_per_s"]),
            _num(st["route_bytes_per_s"] / 1e3),
        )
        for st in [*section["steps"], *section.get("rate_steps", [])]
    ]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    lines = [
        f"Gateways x {section['nats_nodes']}-node NATS cluster: {section['rooms']} hot rooms, "
        f"{section['clients_per_gateway']} clients per gateway, publisher on "
        f"{section['publisher_node']}, {section['window_s']} s windows (cores = CPU s / s)",
        "  ".join(h.rjust(w) for h, w in zip(head, widths, strict=True)),
    ]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    if section.get("rate_steps"):
        lines.append("* the rate check: not fitted; the model's linearity at higher rates")
    lines.append("")
    lines.append("Route traffic (msgs/s sent over routes, by direction; idle baseline in [ ])")
    for st in section["steps"]:
        flows = st["route_flows_msgs_per_s"]
        idle = st["idle_route_flows_msgs_per_s"]
        parts = [
            f"{k} {v:.1f} [{idle.get(k, 0.0):.1f}]" for k, v in flows.items() if v or idle.get(k)
        ]
        lines.append(
            f"  G={st['gateways']} int={st['interested_gateways']}: " + (", ".join(parts) or "none")
        )
    lines.append("")
    for st in section["steps"]:
        if not st["uninterested"]:
            continue
        interested = ", ".join(f"gateway{g} ({st['gateway_nodes'][g]})" for g in st["interested"])
        others = ", ".join(f"gateway{g}" for g in st["uninterested"])
        to_nodes = sorted(
            {
                k
                for k, v in st["route_flows_msgs_per_s"].items()
                if v >= 0.5 * st["publish_rate_per_s"]
            }
        )
        lines.append(
            f"G={st['gateways']}, rooms on 1 gateway ({interested}): uninterested {others} "
            f"received {st['uninterested_room_messages_in']} room messages, "
            f"{st['uninterested_deliveries']} deliveries; their CPU "
            f"{st['uninterested_gateway_cpu_cores']:.4f} cores vs idle "
            f"{st['uninterested_gateway_idle_cpu_cores']:.4f}; routes carrying the traffic: "
            f"{', '.join(to_nodes) or 'none'}"
        )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.scale.cluster", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small, fast variant")
    add_arguments(parser)
    return parser


async def _main(args: argparse.Namespace) -> None:
    import orjson

    path = f"/tmp/scale-cluster-{time.strftime('%Y%m%dT%H%M%S')}.log"
    with open(path, "w") as log:  # noqa: ASYNC230 - opened once, before any process
        progress(f"child output: {path}")
        section = await run(args, log)
    print(table(section))
    print(orjson.dumps(section, option=orjson.OPT_INDENT_2).decode())


def main(argv: list[str] | None = None) -> None:
    from bench.rpc import run as run_loop

    args = build_parser().parse_args(argv)
    run_loop(lambda: _main(args))


if __name__ == "__main__":
    main(sys.argv[1:])
    sys.exit(0)
