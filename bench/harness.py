"""What every ``python -m bench.<name>`` run shares: where it writes, the machine it
records, and stopping every process it started on Ctrl-C or SIGTERM."""

from __future__ import annotations

import asyncio
import os
import platform
import signal
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, Final, NamedTuple

import orjson

from bench.rpc import REPO_ROOT

RESULTS_DIR: Final = REPO_ROOT / "bench" / "results"


class RunFiles(NamedTuple):
    """Where one bench run writes: its record in ``out_dir``, its processes' log."""

    stamp: str
    out_dir: Path
    log_path: Path


def run_files(name: str, *, quick: bool, out: Path | None) -> RunFiles:
    """The run's stamp and directories, made: results under bench/results/ (``--quick``:
    bench/results/tmp/, git-ignored, unless ``out``), the log always under tmp/."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    out_dir = out or (RESULTS_DIR / "tmp" if quick else RESULTS_DIR)
    out_dir.mkdir(parents=True, exist_ok=True)
    log_path = RESULTS_DIR / "tmp" / (f"{name}-{stamp}.log" if name else f"{stamp}.log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    return RunFiles(stamp, out_dir, log_path)


def progress(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def environment() -> dict[str, Any]:
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
    }


async def until_interrupted(work: Callable[[], Coroutine[Any, Any, None]]) -> bool:
    """Run ``work``; Ctrl-C or SIGTERM cancels it, so its ``finally`` blocks stop every
    process it started. Returns whether it was interrupted."""
    task = asyncio.ensure_future(work())
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        await task
    except asyncio.CancelledError:
        progress("interrupted: every process was stopped")
        return True
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    return False


def write_record(out_dir: Path, name: str, record: dict[str, Any]) -> Path:
    """``<out_dir>/<name>-<timestamp>.json``; prints where it went."""
    path = out_dir / f"{name}-{record['timestamp']}.json"
    path.write_bytes(orjson.dumps(record, option=orjson.OPT_INDENT_2))
    shown = path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path
    elapsed = f" ({record['elapsed_s']:.0f} s)" if "elapsed_s" in record else ""
    print(f"\nJSON: {shown}{elapsed}")
    return path
