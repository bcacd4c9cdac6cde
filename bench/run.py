"""Run the fan-out benchmark: ``python -m bench.run [--quick] [--systems a,b]``.

Starts the brokers, then for each system its server processes, the load generators
and a publisher process; runs S3 (idle memory), S1/S2 (fan-out), S4 (publisher) and
prints one table of figures with ratios to the floor and plain-aiohttp references of
the same run. ``--repeat N`` runs everything N times (systems interleaved) and prints
medians and min–max. Writes ``bench/results/<timestamp>.json`` and ``.png``
(``--quick`` writes under ``bench/results/tmp/``, which git ignores).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, TextIO

import orjson

from bench import report
from bench.brokers import BrokerError, Brokers, nats_server_binary
from bench.harness import run_files
from bench.loadgen import IMPLEMENTATIONS
from bench.procstat import raise_nofile_limit
from bench.rpc import REPO_ROOT, Worker, WorkerError, run, uvloop_available
from bench.scenarios import (
    FULL,
    QUICK,
    S1_PROBE,
    S1_ROOM,
    S2_PROBE,
    Bench,
    Quiet,
    ScenarioError,
    Sizes,
    fanout,
    idle_memory,
    publisher_throughput,
)
from bench.systems import FLOOR, REFERENCE, SECOND_REFERENCE, SYSTEMS, ServerProcessSystem
from bench.systems.base import SERVER_LOOPS, Deployment

SCENARIOS: tuple[str, ...] = ("S1", "S2", "S3", "S4")
TARGET_SYSTEM: str = "sailcast"
"""The system issue 17's targets are checked for (against the floor)."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="tiny sizes for a CI smoke test (< 60 s)")
    p.add_argument(
        "--systems",
        default=",".join(SYSTEMS),
        help=f"comma-separated, from {', '.join(SYSTEMS)} (default: all that are available)",
    )
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help="subset of S1,S2,S3,S4")
    p.add_argument("--clients", type=int, help="S1/S2 clients (default 2000, quick 100)")
    p.add_argument("--s3-conns", type=int, help="S3 idle connections (default 5000, quick 200)")
    p.add_argument("--server-procs", type=int, help="server processes per system (default 2)")
    p.add_argument("--loadgen-procs", type=int, help="load-generator processes (default 2)")
    p.add_argument(
        "--loadgen",
        choices=IMPLEMENTATIONS,
        help="client transport (default raw: cheapest per delivery)",
    )
    p.add_argument(
        "--server-loop",
        choices=SERVER_LOOPS,
        default="uvloop" if uvloop_available() else "asyncio",
        help="event loop of every Python server, Sailcast and references alike (default "
        "uvloop when installed, as the gateway picks it; the loop each process really ran "
        "on is read back and printed)",
    )
    p.add_argument(  # the old opt-in flag; uvloop is the default now
        "--server-uvloop",
        dest="server_loop",
        action="store_const",
        const="uvloop",
        help=argparse.SUPPRESS,
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run every system and scenario N times (interleaved) and report medians "
        "and min–max of values and of per-run ratios (default 1)",
    )
    p.add_argument("--s1-rates", type=_rates, help="S1 equal-load msg/s, e.g. 2,10,20")
    p.add_argument("--s2-rates", type=_rates, help="S2 equal-load msg/s, e.g. 500,2500,5000")
    p.add_argument("--out", type=Path, help="results directory (default bench/results)")
    p.add_argument("--no-chart", action="store_true", help="skip the PNG")
    p.add_argument("--strict", action="store_true", help="exit 1 if any system errored")
    return p.parse_args(argv)


def _rates(text: str) -> tuple[float, ...]:
    """``"2,10,20"`` -> ``(2.0, 10.0, 20.0)``."""
    try:
        rates = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of rates: {text!r}") from None
    if not rates or any(r <= 0 for r in rates):
        raise argparse.ArgumentTypeError(f"rates must be positive: {text!r}")
    return rates


def sizes_from(args: argparse.Namespace) -> Sizes:
    sizes = QUICK if args.quick else FULL
    overrides = {
        "s1_fixed_rates": args.s1_rates,
        "s2_fixed_rates": args.s2_rates,
        "clients": args.clients,
        "s3_conns": args.s3_conns,
        "server_procs": args.server_procs,
        "loadgen_procs": args.loadgen_procs,
        "loadgen_impl": args.loadgen,
    }
    return dataclasses.replace(sizes, **{k: v for k, v in overrides.items() if v is not None})


def progress(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def _version(pkg: str) -> str:
    try:
        return version(pkg)
    except PackageNotFoundError:
        return "-"


def _tool_version(argv: list[str]) -> str:
    if shutil.which(argv[0]) is None:
        return "-"
    with contextlib.suppress(Exception):
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    return "-"


def environment() -> dict[str, Any]:
    try:
        nats_server = nats_server_binary()
    except BrokerError:
        nats_server = "nats-server"
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "harness_loop": "uvloop" if uvloop_available() else "asyncio",
        "packages": {
            p: _version(p)
            for p in (
                "aiohttp",
                "python-socketio",
                "python-engineio",
                "nats-py",
                "orjson",
                "uvloop",
                "redis",
            )
        },
        "redis_server": _tool_version(["redis-server", "--version"]),
        "nats_server": _tool_version([nats_server, "--version"]),
        "node": _tool_version(["node", "--version"]),
    }


def record_loops(result: dict[str, Any], phase: str, deployment: Deployment) -> None:
    """Note the event loop each server process of ``phase`` ran on, as read back from it.

    ``server_loop`` is the one loop of every phase and process, or all of them joined
    with "+" if they differ (which the table flags).
    """
    loops = result.setdefault("server_loops", {})
    loops[phase] = list(deployment.loops)
    sources = result.setdefault("server_loop_sources", {})
    sources[phase] = list(deployment.loop_sources)
    seen = sorted({loop for per_phase in loops.values() for loop in per_phase})
    result["server_loop"] = "+".join(seen) if seen else "unknown"


async def bench_system(
    system: ServerProcessSystem,
    *,
    brokers: Brokers,
    loadgens: list[Worker],
    publisher: Worker,
    sizes: Sizes,
    scenarios: set[str],
    quiet: Quiet,
    log: TextIO,
) -> dict[str, Any]:
    """All selected scenarios for one system; a failing phase is recorded, not fatal.

    S3 and S1/S2 each get freshly started servers: 5,000 connections leave a heap
    behind that makes python-socketio's garbage collector (and so its S1 cost)
    measurably slower, which would charge S3's work to S1.
    """
    result: dict[str, Any] = {}

    async def phase(title: str, body: Callable[[Bench], Awaitable[None]]) -> None:
        progress(f"{system.name}: {title}")
        deployment = await system.start(brokers, processes=sizes.server_procs, log=log)
        result["info"] = deployment.info
        record_loops(result, title.split()[0], deployment)
        own = deployment.publisher.worker
        pub = await Worker.spawn_argv(own, name="publisher", log=log) if own else publisher
        bench = Bench(
            deployment=deployment,
            loadgens=loadgens,
            publisher=pub,
            broker_pids=brokers.pids,
            sizes=sizes,
            quiet=quiet,
            log=log,
        )
        try:
            await bench.publisher.call("open", spec=dataclasses.asdict(deployment.publisher))
            await body(bench)
        except (ScenarioError, WorkerError, TimeoutError, OSError) as exc:
            result.setdefault("error", f"{title}: {type(exc).__name__}: {exc}")
            progress(f"{system.name}: ERROR {result['error']}")
        finally:
            with contextlib.suppress(Exception):
                await bench.close_clients()
            with contextlib.suppress(WorkerError):
                await pub.call("close")
            if pub is not publisher:
                await pub.close()
            await system.stop()

    async def s3(bench: Bench) -> None:
        result["S3"] = await idle_memory(bench)

    async def s1_s2(bench: Bench) -> None:
        n = sizes.clients
        sids = await bench.connect(n)
        s2_rooms = [f"r{i}" for i in range(n // sizes.s2_room_size)]
        s2_clients = len(s2_rooms) * sizes.s2_room_size
        pairs: list[tuple[str, str]] = []
        if "S1" in scenarios:
            pairs += [(sid, S1_ROOM) for sid in sids]
        if "S2" in scenarios:
            # Neighbouring clients sit on different servers (round-robin), so each
            # room spans the server processes, as with random placement.
            pairs += [
                (sid, s2_rooms[i // sizes.s2_room_size]) for i, sid in enumerate(sids[:s2_clients])
            ]
        await bench.join(pairs)
        if "S1" in scenarios:
            await bench.barrier(S1_PROBE, [S1_ROOM], n)
        if "S2" in scenarios:
            await bench.barrier(S2_PROBE, s2_rooms, s2_clients)
        if "S1" in scenarios:
            progress(f"{system.name}: S1 one room x {n} clients")
            result["S1"] = await fanout(
                bench,
                rooms=[S1_ROOM],
                room_size=n,
                start_rate=sizes.s1_start_rate,
                latency_rate=sizes.s1_latency_rate,
                fixed_rates=sizes.s1_fixed_rates,
            )
        if "S2" in scenarios:
            progress(f"{system.name}: S2 {len(s2_rooms)} rooms x {sizes.s2_room_size} clients")
            result["S2"] = await fanout(
                bench,
                rooms=s2_rooms,
                room_size=sizes.s2_room_size,
                start_rate=sizes.s2_start_rate,
                latency_rate=sizes.s2_latency_rate,
                fixed_rates=sizes.s2_fixed_rates,
            )

    if "S3" in scenarios:
        await phase(f"S3 {sizes.s3_conns} idle connections", s3)
    if scenarios & {"S1", "S2"}:
        await phase(f"S1/S2 setup: {sizes.clients} clients", s1_s2)
    if "S4" in scenarios and not system.own_publisher:
        progress(f"{system.name}: S4 skipped (its publisher is another system's)")
    elif "S4" in scenarios:
        # No servers: python-socketio servers would otherwise process every publish
        # (one shared channel) and steal the publisher's CPU.
        progress(f"{system.name}: S4 publisher throughput")
        try:
            spec = await system.publisher_only(brokers, log=log)
            own = spec.worker
            pub = await Worker.spawn_argv(own, name="publisher", log=log) if own else publisher
            try:
                await pub.call("open", spec=dataclasses.asdict(spec))
                result["S4"] = await publisher_throughput(pub, sizes, quiet)
            finally:
                await pub.call("close")
                if pub is not publisher:
                    await pub.close()
        except (WorkerError, TimeoutError, OSError) as exc:
            result.setdefault("error", f"S4: {type(exc).__name__}: {exc}")
    return result


async def run_systems(
    names: list[str], args: argparse.Namespace, sizes: Sizes, scenarios: set[str], log: TextIO
) -> tuple[list[dict[str, dict[str, Any]]], dict[str, str]]:
    """Benchmark each system in turn, ``args.repeat`` times over, with one set of brokers
    and worker processes; one results dict per repeat.

    Repeats go round all systems before starting again, so a slow drift of the machine
    (other work starting or ending) touches every system alike.
    """
    runs: list[dict[str, dict[str, Any]]] = []
    labels: dict[str, str] = {}
    brokers = Brokers(log)
    quiet = Quiet(sizes)
    loadgens = [
        await Worker.spawn("bench.loadgen", name=f"loadgen{i}", log=log)
        for i in range(sizes.loadgen_procs)
    ]
    publisher = await Worker.spawn("bench.pubworker", name="publisher", log=log)
    try:
        for rep in range(args.repeat):
            results: dict[str, dict[str, Any]] = {}
            runs.append(results)
            if args.repeat > 1:
                progress(f"repeat {rep + 1} of {args.repeat}")
            for name in names:
                system = SYSTEMS[name](server_loop=args.server_loop)
                labels[name] = system.label
                if reason := system.unavailable_reason():
                    progress(f"{name}: skipped ({reason})")
                    results[name] = {"skipped": reason}
                    continue
                results[name] = await bench_system(
                    system,
                    brokers=brokers,
                    loadgens=loadgens,
                    publisher=publisher,
                    sizes=sizes,
                    scenarios=scenarios,
                    quiet=quiet,
                    log=log,
                )
    finally:
        for worker in [*loadgens, publisher]:
            await worker.close()
        await brokers.stop()
    return runs, labels


def _shown(path: Path) -> Path:
    return path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    sizes = sizes_from(args)
    scenarios = {s.strip().upper() for s in args.scenarios.split(",") if s.strip()}
    if bad := scenarios - set(SCENARIOS):
        raise SystemExit(f"unknown scenario(s): {sorted(bad)}")
    names = [s.strip() for s in args.systems.split(",") if s.strip()]
    if bad_names := [n for n in names if n not in SYSTEMS]:
        raise SystemExit(f"unknown system(s): {bad_names}; known: {list(SYSTEMS)}")
    stamp, out_dir, log_path = run_files("", quick=args.quick, out=args.out)
    nofile = raise_nofile_limit()
    progress(f"log: {_shown(log_path)} (RLIMIT_NOFILE {nofile})")

    if args.repeat < 1:
        raise SystemExit("--repeat must be at least 1")
    outcome: tuple[list[dict[str, dict[str, Any]]], dict[str, str]] = ([], {})

    async def entry() -> None:
        nonlocal outcome
        outcome = await run_systems(names, args, sizes, scenarios, log)

    with log_path.open("a", buffering=1) as log:
        run(entry)
    runs, labels = outcome

    figs = report.figures(
        sizes.s1_latency_rate,
        sizes.s2_latency_rate,
        sizes.p99_limit_ms,
        s1_rates=sizes.s1_fixed_rates,
        s2_rates=sizes.s2_fixed_rates,
    )
    shown_runs = [
        {n: r for n, r in res.items() if "skipped" not in r or n == REFERENCE} for res in runs
    ]
    shown = shown_runs[0] if shown_runs else {}
    refs = (REFERENCE, SECOND_REFERENCE, FLOOR)
    if len(shown_runs) > 1:
        text = report.median_tables(shown_runs, labels, figs, REFERENCE, args.server_loop,
                                    SECOND_REFERENCE, FLOOR)  # fmt: skip
    else:
        text = report.table(shown, labels, figs, REFERENCE, args.server_loop,
                            SECOND_REFERENCE, FLOOR)  # fmt: skip
    goals = report.targets(shown_runs, figs, TARGET_SYSTEM, FLOOR)
    if goals:
        runs_text = f"medians of {len(shown_runs)} runs" if len(shown_runs) > 1 else "one run"
        text += f"\n\nissue 17 targets, {TARGET_SYSTEM} against the floor ({runs_text}):\n"
        text += "\n".join(f"- {line}" for line in goals)
    elapsed = time.perf_counter() - started
    record = {
        "timestamp": stamp,
        "mode": "quick" if args.quick else "full",
        "elapsed_s": elapsed,
        "sizes": dataclasses.asdict(sizes),
        "reference": REFERENCE,
        "floor_reference": FLOOR,
        "repeat": args.repeat,
        "server_loop_requested": args.server_loop,
        "environment": environment(),
        "labels": labels,
        "second_reference": SECOND_REFERENCE,
        "ratios": report.ratios(shown, figs, REFERENCE),
        "ratios_to": {ref: report.ratios(shown, figs, ref) for ref in refs if ref in shown},
        "figures": {
            f.key: {
                "label": f.label,
                "higher_is_better": f.higher_is_better,
                "values": {n: f.get(r) for n, r in shown.items()},
            }
            for f in figs
        },
        "results": shown_runs[0] if shown_runs else {},
        "table": text,
        "targets": goals,
    }
    if len(shown_runs) > 1:
        # Every repeat in full, and per figure and system the median and min–max of
        # the values and of the per-run ratios to each reference.
        record["runs"] = runs
        present = [r for r in refs if all(r in res for res in shown_runs)]
        record["median"] = report.summary(shown_runs, figs, present)
    json_path = out_dir / f"{stamp}.json"
    json_path.write_bytes(orjson.dumps(record, option=orjson.OPT_INDENT_2))
    print(text)
    print(f"\nJSON: {_shown(json_path)}")
    if not args.no_chart:
        png_path = out_dir / f"{stamp}.png"
        chart_ref = FLOOR if FLOOR in shown else REFERENCE
        if why_not := report.chart(shown, labels, figs, chart_ref, png_path):
            print(f"chart skipped: {why_not}")
        else:
            print(f"chart: {_shown(png_path)}")
    print(f"elapsed: {elapsed:.0f} s")
    failed = [n for res in runs for n, r in res.items() if "error" in r]
    return 1 if args.strict and failed else 0


if __name__ == "__main__":
    sys.exit(main())
