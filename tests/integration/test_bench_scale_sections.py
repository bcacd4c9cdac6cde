"""The scale bench's cluster, churn and validation sections (bench/scale/) measure what
they claim, on real processes at the smallest sizes: nothing lost, interest confined to
the gateways that have members, every join's subscription undone by its leave, and the
runner writes its record. No timing thresholds: the machine is shared.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import orjson
import pytest

from bench.scale import churn, cluster

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def args_of(module: ModuleType, *argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    module.add_arguments(parser)
    return parser.parse_args(["--quick", *argv])


async def test_a_room_on_one_gateway_costs_the_other_gateway_nothing(tmp_path: Path) -> None:
    args = args_of(cluster, "--cluster-gateways", "1,2", "--cluster-window-s", "2")
    with (tmp_path / "run.log").open("w") as log:
        section = await cluster.run(args, log)
    steps = {(s["gateways"], s["interested_gateways"]): s for s in section["steps"]}
    assert set(steps) == {(1, 1), (2, 2), (2, 1)}
    for step in steps.values():
        assert step["sent"] > 0
        assert step["lost"] == 0
        assert step["delivered"] == step["expected_deliveries"]
        assert step["unexpected_events"] == 0
    both, one = steps[(2, 2)], steps[(2, 1)]
    # every message reaches both gateways when both have members...
    assert both["gateway_room_messages_in"] == [both["sent"], both["sent"]]
    # ...and only gateway 1 (on node 1) when only it has: gateway 0 gets nothing
    assert one["interested"] == [1]
    assert one["uninterested_room_messages_in"] == 0
    assert one["uninterested_deliveries"] == 0
    assert one["gateway_room_messages_in"][1] == one["sent"]
    # the publisher is on node 0: the room traffic crosses the route to node 1 only
    flows = one["route_flows_msgs_per_s"]
    assert flows["nats0->nats1"] * one["window_s"] >= one["sent"]
    assert "gateway0" not in cluster.table(section).split("uninterested ")[0]


async def test_every_join_subscribes_and_every_leave_unsubscribes(tmp_path: Path) -> None:
    args = args_of(
        churn,
        "--churn-concurrency", "2", "--churn-join-seconds", "1", "--churn-connects", "60",
        "--churn-hold-rooms", "200", "--churn-hold-sockets", "4",
    )  # fmt: skip
    with (tmp_path / "run.log").open("w") as log:
        section = await churn.run(args, log)
    [step] = section["join_steps"]
    assert step["join_leaves"] > 0
    assert step["failed"] == 0
    assert step["probes_missing"] == 0  # each join was effective cluster-wide
    assert step["gateway_residual_subscriptions"] == 0
    assert step["nats_residual_subscriptions"] == [0, 0, 0]
    connect = section["connect"]
    assert connect["connects"] == 60
    assert connect["gateway_subscriptions_added"] == churn.SUBS_PER_CONNECT * 60
    hold = section["hold"]
    assert hold["gateway_subscriptions_added"] == 200
    assert all(n >= 200 for n in hold["nats_subscriptions_added"])  # every node learns it
    assert section["gateway_bytes_per_room"] == hold["gateway_bytes_per_room"]
    assert "Interest churn" in churn.table(section)


def test_the_runner_measures_the_validation_and_writes_its_record(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bench.scale", "--quick", "--parts", "validation",
         "--validate-window-s", "2", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    [path] = tmp_path.glob("scale-*.json")
    record = orjson.loads(path.read_bytes())
    section = record["results"]["validation"]
    assert section["lost"] == 0
    assert section["delivered"] == section["expected_deliveries"] > 0
    assert section["workload"]["gateways_per_room"] == 3
    assert all(v > 0 for v in section["measured"].values())
    # the model needs the other sections: it says so instead of fitting on nothing
    assert "needs sections" in record["model"]["skipped"]
    assert "Validation run" in out.stdout
