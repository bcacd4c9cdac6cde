"""The capacity model (bench/scale/model.py): unit costs fitted from results made with
known costs come back, predictions add them up as docs/capacity.md says, the validation
error is (predicted - measured) / measured, and sizing stays within every limit and
names Helm keys the charts really have."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest

from bench.scale import model

ROOT = Path(__file__).resolve().parents[2]
MIB = 1 << 20

# the "true" costs the synthetic results are made from
GW_BASE = 0.004  # cores
PING_US = 20.0  # per connection per ping
PING_S = 25.0
GW_RSS_BASE = 50 * MIB
GW_PER_CONN = 12_000.0
MSG_IN_US = 80.0
DELIVERY_US = 9.0
NATS_BASE = 0.003  # cores per node
NATS_PUB_US = 30.0
NATS_OUT_US = 12.0
NATS_RSS_BASE = 16 * MIB
NATS_PER_CONN = 900.0


def connections() -> dict[str, Any]:
    steps = []
    for conns, procs in ((5000, 1), (10000, 1), (19000, 1), (50000, 3)):
        steps.append(
            {
                "conns": conns,
                "gateway_processes": procs,
                "gateway_rss_base_bytes": GW_RSS_BASE * procs,
                "gateway_rss_bytes": GW_RSS_BASE * procs + GW_PER_CONN * conns,
                "idle_cpu_cores": GW_BASE * procs + conns / PING_S * PING_US * 1e-6,
                "connect_cpu_us_per_connect": 400.0,
                "nats_rss_bytes": NATS_RSS_BASE + NATS_PER_CONN * conns,
            }
        )
    return {"ping_interval_s": PING_S, "steps": steps}


def cluster() -> dict[str, Any]:
    rate, fanout, idle_gw = 100.0, 40, 0.002
    steps = []
    for g, k in ((1, 1), (2, 2), (2, 1), (3, 3), (3, 1), (4, 4), (4, 1)):
        interested = rate * (k * MSG_IN_US + fanout * DELIVERY_US) * 1e-6 + k * idle_gw
        nats = 3 * NATS_BASE + rate * (NATS_PUB_US + k * NATS_OUT_US) * 1e-6
        steps.append(
            {
                "gateways": g,
                "interested_gateways": k,
                "publish_rate_per_s": rate,
                "fanout": fanout,
                "deliveries_per_s": rate * fanout,
                "gateway_cpu_cores": [interested / k] * k + [idle_gw] * (g - k),
                "gateway_cpu_us_per_delivery": interested / (rate * fanout) * 1e6,
                "uninterested_gateway_cpu_cores": idle_gw if k < g else None,
                "nats_cpu_cores": [nats / 3] * 3,
                "nats_idle_cpu_cores": [NATS_BASE] * 3,
                "publisher_cpu_cores": rate * 300e-6,
            }
        )
    over = 4 * rate  # the rate check: same layout as the first step, 4x the rate
    checked = {
        **steps[0],
        "interested": [0],
        "gateway_idle_cpu_cores": [idle_gw],
        "publish_rate_per_s": over,
        "deliveries_per_s": over * fanout,
        "gateway_cpu_cores": [over * (MSG_IN_US + fanout * DELIVERY_US) * 1e-6 / 2 + idle_gw],
        "nats_cpu_cores": [NATS_BASE + over * (NATS_PUB_US + NATS_OUT_US) * 1e-6 / 3] * 3,
    }
    return {"nats_nodes": 3, "steps": steps, "rate_steps": [checked]}


def churn() -> dict[str, Any]:
    return {
        "nats_nodes": 3,
        "gateway_cpu_us_per_join_leave": 500.0,
        "nats_cpu_us_per_join_leave": 1000.0,
        "gateway_cpu_us_per_connect": 450.0,
        "nats_cpu_us_per_connect": 200.0,
        "nats_bytes_per_subscription": 3 * 3000.0,
        "gateway_bytes_per_room": 600.0,
    }


def results() -> dict[str, Any]:
    return {"connections": connections(), "cluster": cluster(), "churn": churn()}


def test_fit_recovers_the_costs_the_results_were_made_from() -> None:
    c = model.fit(results())
    expected = {
        "gw_base_cores": GW_BASE,
        "gw_cpu_us_per_ping": PING_US,
        "gw_rss_base_bytes": GW_RSS_BASE,
        "gw_bytes_per_conn": GW_PER_CONN,
        "gw_cpu_us_per_message_in": MSG_IN_US,
        "gw_cpu_us_per_delivery": DELIVERY_US,
        "nats_base_cores": NATS_BASE,
        "nats_cpu_us_per_message_published": NATS_PUB_US,
        "nats_cpu_us_per_message_out": NATS_OUT_US,
        "nats_rss_base_bytes": NATS_RSS_BASE,
        "nats_bytes_per_conn": NATS_PER_CONN,
        "nats_bytes_per_subscription": 3000.0,  # the churn figure is a sum over 3 nodes
        "gw_cpu_us_per_join_leave": 500.0,
        "gw_cpu_us_per_connect": 450.0,
        "publisher_cpu_us_per_message": 300.0,
    }
    for key, value in expected.items():
        assert getattr(c, key) == pytest.approx(value, rel=1e-6), key
    assert all(c.sources[k] for k in expected)


def test_a_missing_section_leaves_its_costs_unmeasured_and_sizing_refuses() -> None:
    c = model.fit({"connections": connections()})
    assert math.isnan(c.gw_cpu_us_per_delivery)
    assert "not measured" in c.sources["gw_cpu_us_per_delivery"]
    with pytest.raises(ValueError, match="not measured"):
        model.size(c, model.example_workload(100_000))


def test_predict_adds_the_unit_costs() -> None:
    c = model.fit(results())
    w = model.Workload(
        conns=6000, gateways=3, nats_nodes=3, rooms=300, rooms_per_socket=1,
        publish_rate_per_s=100.0, fanout=20, gateways_per_room=3, ping_interval_s=PING_S,
    )  # fmt: skip
    p = model.predict(c, w)
    gw = GW_BASE + 1e-6 * (
        2000 / PING_S * PING_US + 100 * MSG_IN_US + 100 * 20 / 3 * DELIVERY_US
    )  # every message reaches all 3 gateways; a third of the deliveries on each
    assert p["gateway_cpu_cores"] == pytest.approx(gw)
    assert p["gateway_rss_bytes"] == pytest.approx(GW_RSS_BASE + 2000 * GW_PER_CONN + 300 * 600)
    nats = 3 * NATS_BASE + 1e-6 * (100 * NATS_PUB_US + 300 * NATS_OUT_US)
    assert p["nats_cpu_cores"] == pytest.approx(nats)
    assert p["nats_rss_bytes"] == pytest.approx(
        3 * (NATS_RSS_BASE + 6000 * NATS_PER_CONN + 900 * 3000.0)
    )


def test_random_placement_spreads_rooms_over_the_expected_gateways() -> None:
    w = model.Workload(
        conns=1000, gateways=4, nats_nodes=3, rooms=500, rooms_per_socket=1,
        publish_rate_per_s=1.0, fanout=2,
    )  # fmt: skip
    assert w.spread() == pytest.approx(4 * (1 - 0.75**2))  # 2 members per room
    assert model.Workload(**{**w.__dict__, "gateways_per_room": 9}).spread() == 4


def test_validation_error_is_relative_to_the_measurement() -> None:
    r = results()
    c = model.fit(r)
    workload = {"nats_nodes": 3, "gateways": 3, "conns": 6000, "rooms": 300,
                "rooms_per_socket": 1, "publish_rate_per_s": 100.0, "fanout": 20,
                "gateways_per_room": 3, "ping_interval_s": PING_S}  # fmt: skip
    predicted = model.predict(c, model.Workload.from_dict(workload))
    measured = {k: predicted[k] * 1.25 for k in model.MEASURED_KEYS}
    r["validation"] = {"workload": workload, "measured": measured}
    rows = model.validation(c, r)
    assert rows is not None
    for key in model.MEASURED_KEYS:
        assert rows[key]["error_pct"] == pytest.approx(-20.0), key


def schema_refuses(values: dict[str, Any], node: dict[str, Any], path: str = "") -> list[str]:
    """Keys of ``values`` the chart's values.schema.json does not have (its
    ``propertyNames`` patterns included): what `helm install` would reject."""
    bad: list[str] = []
    props = node.get("properties")
    names = node.get("propertyNames", {}).get("pattern")
    for key, value in values.items():
        where = f"{path}{key}"
        if props is not None and key in props:
            if isinstance(value, dict):
                bad += schema_refuses(value, props[key], where + ".")
        elif names is not None:
            if not re.match(names, key):
                bad.append(where)
        elif props is not None or node.get("additionalProperties") is False:
            bad.append(where)
    return bad


def paths(values: dict[str, Any], prefix: str = "") -> list[str]:
    out: list[str] = []
    for k, v in values.items():
        out += paths(v, f"{prefix}{k}.") if isinstance(v, dict) else [prefix + k]
    return out


@pytest.mark.parametrize("conns", [100_000, 1_000_000])
def test_sizing_is_within_every_limit_and_names_real_chart_keys(conns: int) -> None:
    c = model.fit(results())
    lim = model.PodLimits()
    s = model.size(c, model.example_workload(conns), lim)
    served = max(1, s.gateways - lim.spare_replicas)  # one pod lost: the rest hold it all
    worst = model.predict(c, model.Workload(**{**s.workload.__dict__, "gateways": served}))
    assert worst["gateway_cpu_cores"] <= lim.gateway_cores * lim.cpu_target
    assert worst["conns_per_gateway"] <= lim.conns_cap
    assert s.prediction["nats_cpu_cores"] <= s.nats_nodes * lim.nats_cores * lim.nats_cpu_target
    assert s.gateways >= lim.min_replicas
    schema = json.loads((ROOT / "deploy/helm/sailcast-gateway/values.schema.json").read_text())
    assert schema_refuses(s.gateway_values, schema) == []
    assert schema_refuses({"gateway": {"extraConfig": {"maxConnections": "1"}}}, schema)
    listed = (ROOT / "tests/deploy/data/nats-chart-2.14.2-values-keys.txt").read_text()
    known = {line.strip() for line in listed.splitlines() if not line.startswith("#")}
    for key in paths(s.nats_values):
        parts = key.split(".")
        free = any(".".join(parts[:i]) + ".*" in known for i in range(1, len(parts)))
        assert key in known or free, key  # `a.b.*`: a free-form map under a.b
    assert "SAILCAST_MAX_CONNECTIONS" in s.gateway_values["gateway"]["extraConfig"]


def test_report_renders_costs_validation_and_both_examples() -> None:
    r = results()
    text = model.report(r, md=True)
    assert "## Unit costs" in text
    assert "### 100,000 connections" in text
    assert "### 1,000,000 connections" in text
    assert "replicaCount:" in text


def test_the_rate_check_compares_higher_rates_with_the_linear_prediction() -> None:
    r = results()
    [row] = model.rate_check(model.fit(r), r)
    assert row["publish_rate_per_s"] == 400.0
    # the gateway was made to cost half the linear figure there, NATS exactly it
    linear = 400 * (MSG_IN_US + 40 * DELIVERY_US) * 1e-6
    assert row["gateway_ratio"] == pytest.approx((linear / 2 + 0.002) / (linear + 0.002))
    assert row["nats_ratio"] == pytest.approx(1.0)
    assert "Rate check" in model.report(r)


def test_the_rate_curve_interpolates_and_holds_the_last_ratio_beyond() -> None:
    curve = model.RateCurve(
        fitted_rate=100.0, gateway_points=((400.0, 0.7), (1000.0, 0.5)), nats_points=()
    )
    assert curve.gateway(50.0) == 1.0
    assert curve.gateway(250.0) == pytest.approx(0.85)
    assert curve.gateway(700.0) == pytest.approx(0.6)
    assert curve.gateway(5000.0) == 0.5
    assert curve.nats(5000.0) == 1.0  # nothing measured: linear


def test_a_curve_scales_only_the_message_terms() -> None:
    r = results()
    c = model.fit(r)
    w = model.Workload(
        conns=6000, gateways=1, nats_nodes=3, rooms=300, rooms_per_socket=1,
        publish_rate_per_s=1000.0, fanout=20, ping_interval_s=PING_S,
    )  # fmt: skip
    half = model.RateCurve(100.0, ((1000.0, 0.5),), ((1000.0, 0.25),))
    linear, scaled = model.predict(c, w), model.predict(c, w, half)
    messages = 1e-6 * 1000 * (MSG_IN_US + 20 * DELIVERY_US)
    assert linear["gateway_cpu_cores"] - scaled["gateway_cpu_cores"] == pytest.approx(messages / 2)
    nats = 1e-6 * 1000 * (NATS_PUB_US + NATS_OUT_US)
    assert linear["nats_cpu_cores"] - scaled["nats_cpu_cores"] == pytest.approx(nats * 0.75)
    assert scaled["gateway_rss_bytes"] == linear["gateway_rss_bytes"]
    curve = model.rate_curve(c, r)
    assert curve is not None
    assert curve.gateway(400.0) == pytest.approx(0.5)  # results(): half the linear figure
