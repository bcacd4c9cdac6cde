"""The connections benchmark (bench/scale/connections.py) measures what it claims.

The quick variant's smallest step runs through ``run()`` on real processes (a NATS
server, a gateway, a load-generator worker): every connection is made and gets the
broadcast, nothing is refused or dropped, and the figures are present and sane. No
timing thresholds: the machine is shared.
"""

from __future__ import annotations

import argparse
import math
import resource
from pathlib import Path

import pytest

from bench.scale import connections

pytestmark = pytest.mark.integration


def quick_args(*extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    connections.add_arguments(parser)
    return parser.parse_args(["--quick", *extra])


def test_quick_plan_and_defaults() -> None:
    quick = connections.plan_of(quick_args())
    assert quick.steps == [(500, 1), (1000, 1), (1500, 3)]
    assert quick.idle_s >= quick.ping_interval_s
    full = connections.plan_of(quick_args("--conn-steps", "5000,19000", "--conn-node", ""))
    assert full.steps == [(5000, 1), (19000, 1)]
    with pytest.raises(ValueError, match="ping interval"):
        connections.plan_of(quick_args("--conn-idle-s", "1"))


async def test_smallest_quick_step_is_complete(tmp_path: Path) -> None:
    args = quick_args("--conn-steps", "500", "--conn-node", "", "--conn-ping-interval-s", "2")
    with (tmp_path / "run.log").open("w") as log:  # children write to its descriptor
        section = await connections.run(args, log)
    assert section["nofile_hard"] == resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    assert section["ping_interval_s"] == 2.0
    [step] = section["steps"]
    for key in (
        "gateway_rss_base_bytes", "gateway_rss_bytes", "rss_bytes_per_conn", "idle_cpu_cores",
        "heartbeat_cpu_us_per_conn_per_s", "connect_rate_per_s", "connect_p50_ms",
        "connect_p99_ms", "connect_cpu_us_per_connect", "broadcast_last_ms", "broadcast_p50_ms",
        "broadcast_cpu_us_per_delivery", "nats_rss_bytes",
    ):  # fmt: skip
        assert 0 <= step[key] < math.inf, key  # NaN fails too
    assert step["conns"] == 500
    assert step["gateway_processes"] == 1
    assert step["connected"] == 500
    assert step["connect_failed"] == 0
    assert step["gateway_connections"] == 500  # the gateway's own count agrees
    assert step["broadcast_delivered"] == 500
    assert step["broadcast_missing"] == 0
    assert step["refusals"] == 0
    assert step["client_disconnects"] == 0
    assert step["gateway_rss_bytes"] > step["gateway_rss_base_bytes"] > 0
    assert step["rss_bytes_per_conn"] > 0
    assert step["idle_cpu_cores"] > 0  # 500 sockets were pinged in the window
    assert step["connect_p99_ms"] >= step["connect_p50_ms"] > 0
    assert step["broadcast_last_ms"] >= step["broadcast_p50_ms"] > 0
    assert step["nats_rss_bytes"] > 0
    text = connections.table(section)
    assert "500" in text
    assert "!" not in text
