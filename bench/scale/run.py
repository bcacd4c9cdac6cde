"""How far Sailcast scales (issue 14): ``python -m bench.scale`` (``make bench-scale``).

Sections, each its own module with ``add_arguments`` / ``run`` / ``table``:

1. **connections** — one gateway holding 5k/10k/19k idle websockets (19k: this
   machine's hard fd limit is 20,000 per process), and 50k on one "node" of 3 gateway
   processes: RSS and heartbeat CPU per connection, connect rate and p99, a broadcast
   to all.
2. **cluster** — a 3-node NATS cluster with 1–4 gateways: CPU per delivery of every
   process, route traffic, rooms on every gateway vs on one.
3. **churn** — joins/leaves of fresh rooms and connects a gateway and the cluster
   sustain; memory per held subscription.
4. **validation** — a mixed configuration the model was not fitted on, measured, then
   predicted by :mod:`bench.scale.model` from sections 1–3; the error is printed.

Prints the tables, the unit costs and the prediction error; writes
``bench/results/scale-<timestamp>.json`` and PNG charts (``--quick``: under
``bench/results/tmp/``). Loopback only; every process it starts is stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import subprocess
import time
from pathlib import Path
from types import ModuleType
from typing import Any, Final

from bench.harness import (
    environment,
    progress,
    run_files,
    until_interrupted,
    write_record,
)
from bench.procstat import raise_nofile_limit
from bench.rpc import REPO_ROOT, run
from bench.scale import churn, cluster, connections, validate
from bench.scale.charts import write_charts
from bench.scale.model import fit, rate_check, report, validation

SECTIONS: Final[dict[str, ModuleType]] = {
    "connections": connections,
    "cluster": cluster,
    "churn": churn,
    "validation": validate,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.scale",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="every section at ~1/20 of its size")
    p.add_argument(
        "--parts",
        default=",".join(SECTIONS),
        help=f"comma-separated sections to measure (default all: {','.join(SECTIONS)})",
    )
    p.add_argument("--out", type=Path, help="results directory")
    for module in SECTIONS.values():
        module.add_arguments(p)
    return p.parse_args(argv)


def commit() -> str:
    out = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        capture_output=True, text=True, check=False, cwd=REPO_ROOT,
    )  # fmt: skip
    return out.stdout.strip() or "unknown"


async def measure(args: argparse.Namespace, log: Any, record: dict[str, Any]) -> None:
    """Each section in order, on a machine left to it; a failed section is recorded and
    the rest still run (a 4-minute section should not cost the other three)."""
    wanted = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(wanted) - set(SECTIONS))
    if unknown:
        raise SystemExit(f"unknown --parts {unknown}; known: {list(SECTIONS)}")
    results: dict[str, Any] = record["results"]
    for name in wanted:
        progress(f"{name}: starting")
        started = time.perf_counter()
        try:
            results[name] = await SECTIONS[name].run(args, log)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            progress(f"{name}: failed: {type(exc).__name__}: {exc}")
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
        results[name]["elapsed_s"] = round(time.perf_counter() - started, 1)
        progress(f"{name}: done in {results[name]['elapsed_s']} s")


def model_section(results: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The unit costs fitted on sections 1–3 and the validation's prediction error, or why
    they could not be computed (a section missing or failed)."""
    missing = [
        s for s in ("connections", "cluster", "churn")
        if s not in results or "error" in results[s]
    ]  # fmt: skip
    if missing:
        reason = f"the model needs sections {missing} of this run"
        return {"skipped": reason}, f"Capacity model: skipped ({reason})."
    costs = fit(results)
    section: dict[str, Any] = {"unit_costs": costs.as_dict()}
    if "validation" in results and "error" not in results["validation"]:
        section["validation"] = validation(costs, results)
    section["rate_check"] = rate_check(costs, results)
    return section, report(results)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stamp, out_dir, log_path = run_files("scale", quick=args.quick, out=args.out)
    raise_nofile_limit()
    progress(f"log: {log_path.relative_to(REPO_ROOT)}")
    record: dict[str, Any] = {
        "timestamp": stamp,
        "mode": "quick" if args.quick else "full",
        "commit": commit(),
        "environment": {
            **environment(),
            "nofile": list(resource.getrlimit(resource.RLIMIT_NOFILE)),
        },
        "options": {k: v for k, v in vars(args).items() if k != "out"},
        "results": {},
    }

    async def entry() -> None:
        with log_path.open("a", buffering=1) as log:
            if await until_interrupted(lambda: measure(args, log, record)):
                record["interrupted"] = True

    started = time.perf_counter()
    run(entry)
    record["elapsed_s"] = round(time.perf_counter() - started, 1)
    results = record["results"]
    tables = [
        SECTIONS[name].table(section)
        for name, section in results.items()
        if "error" not in section
    ]  # fmt: skip
    record["model"], model_text = model_section(results)
    text = "\n\n".join([*tables, model_text])
    record["table"] = text
    print(text)
    write_record(out_dir, "scale", record)
    for chart in write_charts(results, out_dir / f"scale-{stamp}", record["model"]):
        print(f"chart: {chart.name}")
    failed = [name for name, section in results.items() if "error" in section]
    if failed:
        print(f"failed sections: {failed}")
    return 1 if failed or record.get("interrupted") else 0
