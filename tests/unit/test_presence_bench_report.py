"""bench/presence: what the benchmark reads from the gateways' /metrics, the CPU it books
per query, and the tables it prints (skipped parts say why)."""

from __future__ import annotations

import math

import jwt

from bench.presence.cluster import metric_delta, parse_metrics, sum_family, token
from bench.presence.measure import Meter, Series
from bench.presence.table import churn_table, members_table

KEY = "k" * 32
METRICS = """# HELP sailcast_gateway_presence_events_total Presence announced
# TYPE sailcast_gateway_presence_events_total counter
sailcast_gateway_presence_events_total{kind="join"} 7.0
sailcast_gateway_presence_events_total{kind="state"} 3.0
sailcast_gateway_presence_events_created{kind="join"} 1.7e9
sailcast_gateway_presence_rooms 2.0
sailcast_gateway_connections 10.0
"""


def test_metrics_are_read_by_family_and_counters_give_their_growth() -> None:
    before = parse_metrics(METRICS)
    assert "sailcast_gateway_connections" not in before
    assert not any("_created" in k for k in before)
    assert sum_family(before, "sailcast_gateway_presence_events_total") == 10.0
    after = dict(before)
    after['sailcast_gateway_presence_events_total{kind="join"}'] = 12.0
    after["sailcast_gateway_presence_rooms"] = 1.0
    delta = metric_delta(before, after)
    assert delta['sailcast_gateway_presence_events_total{kind="join"}'] == 5.0
    assert delta['sailcast_gateway_presence_events_total{kind="state"}'] == 0.0
    assert delta["sailcast_gateway_presence_rooms"] == 1.0  # a gauge: its last value


def test_tokens_carry_the_user_and_info_the_gateway_reads() -> None:
    claims = jwt.decode(token(KEY, "u7", {"name": "x"}), KEY, algorithms=["HS256"])
    assert claims["sub"] == "u7"
    assert claims["info"] == {"name": "x"}
    assert claims["exp"] > 0


def test_cpu_is_booked_net_of_the_idle_rate_and_per_query() -> None:
    clock = iter([(10.0, 1.0, 5.0, 100.0)])
    meter = Meter(server_pids=[], broker_pids=[], idle_server_cores=0.5)
    meter.read = lambda: next(clock)  # type: ignore[method-assign]
    s = Series(system="sailcast-count", size=10, ms=[1.0, 2.0, 3.0, 4.0])
    s.charge(meter, (7.0, 0.5, 4.0, 98.0), caller_in_server=False)
    # 3 CPU-s over 2 s, 1 of them idle: 2 s for 4 queries
    assert s.server_cpu_s == 2.0
    assert s.summary()["server_cpu_ms_per_query"] == 500.0
    assert s.summary()["caller_cpu_ms_per_query"] == 250.0
    assert math.isnan(Series(system="x", size=1).summary()["p50_ms"])


def test_the_tables_say_what_was_skipped_and_show_every_series() -> None:
    skipped = {
        "sailcast_members": {"skipped": "no members"},
        "churn": {"skipped": "no --presence"},
    }
    assert "skipped (no members)" in members_table(skipped)
    assert "skipped (no --presence)" in churn_table(skipped)

    def series(system: str, p50: float) -> dict[str, object]:
        s = Series(system=system, size=1000, ms=[p50] * 3)
        return s.summary()

    results = {
        "sailcast_members": {
            "series": [series("sailcast-members", 8.0), series("sailcast-count", 4.0)]
        },
        "node_members": {"series": [series("node-fetchSockets", 40.0)]},
    }
    text = members_table(results)
    assert "1,000" in text
    assert "5.0x" in text  # Node's p50 over Sailcast members'
    assert "10.0x" in text  # …over Sailcast count's
