"""Delivery under forced disconnects: ``python -m bench.delivery [--quick] [--variants a,b]``.

N clients (half socket.io-client v4, half sails.io.js 1.2.1 with the gateway's
recovery add-on when it serves one) join K rooms through a round-robin TCP balancer in
front of the servers; a publisher sends numbered messages to every room at a steady
rate; every client's connection is force-closed every ~15 s (jittered) and stays
offline ~2 s, so reconnects land on any server. Each variant reports delivered %,
duplicates, out-of-order, sessions resumed and the time from reconnect to caught up.
Prints one table; writes ``bench/results/delivery-<timestamp>.json`` (``--quick``:
under ``bench/results/tmp/``). Loopback only; every process it starts is stopped.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from bench.delivery.driver import Options, run_variant
from bench.delivery.table import table
from bench.delivery.variants import VARIANTS
from bench.harness import (
    RESULTS_DIR,
    environment,
    progress,
    run_files,
    until_interrupted,
    write_record,
)
from bench.procstat import raise_nofile_limit
from bench.rpc import REPO_ROOT, run


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.delivery",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="100 clients, 15 s")
    p.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help=f"comma-separated, from {', '.join(VARIANTS)} (default: all that are available)",
    )
    p.add_argument("--clients", type=int, help="clients (default 1000, quick 100)")
    p.add_argument("--rooms", type=int, help="rooms (default 10, quick 4)")
    p.add_argument("--duration-s", type=float, help="publishing time (default 60, quick 15)")
    p.add_argument("--rate", type=float, default=2.0, help="messages per second per room")
    p.add_argument("--kill-every-s", type=float, default=15.0, help="forced close period")
    p.add_argument("--jitter", type=float, default=0.3, help="period jitter, as a fraction")
    p.add_argument("--offline-s", type=float, default=2.0, help="reconnect delay")
    p.add_argument("--grace-s", type=float, help="wait after publishing (default offline + 4)")
    p.add_argument("--out", type=Path, help="results directory")
    p.add_argument(
        "--keep-raw",
        action="store_true",
        help="keep what every client received and the publisher's send log (JSON, beside "
        "the log under bench/results/tmp/delivery-<timestamp>/)",
    )
    return p.parse_args(argv)


def options_from(args: argparse.Namespace, raw_dir: Path | None = None) -> Options:
    return Options(
        clients=args.clients or (100 if args.quick else 1000),
        rooms=args.rooms or (4 if args.quick else 10),
        duration_s=args.duration_s or (15.0 if args.quick else 60.0),
        rate_per_room=args.rate,
        kill_every_s=args.kill_every_s,
        jitter=args.jitter,
        offline_s=args.offline_s,
        grace_s=args.grace_s if args.grace_s is not None else args.offline_s + 4.0,
        raw_dir=raw_dir,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    if bad := [n for n in names if n not in VARIANTS]:
        raise SystemExit(f"unknown variant(s): {bad}; known: {list(VARIANTS)}")
    stamp, out_dir, log_path = run_files("delivery", quick=args.quick, out=args.out)
    raw_dir = RESULTS_DIR / "tmp" / f"delivery-{stamp}" if args.keep_raw else None
    opts = options_from(args, raw_dir)
    raise_nofile_limit()
    progress(f"log: {log_path.relative_to(REPO_ROOT)}; {opts}")
    results: dict[str, dict[str, Any]] = {}

    async def variants() -> None:
        with log_path.open("a", buffering=1) as log:
            for name in names:
                variant = VARIANTS[name]
                if reason := variant.unavailable_reason():
                    progress(f"{name}: skipped ({reason})")
                    results[name] = {"label": variant.label, "skipped": reason}
                    continue
                progress(f"{name}: {variant.label.strip()}")
                results[name] = await run_variant(variant, opts, log)

    async def entry() -> None:
        await until_interrupted(variants)

    started = time.perf_counter()
    run(entry)
    text = table(results)
    record = {
        "timestamp": stamp,
        "mode": "quick" if args.quick else "full",
        "elapsed_s": time.perf_counter() - started,
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(opts).items()},
        "environment": environment(),
        "results": results,
        "table": text,
    }
    print(text)
    write_record(out_dir, "delivery", record)
    return 1 if any("error" in r for r in results.values()) else 0
