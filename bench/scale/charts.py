"""PNG charts of a scale run (matplotlib, from bench/requirements.txt): how each cost
grows, so a reader sees linearity (or its absence) rather than reading it off tables.

- ``<prefix>-connections.png``: gateway RSS and idle (heartbeat) CPU against
  connections, and the broadcast's time to last delivery;
- ``<prefix>-cluster.png``: CPU of the gateways and of the NATS cluster per step, rooms
  on every gateway vs on one, and route messages per second;
- ``<prefix>-validation.png``: the model's prediction against the measurement.

A section that is missing or failed is skipped; no matplotlib, no charts (the JSON and
the tables are the record).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any


def write_charts(results: Mapping[str, Any], prefix: Path, model: Mapping[str, Any]) -> list[Path]:
    """The charts written (paths), for whichever sections are there."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    written: list[Path] = []

    def ok(name: str) -> Mapping[str, Any] | None:
        sec = results.get(name)
        return sec if isinstance(sec, Mapping) and "error" not in sec else None

    if (conns := ok("connections")) and conns.get("steps"):
        steps = sorted(conns["steps"], key=lambda s: s["conns"])
        xs = [s["conns"] for s in steps]
        fig, axes = plt.subplots(1, 3, figsize=(13, 4), dpi=90)
        axes[0].plot(xs, [s["gateway_rss_bytes"] / 2**20 for s in steps], "o-")
        axes[0].set_title("gateway RSS (MiB, sum over processes)")
        axes[1].plot(xs, [s["idle_cpu_cores"] for s in steps], "o-")
        axes[1].set_title(f"idle CPU (cores), ping every {conns['ping_interval_s']:g} s")
        axes[2].plot(xs, [s["broadcast_last_ms"] for s in steps], "o-", label="last")
        axes[2].plot(xs, [s["broadcast_p50_ms"] for s in steps], "o-", label="p50")
        axes[2].set_title("broadcast to all: delivery time (ms)")
        axes[2].legend(fontsize=8)
        for ax in axes:
            ax.set_xlabel("connections")
            for step in steps:
                if step["gateway_processes"] > 1:
                    ax.axvline(step["conns"], color="grey", linewidth=0.6, linestyle=":")
        fig.suptitle("Connections per gateway (dotted: the one-node step over several processes)")
        fig.tight_layout()
        written.append(_save(fig, plt, prefix, "connections"))

    if (cluster := ok("cluster")) and cluster.get("steps"):
        steps = cluster["steps"]
        labels = [f"G={s['gateways']}\nk={s['interested_gateways']}" for s in steps]
        xs = list(range(len(steps)))
        fig, axes = plt.subplots(1, 2, figsize=(13, 4), dpi=90)
        axes[0].bar(
            [x - 0.2 for x in xs], [sum(s["gateway_cpu_cores"]) for s in steps], 0.4,
            label="gateways (sum)",
        )  # fmt: skip
        axes[0].bar(
            [x + 0.2 for x in xs], [sum(s["nats_cpu_cores"]) for s in steps], 0.4,
            label="NATS nodes (sum)",
        )  # fmt: skip
        axes[0].set_title(f"CPU (cores) at {cluster['target_rate_per_s']:g} msg/s")
        axes[0].legend(fontsize=8)
        axes[1].bar(xs, [s["route_msgs_per_s"] for s in steps])
        axes[1].set_title("NATS route messages/s (k: gateways with members)")
        for ax in axes:
            ax.set_xticks(xs)
            ax.set_xticklabels(labels, fontsize=8)
        fig.tight_layout()
        written.append(_save(fig, plt, prefix, "cluster"))

    rows = model.get("validation")
    if isinstance(rows, Mapping) and rows:
        keys = list(rows)
        fig, ax = plt.subplots(figsize=(8, 4), dpi=90)
        ratio = [
            rows[k]["predicted"] / rows[k]["measured"] if rows[k]["measured"] else 0 for k in keys
        ]
        ax.bar(range(len(keys)), ratio)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xticks(range(len(keys)))
        ax.set_xticklabels([k.replace("_", " ") for k in keys], fontsize=8)
        ax.set_ylabel("predicted / measured")
        ax.set_title("Capacity model on the validation run")
        fig.tight_layout()
        written.append(_save(fig, plt, prefix, "validation"))
    return written


def _save(fig: Any, plt: Any, prefix: Path, name: str) -> Path:
    path = prefix.with_name(f"{prefix.name}-{name}.png")
    fig.savefig(path)
    plt.close(fig)
    return path
