"""The one table the delivery benchmark prints: a row per variant and client kind."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

COLUMNS: Final = (
    ("variant", 36),
    ("clients", 8),
    ("delivered %", 12),
    ("lost", 8),
    ("dup", 6),
    ("ooo", 6),
    ("reconn.", 8),
    ("resumed", 8),
    ("caught up", 11),
    ("p50 ms", 8),
    ("p99 ms", 8),
)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def row(label: str, s: Mapping[str, Any]) -> str:
    reconnects = int(s["reconnects"])
    cells = (
        label,
        str(s["clients"]),
        _pct(s["delivered_pct"]),
        str(s["lost"]),
        str(s["duplicates"]),
        str(s["out_of_order"]),
        str(reconnects),
        str(s["resumed"]),
        f"{s['caught_up_after_miss']}/{s['missed_while_away']}" if reconnects else "-",
        _ms(s["catch_up_p50_ms"]),
        _ms(s["catch_up_p99_ms"]),
    )
    return "  ".join(
        c.ljust(w) if i == 0 else c.rjust(w)
        for i, (c, (_, w)) in enumerate(zip(cells, COLUMNS, strict=True))
    )


def table(results: Mapping[str, Mapping[str, Any]]) -> str:
    """``results``: variant name -> its record (bench/delivery/driver.py)."""
    head = "  ".join(n.ljust(w) if i == 0 else n.rjust(w) for i, (n, w) in enumerate(COLUMNS))
    lines = [head, "-" * len(head)]
    notes: list[str] = []
    for name, rec in results.items():
        label = str(rec.get("label", name))
        if "skipped" in rec:
            lines.append(f"{label.ljust(COLUMNS[0][1])}  skipped: {rec['skipped']}")
            continue
        scores = rec.get("scores")
        if not scores:
            lines.append(f"{label.ljust(COLUMNS[0][1])}  ERROR: {rec.get('error', '?')}")
            continue
        lines.append(row(label, scores["all"]))
        lines += [row(f"    {kind}", scores[kind]) for kind in ("v4", "sails") if kind in scores]
        if rec.get("error"):
            notes.append(f"{name}: ERROR {rec['error']}")
        if rec.get("addon") not in (None, "loaded", "not requested"):
            notes.append(f"{name}: sails.io.js add-on {rec['addon']}")
        notes += [f"{name}: {event}" for event in rec.get("events", [])]
        if load := rec.get("load"):
            notes.append(
                f"{name}: load generator CPU: clients {load['clients_cpu_s']:.1f} s, driver "
                f"{load['driver_cpu_s']:.1f} s over {load['wall_s']:.0f} s; machine "
                f"{100 * load['machine_busy_share']:.0f} % busy"
            )
        if errors := rec.get("connect_errors"):
            notes.append(f"{name}: {errors} connect errors (refused connects, retried)")
        failed = rec.get("published", {}).get("failed", 0)
        if failed:
            notes.append(f"{name}: {failed} publishes failed (not expected of clients)")
        if retries := rec.get("published", {}).get("retries", 0):
            notes.append(f"{name}: {retries} stored publishes retried with their msg_id")
    legend = (
        "delivered % = distinct expected messages received / expected; lost = expected not "
        "received; dup = extra copies; ooo = first receptions below an earlier number; "
        "reconn. = reconnects; resumed = reconnects that resumed the session (v4: "
        "socket.recovered; sails: the add-on's session event); caught up = of the reconnects "
        "that had missed messages while away, those that then received all of them; p50/p99 "
        "= time from such a reconnect to the last of them."
    )
    return "\n".join([*lines, "", *notes, "", legend])
