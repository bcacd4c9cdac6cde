"""The one table, the JSON record and the PNG chart of a run, and the medians of repeats.

Every figure is shown with its ratio to the references measured in the same run (the
floor and plain aiohttp; efficiency also to python-socketio); absolute numbers on a
shared 2-core box move between runs, ratios much less. With ``--repeat N`` the table
holds per system the median value and the median of the per-run ratios, and a second
table their min–max (issue 17: targets are ratios in one run, medians of >= 3 runs).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
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
    fixed_rate: float | None = None
    """For an equal-load row: its rate; the cell carries that step's load-generator CPU
    share and its flags (``!`` failed or not run, ``*`` saturated machine)."""


def _path(scenario: str, *keys: str) -> Callable[[dict[str, Any]], float | None]:
    def get(result: dict[str, Any]) -> float | None:
        node: Any = result.get(scenario)
        for key in keys:
            if not isinstance(node, dict):
                return None
            node = node.get(key)
        return float(node) if isinstance(node, int | float) else None

    return get


def fixed_rate_entry(result: dict[str, Any], scenario: str, rate: float) -> dict[str, Any] | None:
    """The ``fixed_rates`` entry of ``scenario`` at ``rate`` msg/s, if that step exists."""
    scen = result.get(scenario)
    if not isinstance(scen, dict):
        return None
    for entry in scen.get("fixed_rates", ()):
        if entry.get("rate_msgs_per_s") == rate:
            return entry  # type: ignore[no-any-return]
    return None


def _fixed(scenario: str, rate: float) -> Callable[[dict[str, Any]], float | None]:
    def get(result: dict[str, Any]) -> float | None:
        entry = fixed_rate_entry(result, scenario, rate)
        value = None if entry is None else entry.get("deliveries_per_server_cpu_s")
        return float(value) if isinstance(value, int | float) else None

    return get


def figures(
    s1_rate: float,
    s2_rate: float,
    p99_limit_ms: float,
    *,
    s1_rates: Sequence[float] = (),
    s2_rates: Sequence[float] = (),
) -> list[Figure]:
    """The table's rows, in order; ↑ marks higher-is-better, ↓ lower-is-better.

    Equal-load efficiency comes first (the headline, issue 17): one row per fixed rate
    (``s1_rates`` / ``s2_rates``; the latency rate keeps its row and key ``sN_eff_same``),
    then the latency figures, then the maximum and the efficiency at each system's own
    maximum.
    """
    lim = f"p99≤{p99_limit_ms:g}ms"
    rows: list[Figure] = []
    for scen, rate, rates in (("S1", s1_rate, s1_rates), ("S2", s2_rate, s2_rates)):
        low = scen.lower()
        for r in sorted({*rates, rate}):
            if r == rate:
                rows.append(
                    Figure(f"{low}_eff_same",
                           f"{scen} deliveries per server CPU-s @{rate:g} msg/s ↑", True,
                           _path(scen, "same_load_deliveries_per_server_cpu_s"), scenario=scen,
                           valid_key="same_load_valid", second_ratio=True, fixed_rate=rate)
                )  # fmt: skip
            else:
                rows.append(
                    Figure(f"{low}_eff_at_{r:g}",
                           f"{scen} deliveries per server CPU-s @{r:g} msg/s ↑", True,
                           _fixed(scen, r), scenario=scen, second_ratio=True, fixed_rate=r)
                )  # fmt: skip
        rows += [
            Figure(f"{low}_p50", f"{scen} p50 ms @{rate:g} msg/s ↓", False,
                   _path(scen, "p50_ms"), "{:,.1f}", scen),
            Figure(f"{low}_p99", f"{scen} p99 ms @{rate:g} msg/s ↓", False,
                   _path(scen, "p99_ms"), "{:,.1f}", scen),
            Figure(f"{low}_max", f"{scen} max deliveries/s ({lim}) ↑", True,
                   _path(scen, "max_deliveries_per_s"), scenario=scen, valid_key="valid"),
            Figure(f"{low}_eff", f"{scen} deliveries per server CPU-s at own max ↑", True,
                   _path(scen, "deliveries_per_server_cpu_s"), scenario=scen,
                   valid_key="valid", second_ratio=True),
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


def _ratio_text(ratios: Sequence[float | None]) -> str:
    """`` (r)`` for one reference (nothing if undefined), `` (r1 · r2 …)`` for several."""
    if len(ratios) == 1:
        return "" if ratios[0] is None else f" ({ratios[0]:.2f})"
    return " (" + " · ".join("–" if r is None else f"{r:.2f}" for r in ratios) + ")"


def _mark(fig: Figure, result: dict[str, Any]) -> str:
    """`` !`` where the figure is not trustworthy, `` *`` where a saturated machine
    flattered it (a lower bound for a maximum), else nothing."""
    scen = result.get(fig.scenario)
    if not isinstance(scen, dict):
        return ""
    if fig.fixed_rate is not None:
        entry = fixed_rate_entry(result, fig.scenario, fig.fixed_rate)
        if entry is not None:
            if not entry.get("passed", True):
                return " !"
            return " *" if entry.get("machine_saturated") else ""
    if fig.valid_key and scen.get(fig.valid_key) is False:
        return " !"
    if fig.valid_key == "valid" and scen.get("machine_saturated_at_best"):
        return " *"
    return ""


def _loadgen_share(fig: Figure, result: dict[str, Any]) -> float | None:
    """The load generators' share of all CPU in an equal-load row's step."""
    if fig.fixed_rate is None:
        return None
    entry = fixed_rate_entry(result, fig.scenario, fig.fixed_rate)
    share = None if entry is None else entry.get("loadgen_share")
    return float(share) if isinstance(share, int | float) else None


def _lg_text(share: float | None) -> str:
    return "" if share is None else f" lg {share:.0%}"


def _value_text(fig: Figure, value: float) -> str:
    return fig.fmt.format(value) if math.isfinite(value) else str(value)


def _cell(fig: Figure, result: dict[str, Any], ratios: Sequence[float | None]) -> str:
    """``value (ratios) mark lg share``; the ratios are to each reference in order."""
    if "error" in result and fig.get(result) is None:
        return "error"
    value = fig.get(result)
    if value is None:
        entry = fixed_rate_entry(result, fig.scenario, fig.fixed_rate or math.nan)
        return "– !" if entry is not None and entry.get("skipped") else "–"
    text = _value_text(fig, value) + _ratio_text(ratios) + _mark(fig, result)
    return text + _lg_text(_loadgen_share(fig, result))


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
    """ "python-socketio + Redis (ref)" -> "python-socketio", "floor (raw …) + NATS (ref)"
    -> "floor" (for the header)."""
    return label.split(" + ")[0].split(" (")[0]


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


def _references(
    present: Sequence[str], reference: str, second: str | None, floor: str | None
) -> tuple[list[str], list[str]]:
    """(references of every ratio, references of the efficiency rows): the floor first
    when it ran, then the plain reference; efficiency rows add the second reference."""
    refs = [r for r in (floor, reference) if r and r in present] or [reference]
    eff = refs + ([second] if second and second in present and second not in refs else [])
    return refs, eff


def _title(labels: dict[str, str], refs: list[str], eff: list[str]) -> str:
    title = "figure (ratio to " + " · to ".join(_short(labels.get(r, r)) for r in refs)
    if len(eff) > len(refs):
        title += "; efficiency also · to " + _short(labels.get(eff[-1], eff[-1]))
    return title + "; lg: load generators' share of all CPU in that step)"


def _render(header: list[str], rows: list[list[str]], notes: list[str]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    out = [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) for r in rows]
    if notes:
        out.append("")
        out += notes
    return "\n".join(out)


def _notes(results: dict[str, dict[str, Any]], labels: dict[str, str]) -> list[str]:
    notes = []
    for n, res in results.items():
        if "error" in res:
            notes.append(f"{labels[n]}: ERROR {res['error']}")
        if "skipped" in res:
            notes.append(f"{labels[n]}: skipped: {res['skipped']}")
        for scen in ("S1", "S2"):
            r = res.get(scen)
            if not isinstance(r, dict):
                continue
            if not r.get("valid", True):
                notes.append(f"{labels[n]} {scen}: ! {r['invalid_reason']}")
            elif r.get("machine_saturated_at_best"):
                notes.append(
                    f"{labels[n]} {scen}: * own max on a saturated machine "
                    f"({r['machine_at_best']}): the maximum is a lower bound and its "
                    "efficiency is flattered by batching; read the equal-load rows"
                )
            for entry in r.get("fixed_rates", ()):
                rate = entry["rate_msgs_per_s"]
                if not entry.get("passed", True):
                    notes.append(f"{labels[n]} {scen} @{rate:g} msg/s: ! {entry['why']}")
                elif entry.get("machine_saturated"):
                    notes.append(
                        f"{labels[n]} {scen} @{rate:g} msg/s: * saturated ({entry['saturation']})"
                    )
            if "fixed_rates" not in r and r.get("same_load_valid") is False:
                rate = r["same_load_rate_msgs_per_s"]
                notes.append(f"{labels[n]} {scen} @{rate:g} msg/s: ! {r['same_load_reason']}")
    return notes


def _footer(results: dict[str, dict[str, Any]], names: list[str]) -> list[list[str]]:
    return [
        ["loadgen max core / CPU share (S1 · S2)", *(_loadgen_cell(results[n]) for n in names)],
        ["foreign CPU max share (S1 · S2)", *(_foreign_cell(results[n]) for n in names)],
        [
            "server event loop (read from each process)",
            *(_LOOP_LABELS.get(loop := results[n].get("server_loop", "–"), loop) for n in names),
        ],
    ]


def table(
    results: dict[str, dict[str, Any]],
    labels: dict[str, str],
    figs: list[Figure],
    reference: str,
    server_loop: str | None = None,
    second_reference: str | None = None,
    floor: str | None = None,
) -> str:
    """Rows are figures, columns systems; each cell ``value (ratios)``.

    The ratios are to ``floor`` (when it ran) and to ``reference``; figures marked
    ``second_ratio`` (the efficiency rows) also to ``second_reference`` when it ran.
    Equal-load rows carry their step's load-generator CPU share (``lg``).
    ``server_loop`` is the event loop the Python servers were asked to run on; the
    footer shows what each ran on and warns where that differs.
    """
    names = list(results)
    refs, eff = _references(names, reference, second_reference, floor)
    rat = {r: ratios(results, figs, r) for r in eff}
    header = [_title(labels, refs, eff), *(labels[n] for n in names)]
    rows = [
        [
            f.label,
            *(
                _cell(f, results[n], [rat[r][n][f.key] for r in (eff if f.second_ratio else refs)])
                for n in names
            ),
        ]
        for f in figs
    ]
    rows += _footer(results, names)
    return _render(header, rows, _notes(results, labels) + loop_notes(results, labels, server_loop))


# -- repeats: medians of per-run values and ratios -----------------------------------


def _median(values: Sequence[float | None]) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.median(finite) if finite else None


def _span(values: Sequence[float | None]) -> tuple[float, float] | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return (min(finite), max(finite)) if finite else None


def summary(
    runs: Sequence[dict[str, dict[str, Any]]], figs: list[Figure], references: Sequence[str]
) -> dict[str, dict[str, dict[str, Any]]]:
    """{figure key: {system: {values, median, min, max, ratios: {ref: {median, min, max}}}}}.

    Ratios are taken within each run (both systems measured side by side), then their
    median across runs: the figure issue 17's targets are stated in.
    """
    per_run = [{ref: ratios(res, figs, ref) for ref in references} for res in runs]
    names = list(dict.fromkeys(n for res in runs for n in res))
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for f in figs:
        row: dict[str, dict[str, Any]] = {}
        for n in names:
            values = [f.get(res[n]) if n in res else None for res in runs]
            span = _span(values)
            entry: dict[str, Any] = {
                "values": values,
                "median": _median(values),
                "min": span[0] if span else None,
                "max": span[1] if span else None,
                "ratios": {},
            }
            for ref in references:
                rs = [pr[ref].get(n, {}).get(f.key) for pr in per_run]
                rspan = _span(rs)
                entry["ratios"][ref] = {
                    "values": rs,
                    "median": _median(rs),
                    "min": rspan[0] if rspan else None,
                    "max": rspan[1] if rspan else None,
                }
            row[n] = entry
        out[f.key] = row
    return out


def median_tables(
    runs: Sequence[dict[str, dict[str, Any]]],
    labels: dict[str, str],
    figs: list[Figure],
    reference: str,
    server_loop: str | None = None,
    second_reference: str | None = None,
    floor: str | None = None,
) -> str:
    """Two tables over ``runs``: medians (value, median per-run ratios, a mark if any run
    had it, the median lg share), then min–max of each value and of its first ratio;
    each run's notes follow, prefixed with the run's number."""
    names = list(dict.fromkeys(n for res in runs for n in res))
    present = [n for n in names if all(n in res for res in runs)]
    refs, eff = _references(present, reference, second_reference, floor)
    summ = summary(runs, figs, eff)
    k = len(runs)
    header = [_title(labels, refs, eff).replace("figure (", f"median of {k} runs (", 1)]
    header += [labels[n] for n in names]
    first_ref = _short(labels.get(refs[0], refs[0]))
    spread_header = [f"min–max of {k} runs (value (ratio to {first_ref}))"]
    spread_header += [labels[n] for n in names]
    rows, spread = [], []
    for f in figs:
        row, sp = [f.label], [f.label]
        for n in names:
            e = summ[f.key][n]
            if e["median"] is None:
                row.append("–")
                sp.append("–")
                continue
            used = eff if f.second_ratio else refs
            text = _value_text(f, e["median"])
            text += _ratio_text([e["ratios"][r]["median"] for r in used])
            text += "".join(sorted({_mark(f, res[n]) for res in runs if n in res}, reverse=True))
            shares = [_loadgen_share(f, res[n]) for res in runs if n in res]
            row.append(text + _lg_text(_median(shares)))
            r0 = e["ratios"][refs[0]]
            spread_text = f"{_value_text(f, e['min'])}–{_value_text(f, e['max'])}"
            if r0["min"] is not None:
                spread_text += f" ({r0['min']:.2f}–{r0['max']:.2f})"
            sp.append(spread_text)
        rows.append(row)
        spread.append(sp)
    notes: list[str] = []
    for i, res in enumerate(runs, 1):
        run_notes = _notes(res, labels) + loop_notes(res, labels, server_loop)
        notes += [f"run {i}: {note}" for note in run_notes]
    first = _render(header, rows, [])
    return first + "\n\n" + _render(spread_header, spread, notes)


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


# -- issue 17's targets --------------------------------------------------------------

EFFICIENCY_TARGET: float = 0.9
"""Deliveries per server CPU-second at every fixed rate, as a share of the floor's."""
P99_TARGET_MS: float = 5.0
"""S1 p99 at the latency rate: at most this many ms above the floor's."""
S3_TARGET_KB: float = 12.0


def targets(
    runs: Sequence[dict[str, dict[str, Any]]],
    figs: list[Figure],
    system: str,
    floor: str,
) -> list[str]:
    """Issue 17's targets for ``system`` against ``floor``, one line each, on the median
    over ``runs`` of each per-run ratio (or difference); empty if either did not run."""
    runs = [res for res in runs if system in res and floor in res]
    if not runs:
        return []
    summ = summary(runs, figs, [floor])
    lines = []

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    for f in figs:
        if f.fixed_rate is None or not any(f.scenario in res[system] for res in runs):
            continue  # not an equal-load row, or its scenario was not run
        ratio = summ[f.key][system]["ratios"][floor]
        if ratio["median"] is None:
            lines.append(f"{f.label.removesuffix(' ↑')}: no ratio to the floor (step missing)")
            continue
        spread = "" if len(runs) == 1 else f" (runs {ratio['min']:.2f}–{ratio['max']:.2f})"
        lines.append(
            f"{f.label.removesuffix(' ↑')}: {ratio['median']:.2f}× the floor{spread}, "
            f"target ≥ {EFFICIENCY_TARGET:g}: {verdict(ratio['median'] >= EFFICIENCY_TARGET)}"
        )
    p99 = next((f for f in figs if f.key == "s1_p99"), None)
    if p99 is not None:
        gaps = [
            (a - b)
            for res in runs
            if (a := p99.get(res[system])) is not None and (b := p99.get(res[floor])) is not None
        ]
        if gaps:
            gap = statistics.median(gaps)
            lines.append(
                f"{p99.label.removesuffix(' ↓')}: {gap:+.1f} ms against the floor, "
                f"target ≤ +{P99_TARGET_MS:g}: {verdict(gap <= P99_TARGET_MS)}"
            )
    kb = summ.get("s3_kb", {}).get(system, {}).get("median")
    if kb is not None:
        lines.append(
            f"S3 KB per idle connection: {kb:.1f}, target ≤ {S3_TARGET_KB:g}: "
            f"{verdict(kb <= S3_TARGET_KB)}"
        )
    return lines
