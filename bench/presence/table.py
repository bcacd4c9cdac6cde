"""The tables the presence benchmark prints (from its JSON record's ``results``)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

SYSTEMS: tuple[tuple[str, str], ...] = (
    ("sailcast-members", "Sailcast members"),
    ("sailcast-count", "Sailcast count"),
    ("node-fetchSockets", "Node fetchSockets"),
)


def _num(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}"


def _grid(head: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    out = [line(head), "-" * len(line(head))]
    out += [line(r) for r in rows]
    return out


def _series(results: Mapping[str, Any]) -> dict[tuple[str, int], Mapping[str, Any]]:
    out: dict[tuple[str, int], Mapping[str, Any]] = {}
    for key in ("sailcast_members", "node_members"):
        for s in results.get(key, {}).get("series", []):
            out[(s["system"], int(s["size"]))] = s
    return out


def members_table(results: Mapping[str, Any]) -> str:
    """Room size x {members, count, fetchSockets}: p50/p99 ms and server CPU ms/query."""
    lines = ["Members and counts, cluster-wide (3 servers, rooms spread evenly)"]
    for key, label in (("sailcast_members", "Sailcast"), ("node_members", "Node socket.io")):
        if skipped := results.get(key, {}).get("skipped"):
            lines.append(f"  {label}: skipped ({skipped})")
    series = _series(results)
    if not series:
        return "\n".join(lines)
    sizes = sorted({size for _, size in series})
    head = ["room size"]
    for _, label in SYSTEMS:
        head += [f"{label} p50/p99 ms", "CPU ms/q"]
    head += ["Node/members p50", "Node/count p50"]
    rows = []
    for size in sizes:
        row = [f"{size:,}"]
        for system, _ in SYSTEMS:
            s = series.get((system, size))
            if s is None:
                row += ["-", "-"]
                continue
            row.append(f"{_num(s['p50_ms'], 2)} / {_num(s['p99_ms'], 2)}")
            row.append(_num(s["server_cpu_ms_per_query"], 2))
        node = series.get(("node-fetchSockets", size))
        for system in ("sailcast-members", "sailcast-count"):
            ours = series.get((system, size))
            ratio = node["p50_ms"] / ours["p50_ms"] if node and ours and ours["p50_ms"] else None
            row.append(f"{_num(ratio, 1)}x" if ratio is not None else "-")
        rows.append(row)
    lines += _grid(head, rows)
    lines.append(
        "CPU ms/q: the servers' (gateways', Node servers') CPU per query, net of their idle "
        "rate; Node's includes the caller (server 0 runs fetchSockets), Sailcast's caller "
        "is a worker (below). Node/…: Node's p50 over Sailcast's (above 1: Sailcast faster)."
    )
    lines.append("")
    detail_head = ["series", "size", "n", "p50", "p99", "max", "pages", "server", "broker",
                   "caller", "wrong", "failed"]  # fmt: skip
    detail = []
    for (system, size), s in sorted(series.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        detail.append(
            [
                system,
                f"{size:,}",
                str(s["n"]),
                _num(s["p50_ms"], 2),
                _num(s["p99_ms"], 2),
                _num(s["max_ms"], 2),
                _num(s["pages_per_query"], 0) if system == "sailcast-members" else "-",
                _num(s["server_cpu_ms_per_query"], 2),
                _num(s["broker_cpu_ms_per_query"], 2),
                _num(s["caller_cpu_ms_per_query"], 2) if system.startswith("sailcast") else "-",
                str(s["wrong"]),
                str(s["failed"]),
            ]
        )
    lines.append("Per series (ms; CPU ms per query: server, broker = NATS or redis, caller)")
    lines += _grid(detail_head, detail)
    for s in series.values():
        for err in s.get("errors", [])[:2]:
            lines.append(f"  {s['system']} {s['size']}: {err}")
    return "\n".join(lines)


def churn_table(results: Mapping[str, Any]) -> str:
    """One row per churn variant, then every mismatch example."""
    churn = results.get("churn")
    lines = ["Presence under churn (3 gateways)"]
    if churn is None:
        return "\n".join([*lines, "  not run"])
    if skipped := churn.get("skipped"):
        return "\n".join([*lines, f"  skipped ({skipped})"])
    head = ["variant", "sockets", "changes/s", "socket chg", "user chg", "events/s",
            "ev/observer", "coalescing", "deltas/ev", "cancelled", "members", "mismatches",
            "sent/recv", "gw cores", "lg cores"]  # fmt: skip
    rows = [
        [
            v["label"],
            f"{v['sockets']:,}",
            _num(v["socket_changes"] / v["churn_s"], 0),
            f"{v['socket_changes']:,}",
            f"{v['user_changes']:,}",
            _num(v["delivered_per_s"], 0),
            _num(v["events_per_observer"], 0),
            _num(v["coalescing_ratio"], 1),
            _num(v["deltas_per_event"], 1),
            _num(v["cancelled_in_window"], 0),
            f"{v['final_members']:,}/{v['final_users']:,}",
            str(v["mismatches"]),
            f"{v['gateways_sent_state_count']:,.0f}/{v['clients_received_state_count']:,}",
            _num(v["server_cpu_s"] / v["elapsed_s"], 2),
            _num(v["clients_cpu_s"] / v["elapsed_s"], 2),
        ]
        for v in churn["variants"]
    ]
    lines += _grid(head, rows)
    lines.append(
        "events/s: presence events delivered to all members per second (churn + settle); "
        "coalescing: socket membership changes per event an observer received; deltas/ev: "
        "joins+leaves per presence event; cancelled: changes that cancelled out within one "
        "window (gateway metric); members: final sockets/users; mismatches: members whose "
        "final view != truth; sent/recv: presence_state+presence_count events the gateways "
        "sent / the clients received; gw, lg cores: CPU of the gateways, of the clients."
    )
    if note := churn.get("count_only_skipped"):
        lines.append(f"  count-only: skipped ({note})")
    for v in churn["variants"]:
        for sid, why in v["mismatch_examples"].items():
            lines.append(f"  mismatch {v['label']} {sid}: {why}")
        for err in v["errors"]:
            lines.append(f"  error {v['label']}: {err}")
    return "\n".join(lines)
