"""The one table, the JSON record and the PNG chart of a run.

Every figure is shown with its ratio to the reference system measured in the same
run; absolute numbers on a shared 2-core box move between runs, ratios much less.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Figure:
    key: str
    label: str
    higher_is_better: bool
    get: Callable[[dict[str, Any]], float | None]
    fmt: str = "{:,.0f}"
    scenario: str = ""
    valid_key: str | None = None
    """Key of the scenario's result that is False when this figure is not trustworthy
    (its cell gets a ``!``)."""
    second_ratio: bool = False
    """Also shown as a ratio to the second reference (python-socketio)."""


def _path(scenario: str, *keys: str) -> Callable[[dict[str, Any]], float | None]:
    def get(result: dict[str, Any]) -> float | None:
        node: Any = result.get(scenario)
        for key in keys:
            if not isinstance(node, dict):
                return None
            node = node.get(key)
        return float(node) if isinstance(node, int | float) else None

    return get


def figures(s1_rate: float, s2_rate: float, p99_limit_ms: float) -> list[Figure]:
    """The table's rows, in order; ↑ marks higher-is-better, ↓ lower-is-better."""
    lim = f"p99≤{p99_limit_ms:g}ms"
    rows: list[Figure] = []
    for scen, rate in (("S1", s1_rate), ("S2", s2_rate)):
        low = scen.lower()
        rows += [
            Figure(f"{low}_max", f"{scen} max deliveries/s ({lim}) ↑", True,
                   _path(scen, "max_deliveries_per_s"), scenario=scen, valid_key="valid"),
            Figure(f"{low}_eff", f"{scen} deliveries per server CPU-s at own max ↑", True,
                   _path(scen, "deliveries_per_server_cpu_s"), scenario=scen,
                   valid_key="valid", second_ratio=True),
            Figure(f"{low}_eff_same", f"{scen} deliveries per server CPU-s @{rate:g} msg/s ↑",
                   True, _path(scen, "same_load_deliveries_per_server_cpu_s"), scenario=scen,
                   valid_key="same_load_valid", second_ratio=True),
            Figure(f"{low}_p50", f"{scen} p50 ms @{rate:g} msg/s ↓", False,
                   _path(scen, "p50_ms"), "{:,.1f}", scen),
            Figure(f"{low}_p99", f"{scen} p99 ms @{rate:g} msg/s ↓", False,
                   _path(scen, "p99_ms"), "{:,.1f}", scen),
        ]  # fmt: skip
    rows += [
        Figure("s3_kb", "S3 KB RSS per idle connection ↓", False,
               _path("S3", "kb_per_conn"), "{:,.1f}", "S3"),
        Figure("s4_async", "S4 async publishes/s ↑", True,
               _path("S4", "async", "rate"), scenario="S4"),
        Figure("s4_sync", "S4 sync publishes/s ↑", True,
               _path("S4", "sync", "rate"), scenario="S4"),
    ]  # fmt: skip
    return rows


def ratios(
    results: dict[str, dict[str, Any]], figs: list[Figure], reference: str
) -> dict[str, dict[str, float | None]]:
    """{system: {figure key: value / reference value}} (None where undefined)."""
    ref = results.get(reference, {})
    out: dict[str, dict[str, float | None]] = {}
    for name, res in results.items():
        row: dict[str, float | None] = {}
        for f in figs:
            v, r = f.get(res), f.get(ref)
            if v is None or r is None or not (math.isfinite(v) and math.isfinite(r)) or r == 0:
                row[f.key] = None
            else:
                row[f.key] = v / r
        out[name] = row
    return out


def _cell(
    fig: Figure,
    result: dict[str, Any],
    ratio: float | None,
    second: float | None = None,
    *,
    show_second: bool = False,
) -> str:
    """``value (ratio)``, or ``value (ratio · second ratio)`` with ``show_second``."""
    if "error" in result and fig.get(result) is None:
        return "error"
    value = fig.get(result)
    if value is None:
        return "–"
    text = fig.fmt.format(value) if math.isfinite(value) else str(value)
    if show_second:
        parts = ("–" if r is None else f"{r:.2f}" for r in (ratio, second))
        text += " (" + " · ".join(parts) + ")"
    elif ratio is not None:
        text += f" ({ratio:.2f})"
    scen = result.get(fig.scenario)
    if fig.valid_key and isinstance(scen, dict) and scen.get(fig.valid_key) is False:
        text += " !"
    elif (
        fig.valid_key == "valid"
        and isinstance(scen, dict)
        and scen.get("machine_saturated_at_best")
    ):
        text += " *"
    return text


def _loadgen_cell(result: dict[str, Any]) -> str:
    parts = []
    for scen in ("S1", "S2"):
        r = result.get(scen)
        if isinstance(r, dict):
            parts.append(f"{r['loadgen_max_core']:.0%}/{r['loadgen_share_at_best']:.0%}")
    return " · ".join(parts) or "–"


def _foreign_cell(result: dict[str, Any]) -> str:
    parts = []
    for scen in ("S1", "S2"):
        r = result.get(scen)
        if isinstance(r, dict):
            parts.append(f"{r['foreign_share_max']:.0%}")
    return " · ".join(parts) or "–"


_LOOP_LABELS: dict[str, str] = {"node": "Node (libuv)"}


def _short(label: str) -> str:
    """ "python-socketio + Redis (ref)" -> "python-socketio" (for the header)."""
    return label.split(" + ")[0].removesuffix(" (ref)")


def loop_notes(
    results: dict[str, dict[str, Any]], labels: dict[str, str], requested: str | None
) -> list[str]:
    """Warnings when the Python servers did not all run on the same (requested) loop."""
    python = {
        n: r["server_loop"]
        for n, r in results.items()
        if r.get("server_loop") not in (None, "node")
    }
    off = {n: loop for n, loop in python.items() if requested and loop != requested}
    if off:
        return [f"! {labels.get(n, n)} ran on {loop}, not {requested}" for n, loop in off.items()]
    if len(set(python.values())) > 1:
        each = ", ".join(f"{labels.get(n, n)} {loop}" for n, loop in python.items())
        return [f"! Python servers ran on different event loops ({each}): not like for like"]
    return []


def table(
    results: dict[str, dict[str, Any]],
    labels: dict[str, str],
    figs: list[Figure],
    reference: str,
    server_loop: str | None = None,
    second_reference: str | None = None,
) -> str:
    """Rows are figures, columns systems; each cell ``value (ratio to reference)``.

    Figures marked ``second_ratio`` (the efficiency rows) show ``value (ratio to
    reference · ratio to second_reference)`` when ``second_reference`` is in the run.
    ``server_loop`` is the event loop the Python servers were asked to run on; the
    footer shows what each ran on and warns where that differs.
    """
    rat = ratios(results, figs, reference)
    second = second_reference if second_reference in results else None
    rat2 = ratios(results, figs, second) if second else {}
    names = list(results)
    title = "figure (ratio to " + _short(labels.get(reference, reference))
    if second:
        title += "; efficiency: to it · to " + _short(labels.get(second, second))
    header = [title + ")", *(labels[n] for n in names)]
    rows = [
        [
            f.label,
            *(
                _cell(
                    f,
                    results[n],
                    rat[n][f.key],
                    rat2[n][f.key] if second else None,
                    show_second=bool(second) and f.second_ratio,
                )
                for n in names
            ),
        ]
        for f in figs
    ]
    rows.append(
        ["loadgen max core / CPU share (S1 · S2)", *(_loadgen_cell(results[n]) for n in names)]
    )
    rows.append(["foreign CPU max share (S1 · S2)", *(_foreign_cell(results[n]) for n in names)])
    rows.append(
        [
            "server event loop (read from each process)",
            *(_LOOP_LABELS.get(loop := results[n].get("server_loop", "–"), loop) for n in names),
        ]
    )
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    out = [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) for r in rows]
    notes = []
    for n in names:
        res = results[n]
        if "error" in res:
            notes.append(f"{labels[n]}: ERROR {res['error']}")
        if "skipped" in res:
            notes.append(f"{labels[n]}: skipped: {res['skipped']}")
        for scen in ("S1", "S2"):
            r = res.get(scen)
            if isinstance(r, dict) and not r.get("valid", True):
                notes.append(f"{labels[n]} {scen}: ! {r['invalid_reason']}")
            elif isinstance(r, dict) and r.get("machine_saturated_at_best"):
                notes.append(
                    f"{labels[n]} {scen}: * best step on a saturated machine "
                    f"({r['machine_at_best']}): its maximum is a lower bound"
                )
            if isinstance(r, dict) and r.get("same_load_valid") is False:
                rate = r["same_load_rate_msgs_per_s"]
                notes.append(f"{labels[n]} {scen} @{rate:g} msg/s: ! {r['same_load_reason']}")
    notes += loop_notes(results, labels, server_loop)
    if notes:
        out.append("")
        out += notes
    return "\n".join(out)


def chart(
    results: dict[str, dict[str, Any]],
    labels: dict[str, str],
    figs: list[Figure],
    reference: str,
    path: Path,
) -> str | None:
    """Grouped bars of each figure's ratio to the reference (log scale); None if no matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib not installed"
    rat = ratios(results, figs, reference)
    names = [n for n in results if any(v is not None for v in rat[n].values())]
    if not names:
        return "nothing to plot"
    fig, ax = plt.subplots(figsize=(11, 4.8), dpi=90)
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        xs = [j + (i - (len(names) - 1) / 2) * width for j in range(len(figs))]
        ys = [rat[name][f.key] or 0.0 for f in figs]
        ax.bar(xs, ys, width, label=labels[name])
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_xticks(range(len(figs)))
    ax.set_xticklabels(
        [f.label.replace(" (", "\n(") for f in figs], rotation=35, ha="right", fontsize=7
    )
    ax.set_ylabel(f"ratio to {labels.get(reference, reference)}")
    ax.set_title("Sailcast fan-out benchmark (↑ higher is better, ↓ lower is better)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return None
