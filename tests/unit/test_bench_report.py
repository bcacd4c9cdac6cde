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


# -- the floor reference, equal-load rows, repeats (issue 17) ------------------------

LABELS_FLOOR = {**LABELS, "floor": "floor (raw asyncio Protocol) + NATS (ref)"}
FIGS_FIXED = report.figures(2.0, 500.0, 200.0, s1_rates=(2.0, 10.0, 20.0))


def fixed(rate: float, eff: float, *, share: float = 0.3, passed: bool = True,
          saturated: bool = False) -> dict[str, Any]:  # fmt: skip
    return {
        "rate_msgs_per_s": rate,
        "deliveries_per_server_cpu_s": eff,
        "passed": passed,
        "why": "" if passed else "p99 300 ms > 200",
        "loadgen_share": share,
        "machine_saturated": saturated,
        "saturation": "machine 97% busy, load generators 40% of it",
    }


def with_floor() -> dict[str, dict[str, Any]]:
    res = {"floor": {"S1": scenario(200_000, 80_000), "server_loop": "uvloop"}, **results()}
    for name, (e2, e10) in {
        "floor": (80_000, 100_000),
        "plain": (70_000, 70_000),
        "psio-redis": (14_000, 9_000),
        "node-redis": (50_000, 60_000),
        "sailcast": (77_000, 90_000),
    }.items():
        res[name]["S1"]["fixed_rates"] = [fixed(2.0, e2), fixed(10.0, e10)]
    res["psio-redis"]["S1"]["fixed_rates"][1].update(passed=False, why="p99 900 ms > 200")
    res["psio-redis"]["S1"]["fixed_rates"].append(
        {"rate_msgs_per_s": 20.0, "passed": False, "skipped": True, "why": "not run"}
    )
    res["sailcast"]["S1"]["fixed_rates"].append(fixed(20.0, 120_000, saturated=True))
    res["floor"]["S1"]["fixed_rates"].append(fixed(20.0, 150_000, share=0.45))
    return res


def test_with_the_floor_every_ratio_is_to_the_floor_and_to_plain() -> None:
    text = report.table(with_floor(), LABELS_FLOOR, FIGS, "plain", "uvloop", "psio-redis", "floor")
    assert text.startswith("| figure (ratio to floor · to plain aiohttp; efficiency also")
    own_max = row(text, "S1 deliveries per server CPU-s at own max ↑")
    assert own_max[1] == "200,000 (1.00 · 2.00 · 20.00)"
    assert own_max[5] == "400,000 (2.00 · 4.00 · 40.00) !"
    assert row(text, "S1 p99 ms @2 msg/s ↓")[5] == "20.0 (1.00 · 1.00)"  # no psio ratio
    rat = report.ratios(with_floor(), FIGS, "floor")
    assert rat["sailcast"]["s1_eff_same"] == 77_000 / 80_000


def test_equal_load_rows_carry_the_load_generator_share_and_their_flags() -> None:
    text = report.table(
        with_floor(), LABELS_FLOOR, FIGS_FIXED, "plain", "uvloop", "psio-redis", "floor"
    )
    at10 = row(text, "S1 deliveries per server CPU-s @10 msg/s ↑")
    assert at10[1] == "100,000 (1.00 · 1.43 · 11.11) lg 30%"
    assert at10[3] == "9,000 (0.09 · 0.13 · 1.00) ! lg 30%"  # that step failed
    at20 = row(text, "S1 deliveries per server CPU-s @20 msg/s ↑")
    assert at20[1] == "150,000 (1.00 · – · –) lg 45%"  # plain and psio have no such step
    assert at20[3] == "– !"  # not run: saturated below it
    assert at20[5] == "120,000 (0.80 · – · –) * lg 30%"  # on a saturated machine
    assert "python-socketio + Redis (ref) S1 @10 msg/s: ! p99 900 ms > 200" in text
    assert "Sailcast gateway S1 @20 msg/s: * saturated (machine 97% busy" in text
    labels = [line.split("|")[1].strip() for line in text.splitlines()[2:20] if "|" in line]
    assert labels.index("S1 deliveries per server CPU-s @2 msg/s ↑") < labels.index(
        "S1 max deliveries/s (p99≤200ms) ↑"
    )  # equal load first: it is the headline


def test_repeats_report_medians_of_per_run_ratios_and_their_spread() -> None:
    runs = [with_floor(), with_floor(), with_floor()]
    for i, scale in enumerate((1.0, 1.5, 0.5)):  # Sailcast's @2 msg/s figure moves
        runs[i]["sailcast"]["S1"]["same_load_deliveries_per_server_cpu_s"] = 80_000 * scale
    runs[2]["floor"]["S1"]["same_load_deliveries_per_server_cpu_s"] = 20_000
    summ = report.summary(runs, FIGS_FIXED, ["floor", "plain"])
    cell = summ["s1_eff_same"]["sailcast"]
    assert cell["median"] == 80_000
    assert (cell["min"], cell["max"]) == (40_000, 120_000)
    # per-run ratios to the floor: 1.0, 1.5, 2.0 -> median 1.5 (not 80,000 / 80,000)
    assert cell["ratios"]["floor"]["values"] == [1.0, 1.5, 2.0]
    assert cell["ratios"]["floor"]["median"] == 1.5
    text = report.median_tables(
        runs, LABELS_FLOOR, FIGS_FIXED, "plain", "uvloop", "psio-redis", "floor"
    )
    medians, spread = text.split("\n\n", 1)
    assert medians.startswith("| median of 3 runs (ratio to floor · to plain aiohttp")
    assert row(medians, "S1 deliveries per server CPU-s @2 msg/s ↑")[5] == (
        "80,000 (1.50 · 1.14 · 5.71) lg 30%"
    )
    assert row(spread, "S1 deliveries per server CPU-s @2 msg/s ↑")[5] == (
        "40,000–120,000 (1.00–2.00)"
    )
    assert "run 3: Sailcast gateway S1: ! harness-bound at 76 msg/s: disturbed" in spread


def test_targets_are_judged_on_medians_of_per_run_ratios_to_the_floor() -> None:
    runs = [with_floor(), with_floor(), with_floor()]
    for res, p99 in zip(runs, (30.0, 22.0, 40.0), strict=True):
        res["sailcast"]["S1"]["p99_ms"] = p99  # the floor's is 20.0: +10, +2, +20
        res["sailcast"]["S3"] = {"kb_per_conn": 11.5}
    runs[0]["sailcast"]["S1"]["fixed_rates"][1]["deliveries_per_server_cpu_s"] = 80_000
    lines = report.targets(runs, FIGS_FIXED, "sailcast", "floor")
    assert lines == [
        "S1 deliveries per server CPU-s @2 msg/s: 0.96× the floor (runs 0.96–0.96), "
        "target ≥ 0.9: met",
        # 90,000 / 100,000 twice and 80,000 / 100,000 once: median 0.90
        "S1 deliveries per server CPU-s @10 msg/s: 0.90× the floor (runs 0.80–0.90), "
        "target ≥ 0.9: met",
        "S1 deliveries per server CPU-s @20 msg/s: 0.80× the floor (runs 0.80–0.80), "
        "target ≥ 0.9: MISSED",
        "S1 p99 ms @2 msg/s: +10.0 ms against the floor, target ≤ +5: MISSED",
        "S3 KB per idle connection: 11.5, target ≤ 12: met",
    ]
    assert report.targets(runs, FIGS_FIXED, "sailcast", "absent") == []
    del runs[1]["sailcast"]["S1"]["fixed_rates"][2]  # one run lacks the step: 2 left
    assert (
        "@20 msg/s: 0.80× the floor (runs 0.80–0.80)"
        in report.targets(runs, FIGS_FIXED, "sailcast", "floor")[2]
    )
    for res in runs:
        del res["sailcast"]["S1"]["fixed_rates"][2:]
    assert report.targets(runs, FIGS_FIXED, "sailcast", "floor")[2] == (
        "S1 deliveries per server CPU-s @20 msg/s: no ratio to the floor (step missing)"
    )


def test_a_reference_that_did_not_run_gets_no_ratio_column() -> None:
    res = with_floor()
    del res["plain"], res["psio-redis"]
    text = report.table(res, LABELS_FLOOR, FIGS, "plain", "uvloop", "psio-redis", "floor")
    assert text.startswith("| figure (ratio to floor; lg:")
    assert row(text, "S1 deliveries per server CPU-s @2 msg/s ↑")[3] == "77,000 (0.96) lg 30%"
