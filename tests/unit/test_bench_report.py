"""bench/report.py: ratios to both references, same-load cells and their flags, loop notes."""

from __future__ import annotations

import math
from typing import Any

from bench import report

LABELS = {
    "plain": "plain aiohttp + NATS (ref)",
    "psio-redis": "python-socketio + Redis (ref)",
    "node-redis": "Node socket.io + Redis (ref)",
    "sailcast": "Sailcast gateway",
}
FIGS = report.figures(2.0, 500.0, 200.0)


def scenario(
    eff: float, same: float, *, valid: bool = True, same_valid: bool = True
) -> dict[str, Any]:
    return {
        "max_deliveries_per_s": eff,
        "deliveries_per_server_cpu_s": eff,
        "same_load_deliveries_per_server_cpu_s": same,
        "same_load_rate_msgs_per_s": 2.0,
        "same_load_valid": same_valid,
        "same_load_reason": "" if same_valid else "p99 250 ms > 200",
        "p50_ms": 10.0,
        "p99_ms": 20.0,
        "valid": valid,
        "invalid_reason": "" if valid else "harness-bound at 76 msg/s: disturbed",
        "loadgen_max_core": 0.1,
        "loadgen_share_at_best": 0.2,
        "foreign_share_max": 0.0,
    }


def results() -> dict[str, dict[str, Any]]:
    return {
        "plain": {"S1": scenario(100_000, 70_000), "server_loop": "uvloop"},
        "psio-redis": {"S1": scenario(10_000, 14_000, same_valid=False), "server_loop": "uvloop"},
        "node-redis": {"S1": scenario(80_000, 50_000), "server_loop": "node"},
        "sailcast": {"S1": scenario(400_000, 77_000, valid=False), "server_loop": "uvloop"},
    }


def row(text: str, label: str) -> list[str]:
    line = next(x for x in text.splitlines() if x.startswith(f"| {label} "))
    return [c.strip() for c in line.strip("|").split("|")]


def test_ratios_divide_by_the_reference_and_leave_undefined_ones_out() -> None:
    res = results()
    res["node-redis"]["S1"]["same_load_deliveries_per_server_cpu_s"] = math.nan
    rat = report.ratios(res, FIGS, "psio-redis")
    assert rat["sailcast"]["s1_eff_same"] == 77_000 / 14_000
    assert rat["psio-redis"]["s1_eff"] == 1.0
    assert rat["node-redis"]["s1_eff_same"] is None  # NaN value
    assert rat["sailcast"]["s2_eff"] is None  # no S2 in this run


def test_efficiency_rows_show_ratios_to_plain_and_to_python_socketio() -> None:
    text = report.table(results(), LABELS, FIGS, "plain", "uvloop", "psio-redis")
    same = row(text, "S1 deliveries per server CPU-s @2 msg/s ↑")
    assert same[4] == "77,000 (1.10 · 5.50)"
    assert same[2] == "14,000 (0.20 · 1.00) !"  # its same-load step failed
    own_max = row(text, "S1 deliveries per server CPU-s at own max ↑")
    assert own_max[4] == "400,000 (4.00 · 40.00) !"  # search bounded by the harness
    assert row(text, "S1 p99 ms @2 msg/s ↓")[4] == "20.0 (1.00)"  # one ratio only
    assert "python-socketio + Redis (ref) S1 @2 msg/s: ! p99 250 ms > 200" in text
    assert "Sailcast gateway S1: ! harness-bound at 76 msg/s: disturbed" in text


def test_without_the_second_reference_cells_keep_one_ratio() -> None:
    res = results()
    del res["psio-redis"]
    text = report.table(res, LABELS, FIGS, "plain", "uvloop", "psio-redis")
    assert row(text, "S1 deliveries per server CPU-s @2 msg/s ↑")[3] == "77,000 (1.10)"


def test_loop_row_and_notes() -> None:
    res = results()
    text = report.table(res, LABELS, FIGS, "plain", "uvloop", "psio-redis")
    loops = row(text, "server event loop (read from each process)")
    assert loops[1:] == ["uvloop", "uvloop", "Node (libuv)", "uvloop"]
    assert "event loop" not in text.split("\n\n", 1)[1]  # no loop warning
    res["plain"]["server_loop"] = "asyncio"
    assert report.loop_notes(res, LABELS, "uvloop") == [
        "! plain aiohttp + NATS (ref) ran on asyncio, not uvloop"
    ]
    (note,) = report.loop_notes(res, LABELS, None)
    assert note.startswith("! Python servers ran on different event loops")
