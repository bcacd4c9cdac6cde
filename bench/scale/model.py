"""The capacity model (issue 14, part 4): unit costs fitted from a bench-scale results JSON,
predictions for a workload, and the pods, NATS nodes and Helm values that follow.

Why a model and not a table of runs: an operator's workload (connections, rooms, publish
rate, fanout, churn) is never one we measured. Each figure the bench measures isolates one
cost (heartbeats of idle sockets, a delivery, a subscription...); the model adds them up
linearly. It is validated on a mixed configuration the fit never sees (the "validation"
section), and docs/capacity.md explains every formula and what it leaves out.

Nothing here holds a measured value: every unit cost comes from `fit(results)`.

    python -m bench.scale.model bench/results/scale-<stamp>.json [--markdown]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Final

from gateway.settings import EngineSettings, ListenSettings

US: Final = 1e-6
"""Microseconds of CPU per second -> cores."""
MIB: Final = 1 << 20
GIB: Final = 1 << 30
CHURN_NATS_NODES_DEFAULT: Final = 3
"""Nodes of the churn section's cluster when it does not say (the schema's topology)."""

# -- unit costs ------------------------------------------------------------------------


@dataclass(frozen=True)
class UnitCosts:
    """What one unit of each driver costs, per gateway process or per NATS node.

    CPU costs are in µs of CPU per event (cores = events/s × µs × 1e-6); memory in bytes.
    `sources` says, per field, which section and steps gave it and how (`fit`). A cost
    that could not be measured (section missing) is NaN, and predictions using it too.
    """

    # gateway CPU
    gw_base_cores: float
    """An idle gateway process with no client (NATS pings, peer heartbeats, timers)."""
    gw_cpu_us_per_ping: float
    """One Engine.IO heartbeat (ping out, pong in) of one idle connection."""
    ping_interval_s: float
    """The ping interval the heartbeat cost was measured with (information only)."""
    gw_cpu_us_per_message_in: float
    """A room message received from NATS: decode once, build the packet once."""
    gw_cpu_us_per_delivery: float
    """Handing that packet to one local member's socket."""
    gw_cpu_us_per_join_leave: float
    """A join of a fresh room and its leave (subscribe + unsubscribe on NATS)."""
    gw_cpu_us_per_connect: float
    """A new Socket.IO connection (handshake, its own subjects subscribed)."""
    # gateway memory
    gw_rss_base_bytes: float
    gw_bytes_per_conn: float
    """An idle websocket connection, member of one (shared) room."""
    gw_bytes_per_room: float
    """A room held by the gateway (its NATS subscription and member set)."""
    # NATS CPU (sums over the cluster's nodes)
    nats_base_cores: float
    """One NATS node of the cluster with gateways and clients but no traffic (route and
    client pings, JetStream's own housekeeping)."""
    nats_cpu_us_per_message_published: float
    """Receiving one published message."""
    nats_cpu_us_per_message_out: float
    """Sending one message to one interested gateway, its route hop included."""
    nats_cpu_us_per_join_leave: float
    nats_cpu_us_per_connect: float
    # NATS memory (per node: every node holds every subscription's interest)
    nats_rss_base_bytes: float
    nats_bytes_per_conn: float
    """A connection's own subscriptions (its socket subject and own-id room)."""
    nats_bytes_per_subscription: float
    """One room subscription of one gateway."""
    # the app side (information: the publisher is the user's worker)
    publisher_cpu_us_per_message: float
    sources: dict[str, str] = field(default_factory=dict, compare=False)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _Row:
    key: str
    label: str
    unit: str
    scale: float
    """Divide the value by this for display."""


COST_ROWS: Final[tuple[_Row, ...]] = (
    _Row("gw_base_cores", "gateway idle process (no client)", "cores", 1.0),
    _Row("gw_cpu_us_per_ping", "gateway heartbeat, per connection per ping", "µs", 1.0),
    _Row("gw_cpu_us_per_message_in", "gateway, per NATS message in", "µs", 1.0),
    _Row("gw_cpu_us_per_delivery", "gateway, per delivery to a socket", "µs", 1.0),
    _Row("gw_cpu_us_per_join_leave", "gateway, per join+leave (fresh room)", "µs", 1.0),
    _Row("gw_cpu_us_per_connect", "gateway, per connect", "µs", 1.0),
    _Row("gw_rss_base_bytes", "gateway RSS, base per process", "MiB", MIB),
    _Row("gw_bytes_per_conn", "gateway RSS per idle connection", "KiB", 1024),
    _Row("gw_bytes_per_room", "gateway RSS per room held", "KiB", 1024),
    _Row("nats_base_cores", "NATS node idle (in a cluster, no traffic)", "cores", 1.0),
    _Row("nats_cpu_us_per_message_published", "NATS cluster, per published message", "µs", 1.0),
    _Row("nats_cpu_us_per_message_out", "NATS cluster, per message to a gateway", "µs", 1.0),
    _Row("nats_cpu_us_per_join_leave", "NATS cluster, per join+leave", "µs", 1.0),
    _Row("nats_cpu_us_per_connect", "NATS cluster, per connect", "µs", 1.0),
    _Row("nats_rss_base_bytes", "NATS RSS, base per node", "MiB", MIB),
    _Row("nats_bytes_per_conn", "NATS RSS per connection, per node", "B", 1.0),
    _Row("nats_bytes_per_subscription", "NATS RSS per room subscription, per node", "B", 1.0),
    _Row("publisher_cpu_us_per_message", "publisher (worker), per message", "µs", 1.0),
)


# -- least squares -----------------------------------------------------------------------


def _solve(a: list[list[float]], b: list[float]) -> list[float] | None:
    """Gaussian elimination with partial pivoting; None if singular."""
    n = len(b)
    m = [[*row, rhs] for row, rhs in zip(a, b, strict=True)]
    scale = max((abs(x) for row in a for x in row), default=0.0) or 1.0
    for col in range(n):
        piv = max(range(col, n), key=lambda r: abs(m[r][col]))
        if abs(m[piv][col]) <= 1e-12 * scale:
            return None
        m[col], m[piv] = m[piv], m[col]
        for r in range(n):
            if r != col:
                f = m[r][col] / m[col][col]
                for c in range(col, n + 1):
                    m[r][c] -= f * m[col][c]
    return [m[i][n] / m[i][i] for i in range(n)]


def _lstsq(cols: Sequence[Sequence[float]], y: Sequence[float]) -> list[float] | None:
    """Ordinary least squares y ≈ Σ coef_j × cols[j] (no implicit intercept), by the
    normal equations, each column scaled to unit size first; None if rank-deficient."""
    norms = [math.sqrt(sum(v * v for v in c)) or 1.0 for c in cols]
    scaled = [[v / n for v in c] for c, n in zip(cols, norms, strict=True)]
    k = len(cols)
    ata = [[sum(p * q for p, q in zip(scaled[i], scaled[j], strict=True)) for j in range(k)]
           for i in range(k)]  # fmt: skip
    aty = [sum(p * q for p, q in zip(scaled[i], y, strict=True)) for i in range(k)]
    sol = _solve(ata, aty)
    if sol is None:
        return None
    # rank check on the scaled Gram matrix: near-collinear columns are not separable
    if k > 1 and _min_eig_sym(ata) < 1e-8:
        return None
    return [s / n for s, n in zip(sol, norms, strict=True)]


def _min_eig_sym(m: list[list[float]]) -> float:
    """Smallest eigenvalue of a small symmetric PSD matrix (power iteration on shift)."""
    k = len(m)
    top = sum(m[i][i] for i in range(k))  # trace >= largest eigenvalue
    shifted = [[(top if i == j else 0.0) - m[i][j] for j in range(k)] for i in range(k)]
    v = [1.0 / math.sqrt(k)] * k
    lam = 0.0
    for _ in range(200):
        w = [sum(shifted[i][j] * v[j] for j in range(k)) for i in range(k)]
        norm = math.sqrt(sum(x * x for x in w))
        if norm == 0.0:
            return top
        v = [x / norm for x in w]
        lam = norm
    return top - lam


def nnls(
    cols: Sequence[Sequence[float]], y: Sequence[float]
) -> tuple[list[float], list[int]] | None:
    """Non-negative least squares for a few columns: the best of the unconstrained fits
    on every subset of columns whose coefficients are all ≥ 0 (a cost cannot be negative;
    noise can make an unconstrained fit say so). Returns (coefs, columns used) or None
    when no subset is separable."""
    best: tuple[float, list[float], list[int]] | None = None
    k = len(cols)
    for size in range(k, 0, -1):
        for subset in itertools.combinations(range(k), size):
            sol = _lstsq([cols[i] for i in subset], y)
            if sol is None or any(c < 0 for c in sol):
                continue
            coefs = [0.0] * k
            for i, c in zip(subset, sol, strict=True):
                coefs[i] = c
            resid = sum(
                (yy - sum(coefs[j] * cols[j][r] for j in range(k))) ** 2 for r, yy in enumerate(y)
            )
            if best is None or resid < best[0] - 1e-12 * (1 + abs(best[0])):
                best = (resid, coefs, list(subset))
    return None if best is None else (best[1], best[2])


def fit_costs(
    cols: Sequence[Sequence[float]], y: Sequence[float], names: Sequence[str], primary: int
) -> tuple[list[float], str]:
    """Non-negative least squares of y on `cols` when the columns are separable (enough
    distinct steps); else everything on the `primary` column through 0. Returns the
    coefficients and how they were found, for `UnitCosts.sources`."""
    k = len(cols)
    if len(y) >= k and _lstsq(cols, y) is not None:
        fitted = nnls(cols, y)
        if fitted is not None:
            coefs, used = fitted
            how = "least squares on " + " + ".join(names)
            dropped = [names[i] for i in range(k) if i not in used]
            if dropped:
                how += f" ({', '.join(dropped)} < 0 unconstrained: set to 0)"
            return coefs, how
    x = cols[primary]
    coefs = [0.0] * k
    den = sum(v * v for v in x)
    coefs[primary] = sum(a * b for a, b in zip(x, y, strict=True)) / den if den else math.nan
    return coefs, f"not separable from these steps: all on {names[primary]} (slope through 0)"


# -- fit -------------------------------------------------------------------------------


def _f(d: Mapping[str, Any], key: str) -> float:
    v = d.get(key)
    return float(v) if isinstance(v, int | float) else math.nan


def _f_sum(d: Mapping[str, Any], key: str) -> float:
    """Sum of a list of numbers under ``key``; NaN if absent."""
    v = d.get(key)
    if not isinstance(v, list) or not v:
        return math.nan
    return float(sum(float(x) for x in v))


def _mean(xs: Iterable[float]) -> float:
    vals = [x for x in xs if not math.isnan(x)]
    return sum(vals) / len(vals) if vals else math.nan


def _fmt_list(xs: Iterable[Any]) -> str:
    return ", ".join(f"{x:g}" if isinstance(x, float) else str(x) for x in xs)


def _fit_connections(
    sec: Mapping[str, Any] | None, out: dict[str, float], src: dict[str, str]
) -> None:
    steps = [s for s in (sec or {}).get("steps", []) if s.get("conns")]
    keys = ("gw_rss_base_bytes", "gw_bytes_per_conn", "gw_base_cores", "gw_cpu_us_per_ping",
            "ping_interval_s", "nats_rss_base_bytes", "nats_bytes_per_conn")  # fmt: skip
    if not steps:
        for k in keys:
            out[k] = math.nan
            src[k] = "not measured (no 'connections' steps)"
        return
    assert sec is not None
    conns = [float(s["conns"]) for s in steps]
    procs = [float(s.get("gateway_processes", 1)) for s in steps]
    where = f"connections steps conns={_fmt_list(int(c) for c in conns)}"
    ping = _f(sec, "ping_interval_s")
    out["ping_interval_s"] = ping
    src["ping_interval_s"] = "connections.ping_interval_s"

    base = [_f(s, "gateway_rss_base_bytes") for s in steps]
    out["gw_rss_base_bytes"] = _mean(b / p for b, p in zip(base, procs, strict=True))
    src["gw_rss_base_bytes"] = f"{where}: mean of gateway_rss_base_bytes / gateway_processes"
    grow = [_f(s, "gateway_rss_bytes") - b for s, b in zip(steps, base, strict=True)]
    out["gw_bytes_per_conn"] = sum(g * c for g, c in zip(grow, conns, strict=True)) / sum(
        c * c for c in conns
    )
    src["gw_bytes_per_conn"] = (
        f"{where}: least-squares slope through 0 of gateway_rss_bytes - gateway_rss_base_bytes "
        "vs conns"
    )

    idle = [_f(s, "idle_cpu_cores") for s in steps]
    (b0, per_conn), how = fit_costs(
        [procs, conns], idle, ["base × gateway_processes", "per_conn × conns"], 1
    )
    how = f"idle_cpu_cores = {how}"
    out["gw_base_cores"] = b0
    src["gw_base_cores"] = f"{where}: {how}"
    out["gw_cpu_us_per_ping"] = per_conn / US * ping
    src["gw_cpu_us_per_ping"] = f"{where}: {how}; × ping interval {ping:g} s"

    nats = [_f(s, "nats_rss_bytes") for s in steps]
    (nb, nper), how = fit_costs([[1.0] * len(steps), conns], nats, ["base", "per_conn × conns"], 1)
    how = f"nats_rss_bytes (one NATS node) = {how}"
    out["nats_rss_base_bytes"] = nb
    out["nats_bytes_per_conn"] = nper
    src["nats_rss_base_bytes"] = src["nats_bytes_per_conn"] = f"{where}: {how}"


def _fit_cluster(sec: Mapping[str, Any] | None, out: dict[str, float], src: dict[str, str]) -> None:
    steps = [s for s in (sec or {}).get("steps", []) if s.get("publish_rate_per_s")]
    keys = ("gw_cpu_us_per_message_in", "gw_cpu_us_per_delivery", "nats_base_cores",
            "nats_cpu_us_per_message_published", "nats_cpu_us_per_message_out",
            "publisher_cpu_us_per_message")  # fmt: skip
    if not steps:
        for k in keys:
            out[k] = math.nan
            src[k] = "not measured (no 'cluster' steps)"
        return
    where = "cluster steps (G, k)=" + ", ".join(
        f"({s['gateways']},{s['interested_gateways']})" for s in steps
    )
    # the interested gateways' own idle cost, from the gateways of the same steps that
    # had no member (layout "interested 1 of G")
    idle_vals = [
        _f(s, "uninterested_gateway_cpu_cores")
        for s in steps
        if s["interested_gateways"] < s["gateways"]
    ]
    idle = _mean(idle_vals)
    idle_how = "− k × the uninterested gateways' mean CPU (idle)"
    if math.isnan(idle):
        idle = 0.0
        idle_how = "(no uninterested gateway measured: idle CPU folded in)"
    x_msg: list[float] = []
    x_del: list[float] = []
    y_gw: list[float] = []
    for s in steps:
        kk = float(s["interested_gateways"])
        rate = float(s["publish_rate_per_s"])
        deliv = _f(s, "deliveries_per_s")
        if math.isnan(deliv):
            deliv = rate * float(s.get("fanout", 0))
        per_del = _f(s, "gateway_cpu_us_per_delivery")
        if not math.isnan(per_del):
            interested = per_del * deliv * US
        else:
            cores = [float(c) for c in s.get("gateway_cpu_cores", [])]
            interested = sum(cores) - (len(cores) - kk) * _f(s, "uninterested_gateway_cpu_cores")
        x_msg.append(kk * rate)
        x_del.append(deliv)
        y_gw.append(interested - kk * idle)
    (c_msg, c_del), how = fit_costs([x_msg, x_del], y_gw, ["a × messages in", "b × deliveries"], 1)
    how = f"Σ interested gateways' CPU {idle_how} = {how}"
    out["gw_cpu_us_per_message_in"] = c_msg / US
    out["gw_cpu_us_per_delivery"] = c_del / US
    src["gw_cpu_us_per_message_in"] = src["gw_cpu_us_per_delivery"] = f"{where}: {how}"

    rates = [float(s["publish_rate_per_s"]) for s in steps]
    outs = [float(s["interested_gateways"]) * r for s, r in zip(steps, rates, strict=True)]
    # each step's idle window (same processes, nothing published) is the cluster's base
    idle_nats = [_f_sum(s, "nats_idle_cpu_cores") for s in steps]
    nodes = [float(len(s.get("nats_cpu_cores", [])) or 1) for s in steps]
    base_per_node = _mean(i / n for i, n in zip(idle_nats, nodes, strict=True) if not math.isnan(i))
    base_how = "mean over steps of Σ nats_idle_cpu_cores / nodes"
    if math.isnan(base_per_node):
        base_per_node = 0.0
        base_how = "no idle window measured: 0 (idle CPU folded into the per-message costs)"
    out["nats_base_cores"] = base_per_node
    src["nats_base_cores"] = f"{where}: {base_how}"
    y_nats = [
        sum(float(c) for c in s.get("nats_cpu_cores", [])) - base_per_node * n
        for s, n in zip(steps, nodes, strict=True)
    ]
    (n_pub, n_out), how = fit_costs(
        [rates, outs], y_nats, ["a × published", "b × messages to gateways"], 0
    )
    how = f"Σ NATS nodes' CPU − nodes × base = {how}"
    out["nats_cpu_us_per_message_published"] = n_pub / US
    out["nats_cpu_us_per_message_out"] = n_out / US
    src["nats_cpu_us_per_message_published"] = src["nats_cpu_us_per_message_out"] = (
        f"{where}: {how}"
    )
    out["publisher_cpu_us_per_message"] = _mean(
        _f(s, "publisher_cpu_cores") / r / US for s, r in zip(steps, rates, strict=True)
    )
    src["publisher_cpu_us_per_message"] = f"{where}: mean publisher_cpu_cores / publish rate"


def _fit_churn(
    sec: Mapping[str, Any] | None,
    conns: Mapping[str, Any] | None,
    out: dict[str, float],
    src: dict[str, str],
) -> None:
    sec = sec or {}
    direct = {
        "gw_cpu_us_per_join_leave": "gateway_cpu_us_per_join_leave",
        "nats_cpu_us_per_join_leave": "nats_cpu_us_per_join_leave",
        "gw_cpu_us_per_connect": "gateway_cpu_us_per_connect",
        "nats_cpu_us_per_connect": "nats_cpu_us_per_connect",
        "gw_bytes_per_room": "gateway_bytes_per_room",
    }
    for ours, theirs in direct.items():
        out[ours] = _f(sec, theirs)
        src[ours] = f"churn.{theirs}" if theirs in sec else "not measured (no 'churn' section)"
    if math.isnan(out["gw_cpu_us_per_connect"]):
        steps = (conns or {}).get("steps", [])
        out["gw_cpu_us_per_connect"] = _mean(_f(s, "connect_cpu_us_per_connect") for s in steps)
        src["gw_cpu_us_per_connect"] = "connections steps: mean connect_cpu_us_per_connect"
    nodes = sec.get("nats_nodes", CHURN_NATS_NODES_DEFAULT)
    out["nats_bytes_per_subscription"] = _f(sec, "nats_bytes_per_subscription") / float(nodes)
    src["nats_bytes_per_subscription"] = (
        f"churn.nats_bytes_per_subscription (sum over {nodes} nodes) / {nodes}"
        if "nats_bytes_per_subscription" in sec
        else "not measured (no 'churn' section)"
    )


def fit(results: Mapping[str, Any]) -> UnitCosts:
    """Unit costs from the "connections", "cluster" and "churn" sections of a results JSON
    (the schema of bench/scale; `sources` says which step gave each one and how)."""
    out: dict[str, float] = {}
    src: dict[str, str] = {}
    _fit_connections(results.get("connections"), out, src)
    _fit_cluster(results.get("cluster"), out, src)
    _fit_churn(results.get("churn"), results.get("connections"), out, src)
    return UnitCosts(**out, sources=src)


# -- predict ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    """A deployment and its load. Rates are totals over the deployment."""

    conns: int
    gateways: int
    nats_nodes: int
    rooms: int
    rooms_per_socket: float
    publish_rate_per_s: float
    """Messages published per second, uniformly over the rooms."""
    fanout: float
    """Local members each message reaches, summed over gateways (deliveries per message)."""
    gateways_per_room: float | None = None
    """Gateways holding a member of a room; None: expected under random placement."""
    joins_per_s: float = 0.0
    """Joins of a room the gateway did not hold (each with its leave later)."""
    connects_per_s: float = 0.0
    ping_interval_s: float | None = None
    """Engine.IO ping interval; None: the gateway's default."""

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Workload:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    @property
    def members_per_room(self) -> float:
        return self.conns * self.rooms_per_socket / self.rooms if self.rooms else 0.0

    def spread(self) -> float:
        """Gateways holding each room: as given, or the expectation when each socket
        lands on a random gateway: G × (1 − (1 − 1/G)^members)."""
        g = self.gateways
        if self.gateways_per_room is not None:
            return min(float(self.gateways_per_room), float(g))
        return float(g * (1.0 - (1.0 - 1.0 / g) ** self.members_per_room))


def predict(costs: UnitCosts, w: Workload, curve: RateCurve | None = None) -> dict[str, float]:
    """Gateway CPU and RSS (mean per gateway) and NATS CPU and RSS (sum over the nodes),
    the keys of "validation.measured", plus totals and the loads they follow from.
    With a `curve`, the message terms are scaled by what the rate check measured at the
    workload's rates (without: linear, an upper bound above the fitted rate)."""
    g = float(w.gateways)
    ping = w.ping_interval_s or EngineSettings().ping_interval_s
    spread = w.spread()
    conns_g = w.conns / g
    msgs_in_g = w.publish_rate_per_s * spread / g
    deliveries = w.publish_rate_per_s * w.fanout
    rooms_g = w.rooms * spread / g
    gw_scale = curve.gateway(msgs_in_g) if curve else 1.0
    nats_scale = curve.nats(w.publish_rate_per_s) if curve else 1.0
    gw_cpu = costs.gw_base_cores + US * (
        conns_g / ping * costs.gw_cpu_us_per_ping
        + gw_scale
        * (
            msgs_in_g * costs.gw_cpu_us_per_message_in
            + deliveries / g * costs.gw_cpu_us_per_delivery
        )
        + w.joins_per_s / g * costs.gw_cpu_us_per_join_leave
        + w.connects_per_s / g * costs.gw_cpu_us_per_connect
    )
    gw_rss = (
        costs.gw_rss_base_bytes
        + conns_g * costs.gw_bytes_per_conn
        + rooms_g * costs.gw_bytes_per_room
    )
    nats_cpu = w.nats_nodes * costs.nats_base_cores + US * (
        nats_scale
        * (
            w.publish_rate_per_s * costs.nats_cpu_us_per_message_published
            + w.publish_rate_per_s * spread * costs.nats_cpu_us_per_message_out
        )
        + w.joins_per_s * costs.nats_cpu_us_per_join_leave
        + w.connects_per_s * costs.nats_cpu_us_per_connect
    )
    room_subs = w.rooms * spread
    nats_rss = w.nats_nodes * (
        costs.nats_rss_base_bytes
        + w.conns * costs.nats_bytes_per_conn
        + room_subs * costs.nats_bytes_per_subscription
    )
    return {
        "gateway_cpu_cores": gw_cpu,
        "gateway_rss_bytes": gw_rss,
        "nats_cpu_cores": nats_cpu,
        "nats_rss_bytes": nats_rss,
        "gateway_cpu_cores_total": gw_cpu * g,
        "gateway_rss_bytes_total": gw_rss * g,
        "publisher_cpu_cores": US * w.publish_rate_per_s * costs.publisher_cpu_us_per_message,
        "conns_per_gateway": conns_g,
        "rooms_per_gateway": rooms_g,
        "gateways_per_room": spread,
        "messages_in_per_gateway_per_s": msgs_in_g,
        "deliveries_per_s": deliveries,
        "gateway_rate_scale": gw_scale,
        "nats_rate_scale": nats_scale,
    }


MEASURED_KEYS: Final = (
    "gateway_cpu_cores",
    "gateway_rss_bytes",
    "nats_cpu_cores",
    "nats_rss_bytes",
)


def validation(costs: UnitCosts, results: Mapping[str, Any]) -> dict[str, dict[str, float]] | None:
    """Predicted vs measured for the "validation" section (None without one):
    {figure: {predicted, measured, error_pct}}, error relative to the measured value."""
    sec = results.get("validation")
    if not sec or "workload" not in sec or "measured" not in sec:
        return None
    pred = predict(costs, Workload.from_dict(sec["workload"]))
    rows: dict[str, dict[str, float]] = {}
    for key in MEASURED_KEYS:
        m = _f(sec["measured"], key)
        p = pred[key]
        err = (p - m) / m * 100.0 if m else math.nan
        rows[key] = {"predicted": p, "measured": m, "error_pct": err}
    return rows


def rate_check(costs: UnitCosts, results: Mapping[str, Any]) -> list[dict[str, float]]:
    """The cluster section's rate steps (one layout at higher publish rates, not fitted)
    against what the fitted costs say: measured / predicted CPU of the interested
    gateways and of the NATS cluster. Below 1: the linear model over-predicts there (the
    per-message costs include a wake-up of each process that batching amortizes)."""
    rows: list[dict[str, float]] = []
    for st in (results.get("cluster") or {}).get("rate_steps", []):
        interested = [int(g) for g in st.get("interested", [])]
        cores = [float(c) for c in st["gateway_cpu_cores"]]
        idle = [float(c) for c in st.get("gateway_idle_cpu_cores", [0.0] * len(cores))]
        rate = float(st["publish_rate_per_s"])
        deliveries = float(st["deliveries_per_s"])
        k = float(len(interested))
        gw_pred = sum(idle[g] for g in interested) + US * (
            k * rate * costs.gw_cpu_us_per_message_in + deliveries * costs.gw_cpu_us_per_delivery
        )
        gw_meas = sum(cores[g] for g in interested)
        nodes = len(st["nats_cpu_cores"])
        nats_pred = nodes * costs.nats_base_cores + US * rate * (
            costs.nats_cpu_us_per_message_published + k * costs.nats_cpu_us_per_message_out
        )
        nats_meas = sum(float(c) for c in st["nats_cpu_cores"])
        gw_idle = sum(idle[g] for g in interested)
        nats_idle = nodes * costs.nats_base_cores
        rows.append(
            {
                "publish_rate_per_s": rate,
                "deliveries_per_s": deliveries,
                "gateway_cpu_cores_measured": gw_meas,
                "gateway_cpu_cores_predicted": gw_pred,
                "gateway_ratio": gw_meas / gw_pred if gw_pred else math.nan,
                "nats_cpu_cores_measured": nats_meas,
                "nats_cpu_cores_predicted": nats_pred,
                "nats_ratio": nats_meas / nats_pred if nats_pred else math.nan,
                "gateway_messages_in_per_s": rate,  # each interested gateway gets every one
                "gateway_traffic_ratio": (gw_meas - gw_idle) / (gw_pred - gw_idle),
                "nats_traffic_ratio": (nats_meas - nats_idle) / (nats_pred - nats_idle),
            }
        )
    return rows


@dataclass(frozen=True)
class RateCurve:
    """How much of the linear traffic cost is left at a higher rate (the rate check's
    measured / predicted, idle excluded), interpolated between the measured rates: 1.0
    at or below the rate the costs were fitted at, the last measured ratio beyond the
    last measured rate (the ratio still falls there, so this stays conservative)."""

    fitted_rate: float
    gateway_points: tuple[tuple[float, float], ...] = ()
    """(messages in per second per gateway, ratio)."""
    nats_points: tuple[tuple[float, float], ...] = ()
    """(messages published per second, ratio)."""

    @staticmethod
    def _at(points: Sequence[tuple[float, float]], base: float, x: float) -> float:
        pts = [(base, 1.0), *sorted(p for p in points if p[0] > base)]
        if x <= pts[0][0]:
            return 1.0
        for (x0, y0), (x1, y1) in itertools.pairwise(pts):
            if x <= x1:
                return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
        return pts[-1][1]

    def gateway(self, messages_in_per_s: float) -> float:
        return self._at(self.gateway_points, self.fitted_rate, messages_in_per_s)

    def nats(self, published_per_s: float) -> float:
        return self._at(self.nats_points, self.fitted_rate, published_per_s)


def rate_curve(costs: UnitCosts, results: Mapping[str, Any]) -> RateCurve | None:
    """The curve of the run's rate check; None without one."""
    rows = rate_check(costs, results)
    steps = (results.get("cluster") or {}).get("steps", [])
    if not rows or not steps:
        return None
    fitted = _mean(float(s["publish_rate_per_s"]) for s in steps)
    return RateCurve(
        fitted_rate=fitted,
        gateway_points=tuple(
            (r["gateway_messages_in_per_s"], min(1.0, r["gateway_traffic_ratio"])) for r in rows
        ),
        nats_points=tuple(
            (r["publish_rate_per_s"], min(1.0, r["nats_traffic_ratio"])) for r in rows
        ),
    )


def rate_check_table(rows: Sequence[Mapping[str, float]], md: bool = False) -> str:
    out = [
        [
            f"{r['publish_rate_per_s']:,.0f}",
            f"{r['deliveries_per_s']:,.0f}",
            f"{_num(r['gateway_cpu_cores_measured'])} / {_num(r['gateway_cpu_cores_predicted'])}",
            f"{r['gateway_ratio']:.2f}",
            f"{_num(r['nats_cpu_cores_measured'])} / {_num(r['nats_cpu_cores_predicted'])}",
            f"{r['nats_ratio']:.2f}",
        ]
        for r in rows
    ]
    header = ["msg/s", "deliveries/s", "gateway cores measured / predicted", "ratio",
              "NATS cores measured / predicted", "ratio"]  # fmt: skip
    return _table(header, out, md)


# -- size ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PodLimits:
    """What one pod may use. Defaults are choices to state, not measurements."""

    gateway_cores: float = 1.0
    """A gateway is one Python event loop: more than one core per process is not used."""
    cpu_target: float = 0.6
    """Share of gateway_cores the steady peak may use (the HPA target): room for bursts."""
    gateway_memory_max_bytes: int = 4 * GIB
    memory_headroom: float = 1.5
    """Memory request = predicted RSS × this (GC, send buffers of slow clients, bursts)."""
    nofile: int = 65536
    """RLIMIT_NOFILE of the gateway container: one descriptor per client connection."""
    fd_reserve: int = field(default_factory=lambda: ListenSettings().fd_reserve)
    other_fds: int = 64
    """Descriptors the process holds besides clients and the reserve (listeners, NATS, logs)."""
    max_conns_per_pod: int | None = None
    """A policy cap (what a lost pod sends reconnecting at once); None: fds only."""
    min_replicas: int = 2
    spare_replicas: int = 1
    """Pods beyond the need, so one pod lost or drained keeps the peak served."""
    hpa_burst: float = 2.0
    """HPA maxReplicas = replicas × this (publish bursts; sockets stay where they are)."""
    nats_cores: float = 2.0
    nats_cpu_target: float = 0.6
    nats_memory_max_bytes: int = 8 * GIB
    nats_min_nodes: int = 3

    @property
    def conns_cap(self) -> int:
        fd_cap = self.nofile - self.fd_reserve - self.other_fds
        return fd_cap if self.max_conns_per_pod is None else min(fd_cap, self.max_conns_per_pod)


@dataclass(frozen=True)
class Sizing:
    gateways: int
    """Replicas for the peak, spare included."""
    gateways_needed: dict[str, int]
    """The least replicas each limit alone asks for (cpu, memory, conns)."""
    nats_nodes: int
    workload: Workload
    """The target with the chosen gateways and NATS nodes."""
    prediction: dict[str, float]
    gateway_values: dict[str, Any]
    """sailcast-gateway chart values (deploy/helm/sailcast-gateway/values.yaml keys)."""
    nats_values: dict[str, Any]
    """NATS chart values (deploy/nats-values.yaml keys)."""
    notes: list[str]


def _mi(n: float) -> str:
    return f"{math.ceil(n / MIB / 64) * 64}Mi"  # 64 MiB steps


def _replace(w: Workload, **kw: Any) -> Workload:
    return Workload(**{**asdict(w), **kw})


def size(
    costs: UnitCosts,
    target: Workload,
    limits: PodLimits | None = None,
    curve: RateCurve | None = None,
) -> Sizing:
    """Gateway replicas and NATS nodes for `target` (its gateways and nats_nodes are
    ignored), the smallest counts within every limit, rounded up, and the Helm values;
    `curve` as in `predict`."""
    lim = limits or PodLimits()
    if any(math.isnan(v) for v in asdict(costs).values() if isinstance(v, float)):
        raise ValueError("some unit costs were not measured (NaN): cannot size")
    usable = min(lim.gateway_cores, 1.0) * lim.cpu_target
    mem_cap = lim.gateway_memory_max_bytes / lim.memory_headroom
    cap = lim.conns_cap
    if cap <= 0:
        raise ValueError("no descriptor left for clients: raise nofile")
    notes: list[str] = []
    need = {"conns": max(1, math.ceil(target.conns / cap))}

    def fits(g: int, key: str) -> bool:
        p = predict(costs, _replace(target, gateways=g, nats_nodes=lim.nats_min_nodes), curve)
        return (
            (p["gateway_cpu_cores"] <= usable)
            if key == "cpu"
            else (p["gateway_rss_bytes"] <= mem_cap)
        )

    for key in ("cpu", "memory"):
        g, limit = 1, 1 << 20
        while g <= limit and not fits(g, key):
            g = g * 2
        if g > limit:
            raise ValueError(f"no replica count fits the {key} limit (base cost over it?)")
        lo = g // 2 + 1 if g > 1 else 1  # binary search the least fitting count in (g/2, g]
        hi = g
        while lo < hi:
            mid = (lo + hi) // 2
            if fits(mid, key):
                hi = mid
            else:
                lo = mid + 1
        need[key] = lo
    needed = max(need.values())
    gateways = max(lim.min_replicas, needed + lim.spare_replicas)
    w = _replace(target, gateways=gateways, nats_nodes=lim.nats_min_nodes)
    pred = predict(costs, w, curve)
    nats_usable = lim.nats_cores * lim.nats_cpu_target - costs.nats_base_cores
    if nats_usable <= 0:
        raise ValueError("an idle NATS node uses more than the CPU target")
    traffic = pred["nats_cpu_cores"] - lim.nats_min_nodes * costs.nats_base_cores
    nodes = max(lim.nats_min_nodes, math.ceil(traffic / nats_usable))
    w = _replace(w, nats_nodes=nodes)
    pred = predict(costs, w, curve)
    nats_node_rss = pred["nats_rss_bytes"] / nodes
    if nats_node_rss * lim.memory_headroom > lim.nats_memory_max_bytes:
        notes.append(
            "NATS memory per node is over the limit: every node holds every subscription, "
            "so more nodes do not help; give the nodes more memory"
        )
    per_pod_peak = math.ceil(target.conns / max(1, gateways - lim.spare_replicas))
    max_conns = min(cap, max(per_pod_peak, math.ceil(target.conns / gateways)))
    gw_mem = pred["gateway_rss_bytes"] * lim.memory_headroom
    # with one pod lost, the others hold its sockets: size memory for that
    lost = predict(costs, _replace(w, gateways=max(1, gateways - lim.spare_replicas)), curve)
    gw_mem = max(gw_mem, lost["gateway_rss_bytes"] * lim.memory_headroom)
    gateway_values: dict[str, Any] = {
        "replicaCount": gateways,
        "resources": {
            "requests": {
                "cpu": f"{round(min(lim.gateway_cores, 1.0) * 1000)}m",
                "memory": _mi(gw_mem),
            },
            "limits": {"memory": _mi(gw_mem)},
        },
        "autoscaling": {
            "enabled": True,
            "minReplicas": gateways,
            "maxReplicas": max(gateways + 1, math.ceil(gateways * lim.hpa_burst)),
            "targetCPUUtilizationPercentage": round(lim.cpu_target * 100),
        },
        "gateway": {"extraConfig": {"SAILCAST_MAX_CONNECTIONS": str(max_conns)}},
    }
    nats_mem = nats_node_rss * lim.memory_headroom
    nats_values: dict[str, Any] = {
        "config": {"cluster": {"enabled": True, "replicas": nodes}},
        "container": {
            "env": {"GOMEMLIMIT": f"{math.floor(nats_mem * 0.9 / MIB)}MiB"},
            "resources": {
                "requests": {"cpu": f"{round(lim.nats_cores * 1000)}m", "memory": _mi(nats_mem)},
                "limits": {"memory": _mi(nats_mem)},
            },
        },
    }
    notes.append(
        "minReplicas = the peak's replicas: sockets do not move to new pods, so memory and "
        "descriptors do not follow the HPA; it adds pods for CPU bursts only"
    )
    return Sizing(gateways, need, nodes, w, pred, gateway_values, nats_values, notes)


# -- rendering -------------------------------------------------------------------------


def _num(v: float, digits: int = 3) -> str:
    if math.isnan(v):
        return "n/a"
    if v == 0:
        return "0"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{digits}g}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], md: bool) -> str:
    if md:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    fmt: Callable[[Sequence[str]], str] = lambda r: "  ".join(  # noqa: E731
        str(x).ljust(wd) for x, wd in zip(r, widths, strict=True)
    ).rstrip()
    return "\n".join([fmt(header), fmt(["-" * wd for wd in widths]), *map(fmt, rows)])


def _yaml(d: Mapping[str, Any], indent: int = 0) -> list[str]:
    out: list[str] = []
    for k, v in d.items():
        pad = "  " * indent
        if isinstance(v, Mapping):
            out.append(f"{pad}{k}:")
            out += _yaml(v, indent + 1)
        elif isinstance(v, bool):
            out.append(f"{pad}{k}: {'true' if v else 'false'}")
        elif isinstance(v, str):
            out.append(f'{pad}{k}: "{v}"')
        else:
            out.append(f"{pad}{k}: {v}")
    return out


def costs_table(costs: UnitCosts, md: bool = False) -> str:
    rows = []
    for r in COST_ROWS:
        v = getattr(costs, r.key)
        rows.append([r.label, _num(v / r.scale), r.unit, costs.sources.get(r.key, "")])
    return _table(["unit cost", "value", "unit", "from"], rows, md)


def _fig(key: str, v: float) -> str:
    if key.endswith("_bytes"):
        return f"{_num(v / MIB)} MiB"
    return f"{_num(v)} cores"


def validation_table(rows: Mapping[str, Mapping[str, float]], md: bool = False) -> str:
    out = []
    for key, r in rows.items():
        err = "n/a" if math.isnan(r["error_pct"]) else f"{r['error_pct']:+.0f} %"
        out.append([key, _fig(key, r["predicted"]), _fig(key, r["measured"]), err])
    return _table(["figure", "predicted", "measured", "error"], out, md)


def example_workload(conns: int) -> Workload:
    """The worked examples' assumed workload, per connection so 100k and 1M compare:
    each socket in 2 rooms of 40 members, each room gets a message every 10 s, a socket
    reconnects every 10 min on average and joins (then leaves) a fresh room every 5 min,
    the gateway's default ping interval, sockets placed at random by the load balancer."""
    rooms = conns * 2 // 40
    return Workload(
        conns=conns,
        gateways=1,
        nats_nodes=3,
        rooms=rooms,
        rooms_per_socket=2,
        publish_rate_per_s=rooms * 0.1,
        fanout=40,
        gateways_per_room=None,
        joins_per_s=conns / 300,
        connects_per_s=conns / 600,
    )


EXAMPLE_ASSUMPTIONS: Final = (
    "each socket in 2 rooms of 40 members (rooms = conns / 20); every room gets one message "
    "every 10 s (publish rate = rooms / 10, 40 deliveries each); a socket reconnects every "
    "10 min (connects/s = conns / 600) and joins a room it did not hold every 5 min "
    "(joins/s = conns / 300); sockets land on random gateways; the gateway's default ping "
    "interval"
)


def example(
    costs: UnitCosts,
    conns: int,
    md: bool,
    limits: PodLimits | None = None,
    curve: RateCurve | None = None,
) -> str:
    lim = limits or PodLimits()
    w = example_workload(conns)
    try:
        s = size(costs, w, lim, curve)
        linear = size(costs, w, lim) if curve else s
    except ValueError as e:
        return f"{conns:,} connections: not sized ({e})"
    p = s.prediction
    scaled = (
        [
            [
                "message costs scaled by the rate check (gateway / NATS)",
                f"{p['gateway_rate_scale']:.2f} / {p['nats_rate_scale']:.2f}",
            ],
            [
                "linear model, no rate check (upper bound)",
                f"{linear.gateways} gateways, {linear.nats_nodes} NATS nodes",
            ],
        ]
        if curve
        else []
    )
    lines = [
        (f"### {conns:,} connections" if md else f"== {conns:,} connections"),
        "",
        f"Workload: {conns:,} connections, {w.rooms:,} rooms, {w.publish_rate_per_s:,.0f} msg/s "
        f"× fanout {w.fanout:g} = {p['deliveries_per_s']:,.0f} deliveries/s, "
        f"{w.joins_per_s:,.0f} joins/s, {w.connects_per_s:,.0f} connects/s.",
        f"Limits: {lim.cpu_target:.0%} of {min(lim.gateway_cores, 1.0):g} core per gateway, "
        f"memory × {lim.memory_headroom:g} within {lim.gateway_memory_max_bytes / GIB:g} GiB, "
        f"≤ {lim.conns_cap:,} connections per pod (nofile {lim.nofile:,}), "
        f"{lim.spare_replicas} spare pod; NATS {lim.cpu_target:.0%} of {lim.nats_cores:g} cores.",
        "",
        _table(
            ["", "value"],
            [
                [
                    "gateway replicas (cpu / memory / conns need)",
                    f"{s.gateways} ({s.gateways_needed['cpu']} / {s.gateways_needed['memory']} / "
                    f"{s.gateways_needed['conns']}, + spare)",
                ],
                ["connections per gateway", _num(p["conns_per_gateway"])],
                ["gateways per room (random placement)", _num(p["gateways_per_room"])],
                ["gateway CPU (each)", _fig("c", p["gateway_cpu_cores"])],
                ["gateway RSS (each)", _fig("gateway_rss_bytes", p["gateway_rss_bytes"])],
                ["NATS nodes", str(s.nats_nodes)],
                ["NATS CPU (cluster)", _fig("c", p["nats_cpu_cores"])],
                ["NATS RSS (cluster)", _fig("nats_rss_bytes", p["nats_rss_bytes"])],
                ["publisher CPU (workers)", _fig("c", p["publisher_cpu_cores"])],
                *scaled,
            ],
            md,
        ),
        "",
        "sailcast-gateway values:",
        "```yaml" if md else "",
        *_yaml(s.gateway_values),
        "```" if md else "",
        "NATS chart values (deploy/nats-values.yaml):",
        "```yaml" if md else "",
        *_yaml(s.nats_values),
        "```" if md else "",
        *(f"Note: {n}" for n in s.notes),
    ]
    return "\n".join(x for x in lines if md or not x.startswith("```"))


def report(results: Mapping[str, Any], md: bool = False) -> str:
    """The unit costs, the validation and the worked examples for 100k and 1M."""
    costs = fit(results)

    def h(title: str) -> str:
        return f"## {title}" if md else f"# {title}"

    parts = [h("Unit costs"), "", costs_table(costs, md), ""]
    rows = validation(costs, results)
    if rows is not None:
        wl = results["validation"]["workload"]
        parts += [
            h("Validation (a configuration the fit did not use)"),
            "",
            "Workload: " + ", ".join(f"{k}={v}" for k, v in wl.items()),
            "",
            validation_table(rows, md),
            "",
        ]
    checks = rate_check(costs, results)
    if checks:
        parts += [
            h("Rate check (higher publish rates, not fitted)"),
            "",
            rate_check_table(checks, md),
            "",
        ]
    parts += [h("Worked examples"), "", f"Assumed: {EXAMPLE_ASSUMPTIONS}.", ""]
    curve = rate_curve(costs, results)
    for n in (100_000, 1_000_000):
        parts += [example(costs, n, md, curve=curve), ""]
    return "\n".join(parts).rstrip() + "\n"


def markdown(results: Mapping[str, Any]) -> str:
    """`report` as markdown, for docs/capacity.md's figure blocks."""
    return report(results, md=True)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.scale.model", description=__doc__)
    p.add_argument("results", type=Path, help="a bench/results/scale-*.json")
    p.add_argument("--markdown", action="store_true", help="markdown (for docs/capacity.md)")
    args = p.parse_args(argv)
    record = json.loads(args.results.read_text())
    results = record.get("results", record)  # a run's record, or its results alone
    sys.stdout.write(report(results, md=args.markdown))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
